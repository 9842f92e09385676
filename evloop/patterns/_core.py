# evloop/patterns/_core.py
#
# The machinery every primitive shares: pending operations, the selectable
# API, ends, and the one coroutine that runs a send or a recv.
#
# An operation that cannot complete at once is an Op queued on a primitive.
# Each Op points at a Waiter, a private Future of one blocked task (one per
# send or recv, one shared by all the cases of a select()). An Op is
# *claimed* before it is completed; a Waiter has at most one winner, so the
# first primitive to claim any of a select's Ops wins and every other Op of
# that select is dead (skipped wherever it sits, and removed when the
# select returns: "dequeue me"). The seed's selectable API is exactly:
# `_send_now(op)` / `_recv_now(op)` (are you ready now? do it if so),
# `_enqueue(op)` (enqueue me without pausing) and `_dequeue(op)`.
#
# Completion is synchronous inside the primitive (the winner's Future is
# set at once; its task runs later from the run queue), so a handed-over
# item is never in two places. A cancelled wait is withdrawn synchronously
# too: the task runner calls Waiter._evloop_abandon() the moment the wait
# is cancelled, which kills the Waiter, so no item can be handed to a task
# that is about to see CancelledError. The one wait that cannot be withdrawn
# is a send whose item is already on its way to a remote receiver that must
# acknowledge it (strict rendezvous across processes): its cancellation
# waits, shielded, for the ack (the send happened; the cancellation is seen
# at the next await) or the nack (it did not; CancelledError now).
#
# Closing. Each primitive has a sending side and a receiving side; each ends
# once (`_send_end` / `_recv_end`, an _End holding the error or None):
#   * the sending side closes (close_send(exc), or the last sender end
#     closes): receivers get what is buffered, then EndOfChannel (exc None)
#     or ChannelFailed(exc);
#   * the receiving side closes (close_recv(exc), or the last receiver end
#     closes): buffered items are discarded (counted), blocked and later
#     sends raise BrokenChannelError or ChannelFailed(exc);
#   * close(exc) closes both: every waiter is released at once;
#   * the world stops (Loop.close()): every primitive of the loop first
#     stops new sends, hands what is buffered to receivers already waiting,
#     then closes with ChannelFailed(LoopClosedError); the tasks are then
#     cancelled and run to their end (evloop.tasks), so nothing waits
#     forever.
# Using an end after closing it raises ClosedChannelError.
from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Any
from weakref import WeakKeyDictionary, WeakSet

from ..errors import (
    BrokenChannelError,
    CancelledError,
    ChannelFailed,
    ClosedChannelError,
    DeadlineExceeded,
    EndOfChannel,
    LoopClosedError,
    WouldBlock,
)
from ..future import Future
from ..loop import Loop
from ..tasks import CancelScope, current_loop, fail_after

__all__ = ["Waiter", "Op", "Primitive", "SendEnd", "RecvEnd", "select"]


class Waiter(Future[Any]):
    """The private Future one blocked task waits on. Its result is
    (winning op, value)."""

    __slots__ = ("winner", "abandoned", "on_abandon")

    def __init__(self, loop: Loop):
        super().__init__(loop)
        self.winner: Op | None = None
        self.abandoned = False
        # Set while the winner is in transit to a remote peer: asks the peer
        # to give the item back if it has not been taken yet.
        self.on_abandon: Any = None

    def _evloop_abandon(self) -> None:
        if self.done():
            return
        if self.winner is not None:
            self.abandoned = True  # in transit: the outcome decides
            if self.on_abandon is not None:
                self.on_abandon()
        else:
            self.cancel()


class Op:
    """A pending send (value = the item) or recv. `src` is the send op a
    recv was matched with (for a receiver that acknowledges later);
    `origin` carries what a primitive attaches to an item (a Router's
    sender); `index` is the case number in a select()."""

    __slots__ = ("waiter", "value", "src", "origin", "index", "deferred")

    def __init__(self, waiter: Waiter, value: Any = None, origin: Any = None):
        self.waiter = waiter
        self.value = value
        self.src: Op | None = None
        self.origin = origin
        self.index = 0
        self.deferred = False  # a remote receiver that acks later


def claim(op: Op) -> bool:
    w = op.waiter
    if w.done():
        return False
    winner = w.winner
    if winner is not None and winner is not op:
        return False
    w.winner = op
    return True


def unclaim(op: Op) -> None:
    if op.waiter.winner is op and not op.waiter.done():
        op.waiter.winner = None


def complete(op: Op, value: Any = None) -> None:
    w = op.waiter
    if not w.done():
        w.winner = op
        w.set_result((op, value))


def fail(op: Op, exc: BaseException) -> None:
    w = op.waiter
    if not w.done():
        w.set_exception(exc)


def pop_live(q: deque[Op]) -> Op | None:
    """The first op in q that can still be claimed, claimed; dead ones are
    dropped on the way."""
    while q:
        op = q.popleft()
        if claim(op):
            return op
    return None


def live(q: deque[Op]) -> int:
    """Drop dead ops at the front; count the live ones."""
    while q and not _alive(q[0]):
        q.popleft()
    return sum(1 for op in q if _alive(op))


def _alive(op: Op) -> bool:
    w = op.waiter
    return not w.done() and (w.winner is None or w.winner is op)


def discard(q: deque[Op], op: Op) -> None:
    try:
        q.remove(op)
    except ValueError:
        pass


class _End:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException | None):
        self.exc = exc


# -- the world: every primitive of one loop ------------------------------------------


class _World:
    """Adopted by the Loop before its task runner, so Loop.close() stops the
    primitives (stop sends, drain to waiting receivers, close) before the
    tasks are cancelled."""

    def __init__(self, loop: Loop):
        self.loop = loop
        self.prims: WeakSet[Primitive] = WeakSet()
        loop.adopt(self)
        from ..tasks import _runners

        runner = _runners.get(loop)
        if runner is not None:
            # Move the runner after us in the loop's close order.
            loop.disown(runner)
            loop.adopt(runner)

    def abort(self) -> None:
        err = LoopClosedError("the loop closed")
        prims = list(self.prims)
        for p in prims:
            p._world_stop(err)


_worlds: WeakKeyDictionary[Loop, _World] = WeakKeyDictionary()


def _register(p: Primitive) -> None:
    w = _worlds.get(p.loop)
    if w is None:
        w = _worlds[p.loop] = _World(p.loop)
    w.prims.add(p)


# -- the base of every primitive ------------------------------------------------------


class Primitive:
    """What every primitive shares: its loop, its two sides' ends, the
    selectable API, attach()."""

    kind = "primitive"

    def __init__(self, *, loop: Loop | None = None, name: str | None = None):
        self.loop = loop if loop is not None else current_loop()
        if self.loop.closed:
            raise LoopClosedError("the loop is closed")
        self.name = name or type(self).__name__
        self._send_end: _End | None = None
        self._recv_end: _End | None = None
        self._senders = 0  # open sender ends (0 and never made: the primitive itself)
        self._receivers = 0
        self._made_senders = False
        self._made_receivers = False
        self.sent = 0
        self.received = 0
        self.discarded = 0
        _register(self)

    # -- the selectable API (overridden) ------------------------------------------

    def _send_now(self, op: Op) -> bool:
        raise TypeError(f"{self.name} cannot be sent to")

    def _recv_now(self, op: Op) -> bool:
        raise TypeError(f"{self.name} cannot be received from")

    def _enqueue_send(self, op: Op) -> None:
        raise TypeError(f"{self.name} cannot be sent to")

    def _enqueue_recv(self, op: Op) -> None:
        raise TypeError(f"{self.name} cannot be received from")

    def _dequeue(self, op: Op) -> None:
        pass

    # -- errors ---------------------------------------------------------------------

    def _recv_error(self) -> BaseException:
        end = self._send_end
        assert end is not None
        if end.exc is None:
            return EndOfChannel(f"{self.name}: every sender closed")
        return ChannelFailed(f"{self.name}: the sending side failed: {end.exc!r}", end.exc)

    def _send_error(self) -> BaseException:
        end = self._recv_end if self._recv_end is not None else self._send_end
        assert end is not None
        if end.exc is None:
            if self._recv_end is None:
                return ClosedChannelError(f"{self.name}: the sending side is closed")
            return BrokenChannelError(f"{self.name}: nobody receives any more")
        return ChannelFailed(f"{self.name}: closed with an error: {end.exc!r}", end.exc)

    def _check_send(self) -> None:
        if self._recv_end is not None or self._send_end is not None:
            raise self._send_error()

    # -- operations -------------------------------------------------------------------

    async def send(self, item: Any, timeout: float | None = None) -> None:
        """Send item, waiting as the primitive's rules say. `timeout=0`: only
        if it can be done at once, else WouldBlock; `timeout=t`:
        DeadlineExceeded after t loop seconds. Nothing is sent if it
        raises."""
        await run_op(self, True, item, timeout)

    async def recv(self, timeout: float | None = None) -> Any:
        """Receive the next item (the rules depend on the primitive).
        `timeout` as for send()."""
        return await run_op(self, False, None, timeout)

    def __aiter__(self) -> Any:
        return _Iter(self)

    def sender(self) -> SendEnd:
        """A sender end: its close() counts; the sending side closes when
        the last one does."""
        self._made_senders = True
        self._senders += 1
        return SendEnd(self)

    def receiver(self) -> RecvEnd:
        """A receiver end: its close() counts; the receiving side closes
        when the last one does."""
        self._made_receivers = True
        self._receivers += 1
        return RecvEnd(self)

    def _end_closed(self, end: Any, exc: BaseException | None) -> None:
        if isinstance(end, SendEnd):
            self._senders -= 1
            if self._senders <= 0 or exc is not None:
                self.close_send(exc)
        else:
            self._receivers -= 1
            if self._receivers <= 0 or exc is not None:
                self.close_recv(exc)

    # -- closing ---------------------------------------------------------------------------

    def close_send(self, exc: BaseException | None = None) -> None:
        """No more items: receivers get what is buffered, then EndOfChannel
        (or ChannelFailed(exc))."""
        if self._send_end is None:
            self._send_end = _End(exc)
            self._on_send_closed()

    def close_recv(self, exc: BaseException | None = None) -> None:
        """Nobody receives any more: buffered items are discarded, senders
        get BrokenChannelError (or ChannelFailed(exc))."""
        if self._recv_end is None:
            self._recv_end = _End(exc)
            self._on_recv_closed()

    def close(self, exc: BaseException | None = None) -> None:
        """Stop now (both sides): every waiter is released with an error."""
        self.close_recv(exc)
        self.close_send(exc)

    @property
    def closed(self) -> bool:
        return self._send_end is not None and self._recv_end is not None

    def _on_send_closed(self) -> None:
        pass

    def _on_recv_closed(self) -> None:
        pass

    def _world_stop(self, err: BaseException) -> None:
        # Stop new sends, hand what is buffered to receivers already
        # waiting (the subclass's _on_send_closed does), then close.
        self.close_send(err if self._send_end is None else None)
        self.close_recv(err)

    def attach(self, endpoint: Any, chan: int, **kwargs: Any) -> Any:
        """Put a participant in another process (or behind any FrameEndpoint)
        into this primitive, on channel `chan`; see evloop.patterns.remote."""
        from .remote import attach

        return attach(self, endpoint, chan, **kwargs)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{self.name} {state}>"


class _Iter:
    __slots__ = ("src",)

    def __init__(self, src: Any):
        self.src = src

    def __aiter__(self) -> _Iter:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.src.recv()
        except EndOfChannel:
            raise StopAsyncIteration from None


async def run_op(
    prim: Primitive,
    is_send: bool,
    value: Any,
    timeout: float | None,
    origin: Any = None,
) -> Any:
    """Run one send or recv on prim: at once if it is ready, else queued."""
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
    w = Waiter(prim.loop)
    op = Op(w, value, origin)
    if is_send:
        prim._check_send()
        done = prim._send_now(op)
    else:
        done = prim._recv_now(op)
    if not done:
        if timeout == 0:
            raise WouldBlock(f"{prim.name}: not ready now")
        if is_send:
            prim._enqueue_send(op)
        else:
            prim._enqueue_recv(op)
    return (await wait_ops(w, [(prim, op)], timeout))[1]


async def wait_ops(w: Waiter, ops: list[tuple[Primitive, Op]], timeout: float | None) -> Any:
    """Wait for w's winner; on cancellation or timeout withdraw every op
    (and wait out one in transit)."""
    if not w.done():
        try:
            if timeout is None:
                await w
            else:
                with fail_after(timeout):
                    await w
        except (CancelledError, DeadlineExceeded):
            if w.abandoned and not w.done():
                # In transit to a remote receiver: the ack or nack decides.
                with CancelScope(shield=True):
                    try:
                        await w
                    except CancelledError:
                        pass
                if w.done() and not w.cancelled() and w.exception() is None:
                    _drop(ops, w)
                    return w.result()
            _drop(ops, w)
            raise
        finally:
            if w.done():
                _drop(ops, w)
    return w.result()


def _drop(ops: Iterable[tuple[Primitive, Op]], w: Waiter) -> None:
    winner = w.winner
    for prim, op in ops:
        if op is not winner or w.cancelled():
            prim._dequeue(op)


# -- ends -----------------------------------------------------------------------------------


class SendEnd:
    """One sender of a primitive: send(), close(exc=None); `with end:`
    closes it (with the error, if the block raised)."""

    __slots__ = ("prim", "_closed", "__weakref__")

    def __init__(self, prim: Primitive):
        self.prim = prim
        self._closed = False

    @property
    def loop(self) -> Loop:
        return self.prim.loop

    async def send(self, item: Any, timeout: float | None = None) -> None:
        if self._closed:
            raise ClosedChannelError(f"this sender of {self.prim.name} is closed")
        await run_op(self.prim, True, item, timeout, origin=self)

    def _select_target(self, is_send: bool) -> Primitive:
        if not is_send:
            raise TypeError("a sender end cannot be received from")
        if self._closed:
            raise ClosedChannelError(f"this sender of {self.prim.name} is closed")
        return self.prim

    def close(self, exc: BaseException | None = None) -> None:
        if not self._closed:
            self._closed = True
            self.prim._end_closed(self, exc)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SendEnd:
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exc if isinstance(exc, Exception) else None)


class RecvEnd:
    """One receiver of a primitive: recv(), close(exc=None), `async for`;
    `with end:` closes it (with the error, if the block raised)."""

    __slots__ = ("prim", "_closed", "__weakref__")

    def __init__(self, prim: Primitive):
        self.prim = prim
        self._closed = False

    @property
    def loop(self) -> Loop:
        return self.prim.loop

    async def recv(self, timeout: float | None = None) -> Any:
        if self._closed:
            raise ClosedChannelError(f"this receiver of {self.prim.name} is closed")
        return await run_op(self.prim, False, None, timeout, origin=self)

    def _select_target(self, is_send: bool) -> Primitive:
        if is_send:
            raise TypeError("a receiver end cannot be sent to")
        if self._closed:
            raise ClosedChannelError(f"this receiver of {self.prim.name} is closed")
        return self.prim

    def __aiter__(self) -> _Iter:
        return _Iter(self)

    def close(self, exc: BaseException | None = None) -> None:
        if not self._closed:
            self._closed = True
            self.prim._end_closed(self, exc)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> RecvEnd:
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exc if isinstance(exc, Exception) else None)


# -- select -----------------------------------------------------------------------------------


async def select(*cases: Any, timeout: float | None = None) -> tuple[Any, Any]:
    """Wait on several primitives at once. A case is something to receive
    from (a primitive, a receiver end, a remote end) or a (target, item)
    pair to send. The first case that can complete does, and only it:
    returns (case, value) (value None for a send). `timeout=0` polls
    (WouldBlock), `timeout=t` raises DeadlineExceeded after t seconds. An
    error of the winning case (EndOfChannel, ...) is raised."""
    if not cases:
        raise ValueError("select() needs at least one case")
    loop: Loop | None = None
    w: Waiter | None = None
    queued: list[tuple[Primitive, Op]] = []
    try:
        for i, case in enumerate(cases):
            is_send = isinstance(case, tuple)
            target, value = case if is_send else (case, None)
            origin = target if isinstance(target, (SendEnd, RecvEnd)) else None
            getter = getattr(target, "_select_target", None)
            prim: Primitive = getter(is_send) if getter is not None else target
            if loop is None:
                loop = prim.loop
                w = Waiter(loop)
            assert w is not None
            op = Op(w, value, origin)
            op.index = i
            if is_send:
                prim._check_send()
                done = prim._send_now(op)
            else:
                done = prim._recv_now(op)
            if done or w.done() or w.winner is not None:
                break
            queued.append((prim, op))
        assert w is not None
        if not (w.done() or w.winner is not None):
            if timeout == 0:
                raise WouldBlock("no case of the select is ready")
            for prim, op in queued:
                if isinstance(cases[op.index], tuple):
                    prim._enqueue_send(op)
                else:
                    prim._enqueue_recv(op)
    except BaseException:
        if w is not None:
            w._evloop_abandon()
            _drop(queued, w)
        raise
    op_won, value = await wait_ops(w, queued, timeout)
    return cases[op_won.index], value
