# evloop/patterns/primitives.py
#
# vanilla's message-passing primitives on evloop tasks. Ways to send and
# receive, each a Primitive (see _core.py for ops, select and closing):
#
#   Pipe         rendezvous: no buffer, one sender end and one receiver end;
#                send waits for a recv (the seed's deadlock example).
#   Queue(n)     buffered, bounded: send waits only while n items wait.
#   Channel(n=0) any number of senders and receivers; each item to one
#                receiver; rendezvous (n=0) or buffered.
#   Dealer       one sender, many receivers: each item to the receiver that
#                has been ready longest (round-robin over those ready).
#   Router       many senders, one receiver: recv() -> (origin, item);
#                reply(origin, item) goes back to that sender, and a reply
#                to an origin that is gone raises Unroutable.
#   Broadcast    to every subscriber that is ready (waiting in recv) now;
#                the others miss the item, counted in their `missed`.
#   Tee          when every subscriber is ready, to all of them at once.
#   Gather       once every source has an item ready, recv() takes one from
#                each (a list, in the order the sources were made).
#   Value        always ready once set: a subscriber's recv() returns the
#                latest value it has not seen yet (updates are broadcast and
#                conflated: a slow subscriber skips to the newest).
#   State        always ready while set: recv() returns the current state
#                at once, every time; waits only while it is cleared.
#
# `evloop.Pipe` is the framed socket pipe; this module's Pipe is vanilla's
# rendezvous and is exported as `evloop.patterns.Pipe` (alias Rendezvous).
#
# Each primitive is in-process here; `attach(endpoint, chan)` (remote.py)
# puts a participant behind a FrameEndpoint into it with the same API.
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import (
    ChannelFailed,
    ClosedChannelError,
    EndOfChannel,
    Unroutable,
)
from ..loop import Loop
from ._core import (
    Op,
    Primitive,
    RecvEnd,
    SendEnd,
    claim,
    complete,
    discard,
    fail,
    live,
    pop_live,
    run_op,
    unclaim,
)

__all__ = [
    "ChannelStatistics",
    "BroadcastStatistics",
    "Channel",
    "Pipe",
    "Rendezvous",
    "Queue",
    "Dealer",
    "Router",
    "RouterSender",
    "Broadcast",
    "Tee",
    "Subscription",
    "Gather",
    "Source",
    "Value",
    "State",
    "UNSET",
]


@dataclass(frozen=True)
class ChannelStatistics:
    buffered: int
    receivers_waiting: int
    senders_waiting: int
    sent: int
    received: int
    discarded: int  # buffered items dropped when the receiving side closed


@dataclass(frozen=True)
class BroadcastStatistics:
    subscribers: int
    sent: int
    delivered: int  # summed over subscribers
    missed: int  # summed over subscribers: items that came while one was not ready


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


# -- the channel family -------------------------------------------------------------


class Channel(Primitive):
    """Any number of senders and receivers; each item goes to exactly one
    receiver, the one waiting longest. `size` 0 is a rendezvous (send waits
    for a recv), else up to `size` items wait in a buffer."""

    kind = "channel"

    def __init__(self, size: int = 0, *, loop: Loop | None = None, name: str | None = None):
        if type(size) is not int or size < 0:
            raise ValueError(f"size must be an int >= 0, got {size!r}")
        super().__init__(loop=loop, name=name)
        self.size = size
        self._buf: deque[tuple[Any, Any]] = deque()  # (item, origin)
        self._sendq: deque[Op] = deque()
        self._recvq: deque[Op] = deque()

    def _out(self, value: Any, origin: Any) -> Any:
        return value  # what recv() returns for an item (Router adds the origin)

    def _handoff(self, send: Op, recv: Op) -> None:
        # A remote receiver acks later; only a rendezvous makes its sender
        # wait for that (a buffered send is done once the item is accepted,
        # and a nacked item goes back to the front of the buffer).
        deferred = recv.deferred and self.size == 0
        recv.src = send if deferred else None
        self.sent += 1
        self.received += 1
        complete(recv, self._out(send.value, send.origin))
        if not deferred:
            complete(send, None)

    def _send_now(self, op: Op) -> bool:
        if not self._buf:
            r = pop_live(self._recvq)
            if r is not None:
                if not claim(op):
                    unclaim(r)
                    self._recvq.appendleft(r)
                    return True
                self._handoff(op, r)
                return True
        if len(self._buf) < self.size:
            if claim(op):
                self._buf.append((op.value, op.origin))
                self.sent += 1
                complete(op, None)
            return True
        return False

    def _recv_now(self, op: Op) -> bool:
        if self._buf:
            if not claim(op):
                return True
            value, origin = self._buf.popleft()
            op.src = None
            self.received += 1
            complete(op, self._out(value, origin))
            s = pop_live(self._sendq)  # room again: take a blocked sender's item
            if s is not None:
                self._buf.append((s.value, s.origin))
                self.sent += 1
                complete(s, None)
            return True
        s = pop_live(self._sendq)
        if s is not None:
            if not claim(op):
                unclaim(s)
                self._sendq.appendleft(s)
                return True
            self._handoff(s, op)
            return True
        if self._recv_end is not None or self._send_end is not None:
            raise self._recv_error_now()
        return False

    def _recv_error_now(self) -> BaseException:
        if self._send_end is not None:
            return self._recv_error()
        end = self._recv_end
        assert end is not None
        if end.exc is not None:
            return ChannelFailed(f"{self.name}: closed with an error: {end.exc!r}", end.exc)
        return EndOfChannel(f"{self.name}: the receiving side was closed")

    def _enqueue_send(self, op: Op) -> None:
        self._sendq.append(op)

    def _enqueue_recv(self, op: Op) -> None:
        self._recvq.append(op)

    def _dequeue(self, op: Op) -> None:
        discard(self._sendq, op)
        discard(self._recvq, op)

    def _unrecv(self, value: Any, origin: Any, send: Op | None) -> None:
        """A remote receiver refused an item (nack): it goes back first."""
        self.received -= 1
        if send is not None and not send.waiter.done():
            if send.waiter.abandoned:
                send.waiter.cancel()
                return
            # Offer it again, ahead of everything else.
            self.sent -= 1
            r = pop_live(self._recvq)
            if r is not None:
                self._handoff(send, r)
            else:
                self._sendq.appendleft(send)
            return
        if send is None:
            self._buf.appendleft((value, origin))
            r = pop_live(self._recvq)
            if r is not None:
                self._recv_into(r)

    def _recv_into(self, r: Op) -> None:
        value, origin = self._buf.popleft()
        r.src = None
        self.received += 1
        complete(r, self._out(value, origin))

    def _on_send_closed(self) -> None:
        err = ClosedChannelError(f"{self.name}: the sending side was closed")
        while self._sendq:
            fail(self._sendq.popleft(), err)
        if not self._buf:
            while self._recvq:
                fail(self._recvq.popleft(), self._recv_error())

    def _on_recv_closed(self) -> None:
        self.discarded += len(self._buf)
        self._buf.clear()
        err = self._send_error()
        while self._sendq:
            fail(self._sendq.popleft(), err)
        while self._recvq:
            fail(self._recvq.popleft(), self._recv_error_now())

    def statistics(self) -> ChannelStatistics:
        """Buffered items, receivers and senders waiting now (a remote
        receiver counts once per op it keeps queued), and totals."""
        return ChannelStatistics(
            buffered=len(self._buf),
            receivers_waiting=live(self._recvq),
            senders_waiting=live(self._sendq),
            sent=self.sent,
            received=self.received,
            discarded=self.discarded,
        )


class Pipe(Channel):
    """vanilla's Pipe: a rendezvous with exactly one sender end and one
    receiver end (sender()/receiver() each once); send waits for a recv.
    (Not evloop.Pipe, the framed socket pipe.)"""

    kind = "pipe"

    def __init__(self, *, loop: Loop | None = None, name: str | None = None):
        super().__init__(0, loop=loop, name=name)

    def sender(self) -> SendEnd:
        if self._made_senders:
            raise RuntimeError("a Pipe has exactly one sender end (use a Channel for more)")
        return super().sender()

    def receiver(self) -> RecvEnd:
        if self._made_receivers:
            raise RuntimeError("a Pipe has exactly one receiver end (use a Channel for more)")
        return super().receiver()


Rendezvous = Pipe


class Queue(Channel):
    """A bounded buffer of `size` >= 1 items: send waits only while it is
    full, recv while it is empty."""

    kind = "queue"

    def __init__(self, size: int, *, loop: Loop | None = None, name: str | None = None):
        if type(size) is not int or size < 1:
            raise ValueError(f"a Queue needs size >= 1, got {size!r} (Pipe is the rendezvous)")
        super().__init__(size, loop=loop, name=name)


class Dealer(Channel):
    """One sender, many receivers (receiver() ends, or attached remote
    ones): each item goes to the receiver ready longest, so items are dealt
    round-robin over those ready. Rendezvous: send waits for a ready
    receiver."""

    kind = "dealer"

    def __init__(self, *, loop: Loop | None = None, name: str | None = None):
        super().__init__(0, loop=loop, name=name)


class RouterSender(SendEnd):
    """A sender of a Router; `recv()` receives the replies routed to it."""

    __slots__ = ("replies",)

    def __init__(self, router: Router, reply_buffer: int):
        super().__init__(router)
        self.replies = Channel(reply_buffer, loop=router.loop, name=f"{router.name} replies")

    async def recv(self, timeout: float | None = None) -> Any:
        if self._closed:
            raise ClosedChannelError(f"this sender of {self.prim.name} is closed")
        return await self.replies.recv(timeout)

    def close(self, exc: BaseException | None = None) -> None:
        if not self._closed:
            self.replies.close(exc)
        super().close(exc)


class Router(Channel):
    """Many senders (sender() ends, or attached remote ones), one receiver:
    `recv()` returns (origin, item); `await reply(origin, item)` sends an
    answer back to that sender, which gets it with its own recv(). A reply
    to an origin that is closed or gone raises Unroutable, never drops."""

    kind = "router"

    def __init__(
        self,
        size: int = 0,
        *,
        reply_buffer: int = 1,
        loop: Loop | None = None,
        name: str | None = None,
    ):
        super().__init__(size, loop=loop, name=name)
        self.reply_buffer = reply_buffer
        self.unroutable = 0

    def _out(self, value: Any, origin: Any) -> Any:
        return (origin, value)

    def _end_closed(self, end: Any, exc: BaseException | None) -> None:
        # One sender failing is that sender's business: the others go on.
        if isinstance(end, SendEnd):
            self._senders -= 1
            if self._senders <= 0:
                self.close_send(None)
        else:
            super()._end_closed(end, exc)

    def sender(self) -> RouterSender:
        self._made_senders = True
        self._senders += 1
        return RouterSender(self, self.reply_buffer)

    async def send(self, item: Any, timeout: float | None = None) -> None:
        raise TypeError("send through a Router's sender() end, so replies can find their way back")

    async def reply(self, origin: Any, item: Any, timeout: float | None = None) -> None:
        """Route `item` to the sender `origin` (as returned by recv())."""
        target = getattr(origin, "replies", None)
        if getattr(origin, "prim", None) is not self or target is None:
            self.unroutable += 1
            raise Unroutable(f"{origin!r} is not a sender of {self.name}", origin=origin)
        if origin.closed or target.closed:
            self.unroutable += 1
            raise Unroutable(f"{origin!r} is gone: the reply cannot be delivered", origin=origin)
        try:
            await target.send(item, timeout)
        except (ChannelFailed, ClosedChannelError) as exc:
            self.unroutable += 1
            raise Unroutable(
                f"{origin!r} went away before it took the reply", origin=origin
            ) from exc
        except EndOfChannel as exc:  # pragma: no cover - replies are never send-closed alone
            raise Unroutable(f"{origin!r} is gone", origin=origin) from exc


# -- one to many: subscriptions ------------------------------------------------------------


class Subscription(Primitive):
    """A subscriber of a Broadcast, Tee, Value or State: recv(), close().
    `missed` counts the Broadcast items that came while it was not ready."""

    kind = "subscription"

    def __init__(self, parent: Primitive):
        super().__init__(loop=parent.loop, name=f"{parent.name} subscription")
        self.parent = parent
        self._recvq: deque[Op] = deque()
        self.missed = 0
        self.seen = 0  # Value: the version it has seen
        self._ended: BaseException | None = None

    def _ready_op(self) -> Op | None:
        q = self._recvq
        while q:
            op = q[0]
            w = op.waiter
            if w.done() or (w.winner is not None and w.winner is not op):
                q.popleft()
                continue
            return op
        return None

    def _recv_now(self, op: Op) -> bool:
        if self._recv_end is not None:
            raise ClosedChannelError(f"{self.name} is closed")
        return self.parent._sub_recv_now(self, op)  # type: ignore[attr-defined]

    def _enqueue_recv(self, op: Op) -> None:
        self._recvq.append(op)
        self.parent._sub_ready(self)  # type: ignore[attr-defined]

    def _dequeue(self, op: Op) -> None:
        discard(self._recvq, op)

    def _end_with(self, exc: BaseException) -> None:
        self._ended = exc
        while self._recvq:
            fail(self._recvq.popleft(), exc)

    def close(self, exc: BaseException | None = None) -> None:
        """Unsubscribe; with `exc`, a Tee's waiting send fails with it."""
        if self._recv_end is None:
            self._recv_end = self._send_end = _closed_end(exc)
            while self._recvq:
                fail(self._recvq.popleft(), ClosedChannelError(f"{self.name} is closed"))
            self.parent._unsubscribe(self, exc)  # type: ignore[attr-defined]

    close_recv = close

    def close_send(self, exc: BaseException | None = None) -> None:
        self.close(exc)

    def _world_stop(self, err: BaseException) -> None:
        self.close()


def _closed_end(exc: BaseException | None) -> Any:
    from ._core import _End

    return _End(exc)


class _OneToMany(Primitive):
    """Broadcast, Tee, Value and State: subscribers are Subscriptions."""

    def __init__(self, *, loop: Loop | None = None, name: str | None = None):
        super().__init__(loop=loop, name=name)
        self.subs: list[Subscription] = []
        # Called after every change (set, clear, close): remote subscribers.
        self._watchers: list[Callable[[], Any]] = []

    def _changed(self) -> None:
        for fn in list(self._watchers):
            fn()

    def subscribe(self) -> Subscription:
        """A new subscriber (close() it when done)."""
        if self._send_end is not None:
            raise self._recv_error()
        sub = Subscription(self)
        self.subs.append(sub)
        self._sub_added(sub)
        return sub

    def receiver(self) -> Any:
        return self.subscribe()

    def _sub_added(self, sub: Subscription) -> None:
        pass

    def _sub_recv_now(self, sub: Subscription, op: Op) -> bool:
        if sub._ended is not None:
            raise sub._ended
        if self._send_end is not None:
            raise self._recv_error()
        return False

    def _sub_ready(self, sub: Subscription) -> None:
        pass

    def _unsubscribe(self, sub: Subscription, exc: BaseException | None) -> None:
        try:
            self.subs.remove(sub)
        except ValueError:
            pass

    def _on_send_closed(self) -> None:
        err = self._recv_error()
        for sub in list(self.subs):
            if self._sub_drained(sub):
                sub._end_with(err)
        self._changed()

    def _sub_drained(self, sub: Subscription) -> bool:
        return True

    def _on_recv_closed(self) -> None:
        pass

    async def recv(self, timeout: float | None = None) -> Any:
        raise TypeError(f"receive from a subscription: {self.name}.subscribe().recv()")


class Broadcast(_OneToMany):
    """One sender, many subscribers: send() gives the item to every
    subscriber waiting in recv() at that moment and never waits; each other
    subscriber's `missed` grows by one (never a silent drop: it is counted).
    `delivered`/`missed` totals are in statistics()."""

    kind = "broadcast"

    def __init__(self, *, loop: Loop | None = None, name: str | None = None):
        super().__init__(loop=loop, name=name)
        self.missed = 0

    def _send_now(self, op: Op) -> bool:
        if not claim(op):
            return True
        delivered = 0
        for sub in list(self.subs):
            r = sub._ready_op()
            if r is not None and claim(r):
                sub._recvq.popleft()
                r.src = None
                complete(r, op.value)
                delivered += 1
            else:
                sub.missed += 1
                self.missed += 1
        self.sent += 1
        self.received += delivered
        complete(op, delivered)
        return True

    async def send(self, item: Any, timeout: float | None = None) -> int:  # type: ignore[override]
        """Deliver to every ready subscriber; returns how many got it."""
        return await run_op(self, True, item, timeout)  # type: ignore[no-any-return,unused-ignore]

    def statistics(self) -> BroadcastStatistics:
        return BroadcastStatistics(
            subscribers=len(self.subs), sent=self.sent, delivered=self.received, missed=self.missed
        )


class Tee(_OneToMany):
    """One sender, many subscribers in lock-step: send() waits until every
    subscriber is waiting in recv(), then gives the item to all of them at
    once. A subscriber that closes with an error fails the waiting send
    (ChannelFailed); one that closes in order just leaves."""

    kind = "tee"

    def __init__(self, *, loop: Loop | None = None, name: str | None = None):
        super().__init__(loop=loop, name=name)
        self._sendq: deque[Op] = deque()

    def _send_now(self, op: Op) -> bool:
        self._sendq.append(op)
        if self._try():
            return True
        self._sendq.remove(op)
        return False

    def _enqueue_send(self, op: Op) -> None:
        self._sendq.append(op)

    def _dequeue(self, op: Op) -> None:
        discard(self._sendq, op)

    def _sub_ready(self, sub: Subscription) -> None:
        self._try()

    def _try(self) -> bool:
        subs = self.subs
        while subs:
            send = pop_live(self._sendq)
            if send is None:
                return False
            ready: list[Op] = []
            for sub in subs:
                r = sub._ready_op()
                if r is None or not claim(r):
                    for got in ready:
                        unclaim(got)
                    unclaim(send)
                    self._sendq.appendleft(send)
                    return False
                ready.append(r)
            for sub, r in zip(list(subs), ready, strict=True):
                sub._recvq.popleft()
                r.src = None
                complete(r, send.value)
            self.sent += 1
            self.received += len(ready)
            complete(send, None)
            return True
        return False

    def _unsubscribe(self, sub: Subscription, exc: BaseException | None) -> None:
        super()._unsubscribe(sub, exc)
        if exc is not None:
            err = ChannelFailed(f"{self.name}: a subscriber failed: {exc!r}", exc)
            while self._sendq:
                fail(self._sendq.popleft(), err)
        else:
            self._try()

    def _on_send_closed(self) -> None:
        err = ClosedChannelError(f"{self.name}: the sending side was closed")
        while self._sendq:
            fail(self._sendq.popleft(), err)
        super()._on_send_closed()


class Value(_OneToMany):
    """Always ready once set. `set(v)` (or `await send(v)`, which never
    waits) replaces the value and wakes every subscriber; a subscriber's
    recv() returns the newest value it has not seen (a new subscriber gets
    the current one at once), so updates are broadcast and conflated.
    `get()` returns the current value (LookupError while unset)."""

    kind = "value"

    def __init__(self, initial: Any = UNSET, *, loop: Loop | None = None, name: str | None = None):
        super().__init__(loop=loop, name=name)
        self._value = initial
        self.version = 0 if initial is UNSET else 1

    def get(self) -> Any:
        if self._value is UNSET:
            raise LookupError(f"{self.name} is not set")
        return self._value

    def set(self, value: Any) -> None:
        self._check_send()
        self._value = value
        self.version += 1
        self.sent += 1
        for sub in list(self.subs):
            self._feed(sub)
        self._changed()

    def _send_now(self, op: Op) -> bool:
        if claim(op):
            self.set(op.value)
            complete(op, None)
        return True

    def _feed(self, sub: Subscription) -> None:
        if sub.seen >= self.version or self._value is UNSET:
            return
        r = sub._ready_op()
        if r is not None and claim(r):
            sub._recvq.popleft()
            sub.seen = self.version
            self.received += 1
            complete(r, self._value)

    def _sub_recv_now(self, sub: Subscription, op: Op) -> bool:
        if self._value is not UNSET and sub.seen < self.version:
            if claim(op):
                sub.seen = self.version
                self.received += 1
                complete(op, self._value)
            return True
        return super()._sub_recv_now(sub, op)

    def _sub_ready(self, sub: Subscription) -> None:
        self._feed(sub)

    def _sub_drained(self, sub: Subscription) -> bool:
        # A subscriber still gets the last value it has not seen, then the end.
        return sub.seen >= self.version or self._value is UNSET


class State(_OneToMany):
    """Always ready while set: recv() (on the State or a subscription)
    returns the current state at once, every time, and waits only while it
    is cleared (`clear()`). `set(v)` / `await send(v)` never wait."""

    kind = "state"

    def __init__(self, initial: Any = UNSET, *, loop: Loop | None = None, name: str | None = None):
        super().__init__(loop=loop, name=name)
        self._value = initial
        self._recvq: deque[Op] = deque()
        self.version = 0 if initial is UNSET else 1

    def get(self) -> Any:
        if self._value is UNSET:
            raise LookupError(f"{self.name} is cleared")
        return self._value

    def set(self, value: Any) -> None:
        self._check_send()
        self._value = value
        self.version += 1
        self.sent += 1
        while self._recvq:
            r = pop_live(self._recvq)
            if r is not None:
                self.received += 1
                complete(r, value)
        for sub in list(self.subs):
            while True:
                r = sub._ready_op()
                if r is None or not claim(r):
                    break
                sub._recvq.popleft()
                self.received += 1
                complete(r, value)
        self._changed()

    def clear(self) -> None:
        """Back to unset: readers wait until the next set()."""
        self._check_send()
        self._value = UNSET
        self.version += 1
        self._changed()

    def _send_now(self, op: Op) -> bool:
        if claim(op):
            self.set(op.value)
            complete(op, None)
        return True

    def _recv_now(self, op: Op) -> bool:
        if self._send_end is not None:
            raise self._recv_error()
        if self._value is not UNSET:
            if claim(op):
                self.received += 1
                complete(op, self._value)
            return True
        return False

    def _enqueue_recv(self, op: Op) -> None:
        self._recvq.append(op)

    def _dequeue(self, op: Op) -> None:
        discard(self._recvq, op)

    async def recv(self, timeout: float | None = None) -> Any:
        return await run_op(self, False, None, timeout)

    def _sub_recv_now(self, sub: Subscription, op: Op) -> bool:
        if self._send_end is None and self._value is not UNSET:
            if claim(op):
                self.received += 1
                complete(op, self._value)
            return True
        return super()._sub_recv_now(sub, op)

    def _on_send_closed(self) -> None:
        err = self._recv_error()
        while self._recvq:
            fail(self._recvq.popleft(), err)
        super()._on_send_closed()


# -- many to one: Gather ----------------------------------------------------------------------


class Source(Primitive):
    """One source of a Gather: send(item) waits until the Gather takes it;
    close() leaves the gather (close(exc) fails its receiver)."""

    kind = "source"

    def __init__(self, gather: Gather):
        super().__init__(loop=gather.loop, name=f"{gather.name} source")
        self.gather = gather
        self._sendq: deque[Op] = deque()

    def _check_send(self) -> None:
        if self._send_end is not None:
            raise ClosedChannelError(f"{self.name} is closed")
        self.gather._check_send()

    def _send_now(self, op: Op) -> bool:
        self._sendq.append(op)
        if self.gather._try():
            return True
        discard(self._sendq, op)
        return False

    def _enqueue_send(self, op: Op) -> None:
        self._sendq.append(op)
        self.gather._try()

    def _dequeue(self, op: Op) -> None:
        discard(self._sendq, op)

    def close(self, exc: BaseException | None = None) -> None:
        if self._send_end is None:
            self._send_end = self._recv_end = _closed_end(exc)
            err = ClosedChannelError(f"{self.name} is closed")
            while self._sendq:
                fail(self._sendq.popleft(), err)
            self.gather._source_closed(self, exc)

    close_send = close
    close_recv = close

    def _world_stop(self, err: BaseException) -> None:
        self.close()


class Gather(Primitive):
    """Many sources, one receiver: recv() waits until every open source has
    an item ready, takes one from each and returns them as a list (in the
    order the sources were made). A source that closes in order leaves;
    one that closes with an error fails the receiver (ChannelFailed); when
    every source has closed, recv() raises EndOfChannel."""

    kind = "gather"

    def __init__(self, *, loop: Loop | None = None, name: str | None = None):
        super().__init__(loop=loop, name=name)
        self.sources: list[Source] = []
        self._recvq: deque[Op] = deque()
        self._made = False

    def source(self) -> Source:
        self._check_send()
        self._made = True
        s = Source(self)
        self.sources.append(s)
        return s

    def sender(self) -> Any:
        return self.source()

    async def send(self, item: Any, timeout: float | None = None) -> None:
        raise TypeError("send through one of the Gather's source() ends")

    def _check_send(self) -> None:
        if self._recv_end is not None or self._send_end is not None:
            raise self._send_error()

    def _try(self) -> bool:
        if not self.sources:
            return False
        while True:
            r = pop_live(self._recvq)
            if r is None:
                return False
            ready: list[Op] = []
            for s in self.sources:
                op = pop_live(s._sendq)
                if op is None:
                    for src, got in zip(self.sources, ready, strict=False):
                        unclaim(got)
                        src._sendq.appendleft(got)
                    unclaim(r)
                    self._recvq.appendleft(r)
                    return False
                ready.append(op)
            self.received += 1
            self.sent += len(ready)
            complete(r, [op.value for op in ready])
            for op in ready:
                complete(op, None)
            return True

    def _recv_now(self, op: Op) -> bool:
        if self._recv_end is not None:
            raise self._recv_error_closed()
        self._recvq.append(op)
        if self._try():
            return True
        discard(self._recvq, op)
        if self._send_end is not None:
            raise self._recv_error()
        return False

    def _recv_error_closed(self) -> BaseException:
        end = self._recv_end
        assert end is not None
        if end.exc is not None:
            return ChannelFailed(f"{self.name}: closed with an error: {end.exc!r}", end.exc)
        return EndOfChannel(f"{self.name}: closed")

    def _enqueue_recv(self, op: Op) -> None:
        self._recvq.append(op)
        self._try()

    def _dequeue(self, op: Op) -> None:
        discard(self._recvq, op)

    def _source_closed(self, s: Source, exc: BaseException | None) -> None:
        try:
            self.sources.remove(s)
        except ValueError:
            return
        if exc is not None:
            self.close_send(exc)
        elif not self.sources and self._made:
            self.close_send(None)
        else:
            self._try()

    def _on_send_closed(self) -> None:
        err = self._recv_error()
        while self._recvq:
            fail(self._recvq.popleft(), err)
        for s in list(self.sources):
            s.close()

    def _on_recv_closed(self) -> None:
        err = self._send_error()
        for s in self.sources:
            while s._sendq:
                fail(s._sendq.popleft(), err)
        while self._recvq:
            fail(self._recvq.popleft(), self._recv_error_closed())
