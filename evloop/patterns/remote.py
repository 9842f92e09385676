# evloop/patterns/remote.py
#
# The same primitives across processes. One side owns the primitive and
# attach()es a participant that lives behind a FrameEndpoint (a Pipe to a
# spawned worker, a mempipe, any endpoint) on one channel; the other side
# holds a RemoteEnd on that channel, with the same send()/recv()/close()
# as a local end, usable in select(). Wire format and protocol: see
# docs/patterns.md; in short, every frame on the channel is a kind byte and
# a body:
#
#   H  hello    JSON {"v": 1, "kind": ..., "role": ..., "mode": ...}   owner -> remote end
#   C  credit   u32 n | u8 flags (1: strict)      receiving side -> sending side
#   I  item     u64 seq | payload (the codec's)   sending side -> receiving side
#   A  ack      u64 seq    strict: a recv took it
#   N  nack     u64 seq    strict: no recv was waiting any more; offer it again
#   E  end      sending side closed in order      F  failed: JSON error
#   B  broken   receiving side closed in order    K  killed: JSON error
#   U  unset    State.clear()
#   W  withdraw u64 seq    strict: the sender's send was cancelled; give it
#                          back (nack) unless a recv already took it (ack)
#
# Credit. A side sends items only against credit its peer granted, so
# nothing is ever buffered without bound and nothing is dropped by the
# wire. A receiving side in *strict* mode (window 0, the default) grants one
# credit per recv() actually waiting, never more than are waiting, and acks
# each item when a recv takes it: the sender's send() returns on the ack,
# which is the rendezvous (send returns only once a recv took the item). A
# recv cancelled after its credit went out cannot be taken back; the item
# it would have got is nacked and the sender offers it again (to the next
# credit, or another receiver of a Dealer): a credit is consumed exactly
# once, by an item, so both sides always agree how many are outstanding.
# In *window* mode (window N > 0) N credits are granted up front and
# replenished as items are received, without acks: a send returns once its
# item is on the wire, and at most N items wait at the receiving end (a
# remote receiver then behaves as a Queue(N) in front of its recv()).
#
# Stopping. E/F and B/K carry the five cases across: a failed sender's
# error reaches remote receivers as ChannelFailed(RemoteError), a closed
# receiving side makes remote sends fail with BrokenChannelError. If the
# endpoint closes before the peer said E or B (its process died), the
# remote participant is treated as failed (ConnectionError): a strict item
# in flight to it is not acknowledged and is offered to another receiver;
# a Router reply to it raises Unroutable.
#
# Payloads are bytes by default (codec "raw": bytes, bytearray and
# memoryview pass as they are, anything else is a TypeError); "json" and
# "pickle" are opt-in (never unpickle from a peer you do not trust).
from __future__ import annotations

import functools
import json
import pickle
import struct
from collections import deque
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from ..endpoint import ChannelMux, FrameEndpoint, Payload
from ..errors import (
    BrokenChannelError,
    ChannelFailed,
    ClosedChannelError,
    EndOfChannel,
    LinkProtocolError,
    RemoteError,
)
from ..loop import Loop
from ._core import (
    Op,
    Primitive,
    SendEnd,
    Waiter,
    claim,
    complete,
    discard,
    fail,
    pop_live,
    unclaim,
)
from .primitives import (
    UNSET,
    Channel,
    Gather,
    Router,
    Source,
    State,
    Tee,
    Value,
    _OneToMany,
)

__all__ = ["attach", "remote", "RemoteEnd", "Codec", "RAW", "JSON", "PICKLE"]

K_HELLO, K_CREDIT, K_ITEM, K_ACK, K_NACK = b"H"[0], b"C"[0], b"I"[0], b"A"[0], b"N"[0]
K_END, K_FAIL, K_BROKEN, K_KILLED, K_UNSET = b"E"[0], b"F"[0], b"B"[0], b"K"[0], b"U"[0]
K_WITHDRAW = b"W"[0]
_SEQ = struct.Struct(">Q")
_ITEM_HEAD = struct.Struct(">BQ").pack
_JOIN_BELOW = 4096
_CREDIT = struct.Struct(">IB")
_STRICT = 1


# -- codecs --------------------------------------------------------------------------


class Codec:
    """How items become frame payloads: encode(obj) -> bytes, decode(buf)."""

    name = "raw"

    def encode(self, obj: Any) -> bytes | bytearray | memoryview:
        if type(obj) is bytes or type(obj) is bytearray or type(obj) is memoryview:
            return obj  # type: ignore[no-any-return,unused-ignore]
        raise TypeError(
            f"items cross processes as bytes by default, not {type(obj).__name__}"
            " (pass codec='json' or codec='pickle' to attach()/remote())"
        )

    def decode(self, buf: Payload) -> Any:
        return bytes(buf)


class _Json(Codec):
    name = "json"

    def encode(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def decode(self, buf: Payload) -> Any:
        return json.loads(bytes(buf))


class _Pickle(Codec):
    name = "pickle"

    def encode(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, buf: Payload) -> Any:
        return pickle.loads(buf)  # noqa: S301 - opt-in, documented


RAW, JSON, PICKLE = Codec(), _Json(), _Pickle()
_CODECS = {"raw": RAW, "json": JSON, "pickle": PICKLE}


def _codec(c: str | Codec | None) -> Codec:
    if c is None:
        return RAW
    if isinstance(c, str):
        try:
            return _CODECS[c]
        except KeyError:
            raise ValueError(f"unknown codec {c!r}: raw, json, pickle or a Codec") from None
    return c


def _encode_error(exc: BaseException) -> bytes:
    from ..spawn import encode_error

    return encode_error(exc)


def _decode_error(body: Payload) -> RemoteError:
    from ..spawn import decode_error

    return decode_error(body)


# -- one endpoint, many links: the mux and the close fan-out ----------------------------


class _Attachment:
    """Per endpoint: the ChannelMux the links route on, and who wants to
    hear that the endpoint closed. The endpoint's own on_frame (if any)
    becomes the mux's default, its on_close is still called."""

    def __init__(self, endpoint: FrameEndpoint):
        self.endpoint = endpoint
        current = endpoint.on_frame
        mux = getattr(current, "__self__", None)
        if isinstance(mux, ChannelMux):
            self.mux = mux
        else:
            self.mux = ChannelMux(endpoint, default=current)
        self.closers: list[Callable[[BaseException | None], Any]] = []
        self.closed = False
        self._prev = endpoint.on_close
        endpoint.on_close = self._on_close

    def _on_close(self, exc: BaseException | None) -> None:
        self.closed = True
        for fn in list(self.closers):
            fn(exc)
        if self._prev is not None:
            self._prev(exc)


_attachments: WeakKeyDictionary[Any, _Attachment] = WeakKeyDictionary()


def _attachment(endpoint: FrameEndpoint) -> _Attachment:
    a = _attachments.get(endpoint)
    if a is None:
        a = _attachments[endpoint] = _Attachment(endpoint)
    return a


# -- the link: one channel, both directions -----------------------------------------------


class _Link:
    """The protocol on one channel of one endpoint. `owner` gets:
    on_credit(), on_ack(token), on_nack(token), on_broken(exc|None),
    on_item(seq, value), on_end(exc|None), on_hello(dict), on_unset(),
    on_gone(exc) (the endpoint closed)."""

    def __init__(self, endpoint: FrameEndpoint, chan: int, codec: Codec, owner: Any):
        if not 0 <= chan <= 0xFFFE:
            raise ValueError(f"channel {chan} is outside 0..65534 (65535 is evloop's)")
        self.endpoint = endpoint
        self.loop: Loop = endpoint.loop
        self.chan = chan
        self.codec = codec
        self.owner = owner
        # Out: items we send.
        self.credits = 0
        self.strict = False
        self.seq = 0
        self.unacked: dict[int, Any] = {}
        self.peer_broken: BaseException | None | bool = False  # B/K seen (exc or None)
        # In: items we receive.
        self.granted = 0  # credits outstanding at the peer
        self.peer_ended: BaseException | None | bool = False  # E/F seen
        self.gone = False
        self.att = _attachment(endpoint)
        self.att.mux.route(chan, self._on_frame)
        self.att.closers.append(self._on_gone)
        if self.att.closed or endpoint.closed:
            self.loop.call_soon(self._on_gone, None)

    def _write(self, *parts: Any) -> bool:
        if self.gone:
            return False
        try:
            self.endpoint.write_frame(self.chan, *parts)
        except (ConnectionError, OSError):
            return False
        return True

    def hello(self, info: dict[str, Any]) -> None:
        self._write(bytes((K_HELLO,)), json.dumps(info).encode())

    def grant(self, n: int, strict: bool) -> None:
        if n > 0 and self._write(bytes((K_CREDIT,)), _CREDIT.pack(n, _STRICT if strict else 0)):
            self.granted += n

    def send_item(self, value: Any, token: Any) -> int:
        return self.send_data(self.codec.encode(value), token)

    def send_data(self, data: Any, token: Any) -> int:
        self.seq += 1
        seq = self.seq
        self.credits -= 1
        if self.strict:
            self.unacked[seq] = token
        if len(data) < _JOIN_BELOW:
            # One small bytes object takes the Pipe's fast path; a large
            # payload goes as a part, never copied.
            self._write(_ITEM_HEAD(K_ITEM, seq) + data)
        else:
            self._write(_ITEM_HEAD(K_ITEM, seq), data)
        return seq

    def ack(self, seq: int) -> None:
        self._write(bytes((K_ACK,)), _SEQ.pack(seq))

    def nack(self, seq: int) -> None:
        self._write(bytes((K_NACK,)), _SEQ.pack(seq))

    def end(self, exc: BaseException | None) -> None:
        if exc is None:
            self._write(bytes((K_END,)))
        else:
            self._write(bytes((K_FAIL,)), _encode_error(exc))

    def broken(self, exc: BaseException | None) -> None:
        if exc is None:
            self._write(bytes((K_BROKEN,)))
        else:
            self._write(bytes((K_KILLED,)), _encode_error(exc))

    def unset(self) -> None:
        self._write(bytes((K_UNSET,)))

    def withdraw(self, seq: int) -> None:
        self._write(bytes((K_WITHDRAW,)), _SEQ.pack(seq))

    def detach(self) -> None:
        if not self.gone:
            self.gone = True
            self.att.mux.unroute(self.chan)
        try:
            self.att.closers.remove(self._on_gone)
        except ValueError:
            pass

    def _on_gone(self, exc: BaseException | None) -> None:
        if self.gone:
            return
        self.gone = True
        try:
            self.att.mux.unroute(self.chan)
        except Exception:  # pragma: no cover - the mux is gone with the endpoint
            pass
        self.owner.on_gone(
            exc if exc is not None else ConnectionError("the endpoint closed under the link")
        )

    def _on_frame(self, chan: int, payload: Payload) -> None:
        kind = payload[0]
        try:
            if kind == K_ITEM:
                (seq,) = _SEQ.unpack_from(payload, 1)
                if self.granted <= 0:
                    raise LinkProtocolError(f"item {seq} on channel {chan} without credit")
                self.granted -= 1
                self.owner.on_item(seq, self.codec.decode(payload[9:]))
            elif kind == K_CREDIT:
                n, flags = _CREDIT.unpack_from(payload, 1)
                self.credits += n
                self.strict = bool(flags & _STRICT)
                self.owner.on_credit()
            elif kind == K_ACK or kind == K_NACK:
                (seq,) = _SEQ.unpack_from(payload, 1)
                token = self.unacked.pop(seq, _MISSING)
                if token is _MISSING:
                    raise LinkProtocolError(
                        f"{'ack' if kind == K_ACK else 'nack'} for unknown {seq}"
                    )
                (self.owner.on_ack if kind == K_ACK else self.owner.on_nack)(token)
            elif kind == K_HELLO:
                self.owner.on_hello(json.loads(bytes(payload[1:])))
            elif kind == K_END or kind == K_FAIL:
                exc = None if kind == K_END else _decode_error(payload[1:])
                self.peer_ended = exc
                self.owner.on_end(exc)
            elif kind == K_BROKEN or kind == K_KILLED:
                exc = None if kind == K_BROKEN else _decode_error(payload[1:])
                self.peer_broken = exc
                self._nack_all()
                self.owner.on_broken(exc)
            elif kind == K_UNSET:
                self.owner.on_unset()
            elif kind == K_WITHDRAW:
                (seq,) = _SEQ.unpack_from(payload, 1)
                self.owner.on_withdraw(seq)
            else:
                raise LinkProtocolError(f"unknown pattern frame kind {kind:#x} on channel {chan}")
        except (struct.error, ValueError, TypeError, pickle.UnpicklingError) as exc:
            if isinstance(exc, LinkProtocolError):
                err: BaseException = exc
            else:
                err = LinkProtocolError(f"bad pattern frame on channel {chan}: {exc}")
                err.__cause__ = exc
            self.broken(err)
            self.end(err)
            self.detach()
            self.owner.on_gone(err)

    def _nack_all(self) -> None:
        # Strict items in flight to a receiver that went away were not taken.
        unacked, self.unacked = self.unacked, {}
        for token in unacked.values():
            self.owner.on_nack(token)


_MISSING = object()


def _gone_error(exc: BaseException) -> ChannelFailed:
    return ChannelFailed(f"the remote participant is gone: {exc!r}", exc)


# -- the owner's side: participants behind an endpoint ---------------------------------------------


class _Receiver:
    """A remote receiver of a Channel-family primitive (Pipe, Queue,
    Channel, Dealer, a Router origin's replies): it keeps one deferred recv
    op queued on the primitive while the peer has credit."""

    def __init__(self, prim: Channel, link: _Link, end_count: bool = True):
        self.prim = prim
        self.link = link
        self.op: Op | None = None
        self.closed = False
        self.end_count = end_count
        if end_count:
            prim._made_receivers = True
            prim._receivers += 1

    def _arm(self) -> None:
        link = self.link
        if self.closed or self.op is not None or link.credits <= 0:
            return
        w = Waiter(self.prim.loop)
        op = Op(w)
        op.deferred = link.strict
        self.op = op
        w.add_done_callback(self._taken)  # type: ignore[arg-type]
        try:
            done = self.prim._recv_now(op)
        except (EndOfChannel, ChannelFailed) as exc:
            self.op = None
            self._finish(exc)
            return
        if not done:
            self.prim._enqueue_recv(op)

    def _taken(self, w: Waiter) -> None:
        op = self.op
        self.op = None
        if w.cancelled() or op is None:
            return
        exc = w.exception()
        if exc is not None:
            self._finish(exc)
            return
        value = w.result()[1]
        src = op.src
        try:
            data = self.link.codec.encode(value)
        except Exception as err:
            # Not representable on the wire: the sender hears it (a
            # rendezvous send raises it); a buffered item is reported.
            if src is not None and not src.waiter.done():
                fail(src, err)
            else:
                self.prim.discarded += 1
                self.prim.loop.call_exception_handler(err, self._taken)
            self._arm()
            return
        self.link.send_data(data, (value, src))
        self._arm()

    def _finish(self, exc: BaseException) -> None:
        # The primitive ended for us: tell the peer.
        if isinstance(exc, EndOfChannel):
            self.link.end(None)
        elif isinstance(exc, ChannelFailed):
            self.link.end(exc.cause or exc)

    # link events
    def on_credit(self) -> None:
        self._arm()

    def on_ack(self, token: Any) -> None:
        value, src = token
        if src is not None:
            complete(src, None)

    def on_nack(self, token: Any) -> None:
        value, src = token
        self.prim._unrecv(value, getattr(src, "origin", None), src)

    def on_broken(self, exc: BaseException | None) -> None:
        self._leave(exc)

    def on_gone(self, exc: BaseException) -> None:
        self.link._nack_all()
        self._leave(exc)

    def on_item(self, seq: int, value: Any) -> None:
        raise LinkProtocolError("this participant only receives")

    def on_end(self, exc: BaseException | None) -> None:
        pass  # the peer will not send: it never did

    def on_hello(self, info: dict[str, Any]) -> None:
        raise LinkProtocolError("unexpected hello from a remote end")

    def on_unset(self) -> None:
        raise LinkProtocolError("unexpected unset")

    def on_withdraw(self, seq: int) -> None:
        raise LinkProtocolError("unexpected withdraw")

    def _leave(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.op is not None:
            op, self.op = self.op, None
            op.waiter.cancel()
            self.prim._dequeue(op)
        if self.end_count:
            self.prim._receivers -= 1
            if self.prim._receivers <= 0:
                self.prim.close_recv(None if exc is None else exc)


class _Sender:
    """A remote sender into a primitive: every item the peer sends becomes a
    send op on `target` (the primitive, a Gather Source); strict links ack
    it when the primitive takes it."""

    def __init__(self, target: Primitive, link: _Link, window: int, origin: Any = None):
        self.target = target
        self.link = link
        self.window = window
        self.origin = origin
        self.ops: dict[int, Op] = {}  # strict: items not yet taken, by seq
        self.closed = False
        link.grant(window or 1, strict=window == 0)

    def on_withdraw(self, seq: int) -> None:
        op = self.ops.pop(seq, None)
        if op is not None and not op.waiter.done() and op.waiter.winner is None:
            op.waiter.cancel()  # not taken: it never happened
            self.target._dequeue(op)
            self.link.nack(seq)
            self.link.grant(1, strict=self.window == 0)
        # else taken already: its ack is on the way

    def on_item(self, seq: int, value: Any) -> None:
        t = self.target
        w = Waiter(t.loop)
        op = Op(w, value, self.origin)
        if self.window == 0:
            self.ops[seq] = op
        w.add_done_callback(functools.partial(self._done, seq=seq))
        try:
            t._check_send()
            if not t._send_now(op):
                t._enqueue_send(op)
        except (BrokenChannelError, ChannelFailed, ClosedChannelError) as exc:
            fail(op, exc)

    def _done(self, w: Waiter, *, seq: int) -> None:
        self.ops.pop(seq, None)
        if w.cancelled():
            return
        exc = w.exception()
        if exc is not None:
            # The primitive no longer takes items: the peer's sends stop.
            if not self.closed:
                self.closed = True
                cause = exc.cause if isinstance(exc, ChannelFailed) else None
                self.link.broken(cause)
            return
        if self.window == 0:
            self.link.ack(seq)
        self.link.grant(1, strict=self.window == 0)

    def on_end(self, exc: BaseException | None) -> None:
        self._stop(exc)

    def on_gone(self, exc: BaseException) -> None:
        self._stop(exc)

    def _stop(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        end = self.origin
        if isinstance(end, SendEnd):
            end.close(exc)
        elif isinstance(self.target, Source):
            self.target.close(exc)
        else:
            self.target._end_closed(_SenderMark, exc)

    def on_credit(self) -> None:
        pass

    def on_ack(self, token: Any) -> None:
        raise LinkProtocolError("unexpected ack")

    on_nack = on_ack

    def on_broken(self, exc: BaseException | None) -> None:
        pass

    def on_hello(self, info: dict[str, Any]) -> None:
        raise LinkProtocolError("unexpected hello from a remote end")

    def on_unset(self) -> None:
        raise LinkProtocolError("unexpected unset")


class _SenderMarkType(SendEnd):
    __slots__ = ()

    def __init__(self) -> None:
        pass


_SenderMark: Any = object.__new__(_SenderMarkType)


class _Both:
    """Routes link events to a sender half and a receiver half (a Router
    origin: requests in, replies out)."""

    def __init__(self) -> None:
        self.rx: Any = None
        self.tx: Any = None

    def on_withdraw(self, seq: int) -> None:
        self.rx.on_withdraw(seq)

    def on_item(self, seq: int, value: Any) -> None:
        self.rx.on_item(seq, value)

    def on_end(self, exc: BaseException | None) -> None:
        self.rx.on_end(exc)

    def on_credit(self) -> None:
        self.tx.on_credit()

    def on_ack(self, token: Any) -> None:
        self.tx.on_ack(token)

    def on_nack(self, token: Any) -> None:
        self.tx.on_nack(token)

    def on_broken(self, exc: BaseException | None) -> None:
        self.tx.on_broken(exc)

    def on_gone(self, exc: BaseException) -> None:
        self.rx.on_gone(exc)
        self.tx.on_gone(exc)

    def on_hello(self, info: dict[str, Any]) -> None:
        raise LinkProtocolError("unexpected hello from a remote end")

    def on_unset(self) -> None:
        raise LinkProtocolError("unexpected unset")


class _Null:
    """The unused direction of a one-way participant."""

    def on_credit(self) -> None:
        pass

    def on_ack(self, token: Any) -> None:
        raise LinkProtocolError("unexpected ack")

    on_nack = on_ack

    def on_broken(self, exc: BaseException | None) -> None:
        pass

    def on_gone(self, exc: BaseException) -> None:
        pass


class _RemoteOrigin(SendEnd):
    """A Router sender in another process: what recv() gives as origin."""

    __slots__ = ("replies", "link")

    def __init__(self, router: Router, link: _Link):
        super().__init__(router)
        router._made_senders = True
        router._senders += 1
        self.replies = Channel(router.reply_buffer, loop=router.loop, name=f"{router.name} replies")
        self.link = link

    def close(self, exc: BaseException | None = None) -> None:
        if not self._closed:
            self.replies.close(exc)
        super().close(exc)

    def __repr__(self) -> str:
        return f"<remote sender of {self.prim.name} on channel {self.link.chan}>"


class _Subscriber:
    """A remote subscriber of a Broadcast or Tee: one recv op queued on its
    Subscription while the peer has credit (that is what "ready" means)."""

    def __init__(self, parent: _OneToMany, link: _Link):
        self.parent = parent
        self.sub = parent.subscribe()
        self.link = link
        self.op: Op | None = None

    def _arm(self) -> None:
        if self.op is not None or self.link.credits <= 0 or self.sub.closed:
            return
        w = Waiter(self.parent.loop)
        op = Op(w)
        self.op = op
        w.add_done_callback(self._taken)  # type: ignore[arg-type]
        try:
            if not self.sub._recv_now(op):
                self.sub._enqueue_recv(op)
        except (EndOfChannel, ChannelFailed, ClosedChannelError) as exc:
            self.op = None
            self._finish(exc)

    def _taken(self, w: Waiter) -> None:
        self.op = None
        if w.cancelled():
            return
        exc = w.exception()
        if exc is not None:
            self._finish(exc)
            return
        self.link.send_item(w.result()[1], None)
        self._arm()

    def _finish(self, exc: BaseException) -> None:
        if isinstance(exc, EndOfChannel):
            self.link.end(None)
        elif isinstance(exc, ChannelFailed):
            self.link.end(exc.cause or exc)

    def on_credit(self) -> None:
        self._arm()

    def on_ack(self, token: Any) -> None:
        pass

    def on_nack(self, token: Any) -> None:
        self.sub.missed += 1  # its recv was cancelled: it missed this one

    def on_broken(self, exc: BaseException | None) -> None:
        self._leave(exc)

    def on_gone(self, exc: BaseException) -> None:
        self._leave(exc if isinstance(self.parent, Tee) else None)

    def _leave(self, exc: BaseException | None) -> None:
        if self.op is not None:
            op, self.op = self.op, None
            op.waiter.cancel()
            self.sub._dequeue(op)
        self.sub.close(exc)

    def on_item(self, seq: int, value: Any) -> None:
        raise LinkProtocolError("a subscriber only receives")

    def on_end(self, exc: BaseException | None) -> None:
        pass

    def on_hello(self, info: dict[str, Any]) -> None:
        raise LinkProtocolError("unexpected hello from a remote end")

    def on_unset(self) -> None:
        raise LinkProtocolError("unexpected unset")

    def on_withdraw(self, seq: int) -> None:
        raise LinkProtocolError("unexpected withdraw")


class _Watcher(_Subscriber):
    """A remote subscriber of a Value or State: pushes the newest version
    whenever the peer has credit (its end re-grants after every item)."""

    def __init__(self, parent: _OneToMany, link: _Link):
        self.parent = parent
        self.sub = parent.subscribe()
        self.link = link
        self.op = None
        self.sent = 0
        self.done = False
        parent._watchers.append(self._push)
        self._push()

    def _push(self) -> None:
        p = self.parent
        link = self.link
        if self.done:
            return
        version = p.version  # type: ignore[attr-defined]
        if version > self.sent and link.credits > 0:
            self.sent = version
            value = p._value  # type: ignore[attr-defined]
            if value is UNSET:
                link.unset()
            else:
                try:
                    link.send_item(value, None)
                except Exception as exc:
                    p.loop.call_exception_handler(exc, self._push)
        end = p._send_end
        if end is not None and (version <= self.sent or p._value is UNSET):  # type: ignore[attr-defined]
            self.done = True
            link.end(end.exc)

    def _arm(self) -> None:
        self._push()

    def on_nack(self, token: Any) -> None:
        pass

    def _leave(self, exc: BaseException | None) -> None:
        try:
            self.parent._watchers.remove(self._push)
        except ValueError:
            pass
        self.sub.close(exc)


def attach(
    prim: Primitive,
    endpoint: FrameEndpoint,
    chan: int,
    *,
    role: str | None = None,
    window: int = 0,
    codec: str | Codec | None = None,
) -> Any:
    """Make the participant behind `endpoint` on channel `chan` a member of
    `prim`. `role` is "receiver" (it receives from prim) or "sender" (it
    sends into prim); Dealer, Broadcast, Tee, Value and State default to
    receiver, Router and Gather to sender, the others need it. `window`
    applies when this side receives (0: strict rendezvous with acks; N:
    N items in flight). Returns the participant (for a Router, the origin
    recv() will name)."""
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if role is None:
        if prim.kind in ("dealer", "broadcast", "tee", "value", "state"):
            role = "receiver"
        elif prim.kind in ("router", "gather"):
            role = "sender"
        else:
            raise ValueError(f"attach() to a {prim.kind} needs role='receiver' or 'sender'")
    if role not in ("receiver", "sender"):
        raise ValueError(f"role must be 'receiver' or 'sender', got {role!r}")
    cdc = _codec(codec)
    if isinstance(prim, (Value, State)):
        if role != "receiver":
            raise ValueError(f"a remote participant of a {prim.kind} can only receive")
        holder = _Both()
        link = _Link(endpoint, chan, cdc, holder)
        link.hello({"v": 1, "kind": prim.kind, "role": "receiver", "mode": prim.kind})
        w = _Watcher(prim, link)
        holder.tx = w
        holder.rx = w
        return w
    if isinstance(prim, _OneToMany):
        if role != "receiver":
            raise ValueError(f"a remote participant of a {prim.kind} can only receive")
        holder = _Both()
        link = _Link(endpoint, chan, cdc, holder)
        link.hello({"v": 1, "kind": prim.kind, "role": "receiver", "mode": "fifo"})
        s = _Subscriber(prim, link)
        holder.tx = holder.rx = s
        return s
    if isinstance(prim, Router):
        if role != "sender":
            raise ValueError("a remote participant of a Router sends (requests) and gets replies")
        holder = _Both()
        link = _Link(endpoint, chan, cdc, holder)
        link.hello({"v": 1, "kind": "router", "role": "both", "mode": "fifo"})
        origin = _RemoteOrigin(prim, link)
        holder.rx = _Sender(prim, link, window, origin)
        holder.tx = _Receiver(origin.replies, link, end_count=False)
        return origin
    if isinstance(prim, Gather):
        if role != "sender":
            raise ValueError("a remote participant of a Gather is a source")
        holder = _Both()
        link = _Link(endpoint, chan, cdc, holder)
        link.hello({"v": 1, "kind": "gather", "role": "sender", "mode": "fifo"})
        src = prim.source()
        holder.rx = _Sender(src, link, window)
        holder.tx = _Null()
        return src
    if isinstance(prim, Channel):
        holder = _Both()
        link = _Link(endpoint, chan, cdc, holder)
        link.hello({"v": 1, "kind": prim.kind, "role": role, "mode": "fifo"})
        if role == "receiver":
            r = _Receiver(prim, link)
            holder.tx = r
            holder.rx = r
            return r
        prim._made_senders = True
        prim._senders += 1
        snd = _Sender(prim, link, window)
        holder.rx = snd
        holder.tx = _Null()
        return snd
    raise TypeError(f"cannot attach a remote participant to {prim!r}")


# -- the other side: a RemoteEnd ---------------------------------------------------------------------


class RemoteEnd(Primitive):
    """The far end of an attached participant, on `chan` of `endpoint`:
    send(), recv(), close(exc=None), usable in select(). What recv() means
    follows the primitive it belongs to (the owner's hello says which): the
    next item (fifo), the newest value not yet seen (a Value), the current
    state (a State). `window` as for attach(): 0 is a strict rendezvous."""

    kind = "remote"

    def __init__(
        self,
        endpoint: FrameEndpoint,
        chan: int,
        *,
        codec: str | Codec | None = None,
        window: int = 0,
        name: str | None = None,
    ):
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        super().__init__(loop=endpoint.loop, name=name or f"remote end on channel {chan}")
        self.window = window
        self.mode = "fifo"
        self.peer_kind = ""
        self._recvq: deque[Op] = deque()
        self._sendq: deque[Op] = deque()
        self._inbox: deque[Any] = deque()
        self._latest: Any = UNSET
        self._version = 0
        self._seen = 0
        self._mine = False
        self._send_closed = False
        self._debt = 0  # window mode: consumed items not yet credited back
        self.role = ""  # what the owner's hello says this end does
        self.link = _Link(endpoint, chan, _codec(codec), self)
        if window:
            self.link.grant(window, strict=False)

    async def send(self, item: Any, timeout: float | None = None) -> None:
        if self.role == "receiver":
            raise TypeError(f"{self.name} belongs to a {self.peer_kind}'s receiver: it cannot send")
        await super().send(item, timeout)

    async def recv(self, timeout: float | None = None) -> Any:
        if self._inbox and self.mode == "fifo" and self._recv_end is None:
            self.received += 1  # buffered (window mode): no op, no waiter
            item = self._inbox.popleft()
            self._credit_back()
            return item
        if self.role == "sender":
            raise TypeError(f"{self.name} belongs to a {self.peer_kind}'s sender: it cannot recv")
        return await super().recv(timeout)

    # -- receiving ------------------------------------------------------------------

    def _credit_back(self) -> None:
        # Window mode: one item was consumed. Credit goes back in batches
        # (half a window at a time), not one frame per item.
        self._debt += 1
        if self._debt * 2 >= self.window and not self.link.peer_ended:
            self.link.grant(self._debt, strict=False)
            self._debt = 0

    def _recv_now(self, op: Op) -> bool:
        if self.mode != "fifo":
            return self._recv_latest(op)
        if self._inbox:
            if claim(op):
                self.received += 1
                complete(op, self._inbox.popleft())
                self._credit_back()
            return True
        if self._send_end is not None or self._recv_end is not None:
            raise self._recv_error_now()
        return False

    def _recv_latest(self, op: Op) -> bool:
        if self.mode == "state" and self._send_end is not None:
            raise self._recv_error()  # a closed State is not current any more
        ready = self._latest is not UNSET and (self.mode == "state" or self._seen < self._version)
        if ready:
            if claim(op):
                self._seen = self._version
                self.received += 1
                complete(op, self._latest)
            return True
        if self._send_end is not None or self._recv_end is not None:
            raise self._recv_error_now()
        return False

    def _recv_error_now(self) -> BaseException:
        if self._send_end is not None:
            return self._recv_error()
        end = self._recv_end
        assert end is not None
        if end.exc is not None:
            return ChannelFailed(f"{self.name}: closed with an error: {end.exc!r}", end.exc)
        return ClosedChannelError(f"{self.name}: closed")

    def _enqueue_recv(self, op: Op) -> None:
        self._recvq.append(op)
        if self.mode == "fifo" and not self.window:
            waiting = sum(1 for o in self._recvq if not o.waiter.done())
            self.link.grant(waiting - self.link.granted, strict=True)

    def _dequeue(self, op: Op) -> None:
        discard(self._recvq, op)
        discard(self._sendq, op)

    def on_item(self, seq: int, value: Any) -> None:
        if self.mode != "fifo":
            self._latest = value
            self._version += 1
            self.link.grant(1, strict=False)
            self._feed_latest()
            return
        r = pop_live(self._recvq)
        if r is not None:
            self.received += 1
            complete(r, value)
            if self.window:
                self._credit_back()
            else:
                self.link.ack(seq)
            return
        if self.window:
            self._inbox.append(value)
        else:
            self.link.nack(seq)  # the recv that asked for it was cancelled

    def _feed_latest(self) -> None:
        while self._latest is not UNSET:
            r = pop_live(self._recvq)
            if r is None:
                return
            self._seen = self._version
            self.received += 1
            complete(r, self._latest)
            if self.mode == "value":
                return

    def on_unset(self) -> None:
        self._latest = UNSET
        self._version += 1
        self.link.grant(1, strict=False)

    def on_hello(self, info: dict[str, Any]) -> None:
        self.peer_kind = str(info.get("kind", ""))
        self.role = str(info.get("role", ""))
        mode = info.get("mode", "fifo")
        if mode in ("value", "state") and self.mode == "fifo":
            self.mode = mode
            self.link.grant(1, strict=False)

    def on_end(self, exc: BaseException | None) -> None:
        if self._send_end is None:
            self._send_end = _end(exc)
            if not self._inbox:
                err = self._recv_error()
                while self._recvq:
                    fail(self._recvq.popleft(), err)

    def _recv_error(self) -> BaseException:
        end = self._send_end
        assert end is not None
        if end.exc is None:
            return EndOfChannel(f"{self.name}: the other side closed")
        return ChannelFailed(f"{self.name}: the other side failed: {end.exc!r}", end.exc)

    # -- sending -----------------------------------------------------------------------

    def _check_send(self) -> None:
        if self._closed_by_me:
            raise ClosedChannelError(f"{self.name} is closed")
        b = self.link.peer_broken
        if b is not False:
            if b is None:
                raise BrokenChannelError(f"{self.name}: nobody receives on the other side")
            raise ChannelFailed(f"{self.name}: the other side failed: {b!r}", b)  # type: ignore[arg-type]
        if self.link.gone:
            raise ChannelFailed(f"{self.name}: the endpoint closed", self._gone_exc)

    @property
    def _closed_by_me(self) -> bool:
        return self._mine or self._send_closed

    def _send_now(self, op: Op) -> bool:
        link = self.link
        if link.credits <= 0:
            return False
        data = link.codec.encode(op.value)  # a bad item raises here, in send()
        if not claim(op):
            return True
        self.sent += 1
        seq = link.send_data(data, op)
        if not link.strict:
            complete(op, None)
        else:
            op.waiter.on_abandon = lambda: link.withdraw(seq)
        return True

    def _enqueue_send(self, op: Op) -> None:
        self._sendq.append(op)

    def on_credit(self) -> None:
        while self.link.credits > 0:
            op = pop_live(self._sendq)
            if op is None:
                return
            unclaim(op)
            try:
                self._send_now(op)
            except Exception as exc:
                fail(op, exc)

    def on_ack(self, op: Any) -> None:
        complete(op, None)

    def on_nack(self, op: Any) -> None:
        self.sent -= 1
        op.waiter.on_abandon = None
        if op.waiter.abandoned:
            op.waiter.cancel()
            return
        if op.waiter.done():
            return
        op.waiter.winner = None
        self._sendq.appendleft(op)
        self.on_credit()

    def on_broken(self, exc: BaseException | None) -> None:
        err = self._send_error_from(exc)
        while self._sendq:
            fail(self._sendq.popleft(), err)

    def _send_error_from(self, exc: BaseException | None) -> BaseException:
        if exc is None:
            return BrokenChannelError(f"{self.name}: nobody receives on the other side")
        return ChannelFailed(f"{self.name}: the other side failed: {exc!r}", exc)

    _gone_exc: BaseException | None = None

    def on_gone(self, exc: BaseException) -> None:
        self._gone_exc = exc
        err = _gone_error(exc)
        for op in list(self.link.unacked.values()):
            fail(op, err)
        self.link.unacked.clear()
        while self._sendq:
            fail(self._sendq.popleft(), err)
        if self._send_end is None:
            self._send_end = _end(exc)
            if not self._inbox:
                e2 = self._recv_error()
                while self._recvq:
                    fail(self._recvq.popleft(), e2)

    # -- closing -----------------------------------------------------------------------

    def close_send(self, exc: BaseException | None = None) -> None:
        """No more items from this end: the owner's side sees the end (or
        ChannelFailed(RemoteError) with exc)."""
        if not self._send_closed:
            self._send_closed = True
            self.link.end(exc)
            err = ClosedChannelError(f"{self.name}: closed")
            while self._sendq:
                fail(self._sendq.popleft(), err)

    def close_recv(self, exc: BaseException | None = None) -> None:
        """This end receives no more: the owner's side stops sending to it."""
        if self._recv_end is None:
            self._recv_end = _end(exc)
            self.link.broken(exc)
            self.discarded += len(self._inbox)
            self._inbox.clear()
            err = ClosedChannelError(f"{self.name}: closed")
            while self._recvq:
                fail(self._recvq.popleft(), err)

    def close(self, exc: BaseException | None = None) -> None:
        """Close both directions and let go of the channel."""
        self._mine = True
        self.close_recv(exc)
        self.close_send(exc)
        if self._send_end is None:
            self._send_end = _end(exc)
        self.link.detach()

    def _world_stop(self, err: BaseException) -> None:
        self.close()

    def __enter__(self) -> RemoteEnd:
        return self

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(exc if isinstance(exc, Exception) else None)


def _end(exc: BaseException | None) -> Any:
    from ._core import _End

    return _End(exc)


def remote(
    endpoint: FrameEndpoint,
    chan: int,
    *,
    codec: str | Codec | None = None,
    window: int = 0,
) -> RemoteEnd:
    """The far end of a participant the owner attach()ed on `chan`."""
    return RemoteEnd(endpoint, chan, codec=codec, window=window)
