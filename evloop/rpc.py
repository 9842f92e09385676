# evloop/rpc.py
#
# Request/reply on any frame endpoint (a Pipe to a worker, an in-process
# pipe, a session): the caller's side (Client, Request) and the server's
# side (serve, Reply). A Pool is N Clients behind a dispatcher; a service
# graph's companion pipes are a Client and a serve() on one endpoint.
#
# Wire format (control.py registers the kinds): every rpc frame is on the
# control channel 65535, its first byte the kind; `id` is a u64 big-endian
# chosen by the caller, unique among its requests in flight:
#
#   Q  caller -> server   id | request bytes     answer expected
#   M  caller -> server   message bytes          no answer
#   R  server -> caller   id | reply bytes       success
#   X  server -> caller   id | JSON error        the handler raised
#
# The prefix (kind and id) and the payload are written as two parts of one
# frame (write_frame(chan, prefix, payload)), so a payload is never copied to
# prepend them; the server echoes the caller's 8 id bytes as they came, and
# the caller keys its in-flight table by those bytes, so neither side packs
# or unpacks an id per reply.
#
# Payloads are bytes by default. A codec (codec="json", or "pickle", or any
# object with encode/decode) turns Python values into bytes at both ends;
# pickle runs code chosen by the peer while decoding and must only be used
# between processes that trust each other.
#
# Invariants: every Request completes exactly once (reply, remote error,
# timeout, cancel, the loss of its endpoint, or its owner's shutdown), and
# its timer is cancelled when it does; while pending it is in exactly one
# in-flight table or one queue; a malformed reply (short, of an unknown
# kind, or an unreadable error body) never leaves a request pending: it
# either fails that request or is dropped with the request still tracked.
"""Request/reply on any frame endpoint: Request (a Future), Client, serve, Reply and codecs. See the comment header above for the invariants."""

from __future__ import annotations

import json
import logging
import pickle
import struct
import sys
from collections.abc import Callable
from typing import Any, Protocol, cast, overload

from .control import (
    CONTROL_CHANNEL,
    ID_OVERHEAD,
    KIND_FAIL,
    KIND_MESSAGE,
    KIND_PING,
    KIND_PONG,
    KIND_REPLY,
    KIND_REQUEST,
    decode_error,
    encode_error,
)
from .endpoint import Buffer, FrameEndpoint
from .errors import ConnClosedError, PayloadError, RequestCancelled

# Request completes itself inline on the hot path, as future.py allows its
# subclasses to (see PENDING there).
from .future import DONE, PENDING, Future
from .loop import Loop, TimerHandle

__all__ = [
    "Request",
    "Client",
    "Reply",
    "serve",
    "Codec",
    "JSONCodec",
    "PickleCodec",
    "get_codec",
]

log = logging.getLogger("evloop")

# kind byte + id, packed at once: the prefix of a request frame.
_KIND_ID = struct.Struct(">BQ")
_Q = bytes((KIND_REQUEST,))
_M = bytes((KIND_MESSAGE,))
_R = bytes((KIND_REPLY,))
_X = bytes((KIND_FAIL,))
_PONG = bytes((KIND_PONG,))
_DEFAULT: Any = object()


# -- codecs -------------------------------------------------------------------------


class Codec(Protocol):
    """Turns payload values into bytes and back: encode(obj) -> bytes,
    decode(bytes) -> obj. Either may raise; see Client and serve()."""

    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes | bytearray) -> Any: ...


class JSONCodec:
    """Payloads as UTF-8 JSON (compact; NaN and infinities refused)."""

    name = "json"

    def encode(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    def decode(self, data: bytes | bytearray) -> Any:
        return json.loads(data)


class PickleCodec:
    """Payloads as pickles. UNSAFE with a peer you do not trust: unpickling
    runs whatever code the data names. Only by explicit choice
    (codec="pickle"), never a default."""

    name = "pickle"

    def encode(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes | bytearray) -> Any:
        return pickle.loads(data)


def get_codec(spec: str | Codec | None) -> Codec | None:
    """None or "bytes": payloads are bytes (None is returned); "json";
    "pickle"; or a Codec object, returned as it is."""
    if spec is None or spec == "bytes":
        return None
    if spec == "json":
        return JSONCodec()
    if spec == "pickle":
        return PickleCodec()
    if isinstance(spec, str):
        raise ValueError(f"codec must be 'bytes', 'json', 'pickle' or a Codec object, not {spec!r}")
    if not (callable(getattr(spec, "encode", None)) and callable(getattr(spec, "decode", None))):
        raise TypeError(f"a codec needs encode() and decode() methods: {spec!r}")
    return spec


# -- the caller's side ----------------------------------------------------------------


class _Owner(Protocol):
    completed: int
    failed: int

    def _forget(self, req: Request) -> None: ...


class Request(Future[Any]):
    """A request in flight: a Future completed on the Loop with the reply
    (bytes, or the decoded value with a codec), or failed with the error
    (RemoteError, RequestTimeout, WorkerCrashed, WorkerHung,
    PoolClosedError, RequestCancelled, PayloadError, BufferFullError,
    ConnClosedError). Awaitable; `done()`, `result()`, `exception()`,
    `add_done_callback(fn)` as for any Future (callbacks get the Request).

    `id` is its request id; `idempotent` says whether its owner may send it
    again to another worker when the one it went to is lost (see Pool).
    `cancel()` completes it with RequestCancelled (and `cancelled()` is then
    true); the server is not told and a late reply is dropped.
    """

    __slots__ = ("id", "_key", "_owner", "_client", "_timer", "_payload", "idempotent", "attempts")

    def __init__(self, loop: Loop, rid: int, owner: _Owner | None = None):
        # Future.__init__, inlined: one request, one call less.
        self.loop = loop
        self._state = PENDING
        self._result = None
        self._exc = None
        self._callbacks = None
        self.id = rid
        self._key = b""
        self._owner = owner
        self._client: Client | None = None
        self._timer: TimerHandle | None = None
        self._payload: bytes | None = None  # kept while it may still be (re)sent
        self.idempotent = False
        self.attempts = 0

    def cancelled(self) -> bool:
        return isinstance(self._exc, RequestCancelled)

    def cancel(self, msg: str | None = None) -> bool:
        """Complete the request with RequestCancelled unless it is done;
        returns whether it was cancelled."""
        if self._state != PENDING:
            return False
        if self._client is not None:
            self._client._discard(self)
        elif self._owner is not None:
            self._owner._forget(self)
        self._fail(RequestCancelled(msg or f"request {self.id} was cancelled"))
        return True

    # The completions are inlined versions of Future.set_result/_exception
    # plus the owner's bookkeeping: the reply path is the Pool's hot path.
    def _resolve(self, value: Any) -> None:
        if self._state != PENDING:
            return
        self._result = value
        self._state = DONE
        self._payload = None
        self._client = None
        t = self._timer
        if t is not None:
            self._timer = None
            t.cancel()
        o = self._owner
        if o is not None:
            o.completed += 1
        cbs = self._callbacks
        if cbs is not None:
            self._callbacks = None
            for fn in cbs:
                try:
                    fn(self)
                except Exception as exc:
                    self.loop.call_exception_handler(exc, fn)

    def _fail(self, exc: BaseException) -> None:
        if self._state != PENDING:
            return
        self._exc = exc
        self._state = DONE
        self._payload = None
        self._client = None
        t = self._timer
        if t is not None:
            self._timer = None
            t.cancel()
        o = self._owner
        if o is not None:
            o.failed += 1
        cbs = self._callbacks
        if cbs is not None:
            self._callbacks = None
            for fn in cbs:
                try:
                    fn(self)
                except Exception as e:
                    self.loop.call_exception_handler(e, fn)

    def __repr__(self) -> str:
        return f"<Request {self.id} {self._state_name()}>"


class Client:
    """The caller's side of rpc on one endpoint.

    It stacks itself on the endpoint's on_frame: reply frames (R, X) are its
    own, every other frame goes on to the handler that was there before (or
    to `on_other(chan, payload)` if given). `request(data, callback=None,
    timeout=None) -> Request`; `send(data)` (a message: no reply);
    `fail_all(exc)` fails everything in flight (the endpoint is lost: a Pool
    does it when the worker exits). `outstanding` counts the requests in
    flight, `sent` those ever sent. `on_idle(client)` runs whenever
    `outstanding` drops to 0. A codec (see get_codec) encodes request
    values and decodes replies.
    """

    def __init__(
        self,
        endpoint: FrameEndpoint,
        *,
        codec: str | Codec | None = None,
        on_other: Callable[[int, Any], Any] | None = None,
        on_idle: Callable[[Client], Any] | None = None,
    ):
        self.endpoint = endpoint
        self.loop = endpoint.loop
        self.codec = get_codec(codec)
        self.on_idle = on_idle
        self._inflight: dict[bytes, Request] = {}
        self.outstanding = 0
        self.sent = 0
        self.completed = 0
        self.failed = 0
        self._next_id = 1
        self._other = on_other if on_other is not None else endpoint.on_frame
        self._write = endpoint.write_frame
        endpoint.on_frame = self._on_frame

    # -- sending ------------------------------------------------------------------

    def request(
        self,
        data: Any,
        callback: Callable[[Request], Any] | None = None,
        timeout: float | None = None,
    ) -> Request:
        """Send a request and return its Request. ValueError/TypeError for a
        payload the endpoint refuses (or the codec cannot encode), and the
        endpoint's ConnClosedError/BufferFullError, all before anything is
        in flight."""
        payload = self.codec.encode(data) if self.codec is not None else data
        rid = self._next_id
        self._next_id = rid + 1
        req = Request(self.loop, rid, self)
        self._submit(req, payload)
        if callback is not None:
            req.add_done_callback(cast("Callable[[Future[Any]], Any]", callback))
        if timeout is not None:
            req._timer = self.loop.call_later(timeout, self._on_timeout, req, timeout)
        return req

    def send(self, data: Any) -> None:
        """A message: the server's handler gets it and nobody answers."""
        payload = self.codec.encode(data) if self.codec is not None else data
        self._write(CONTROL_CHANNEL, _M, payload)

    def _submit(self, req: Request, payload: Buffer) -> None:
        """Put `req` (pending, not in any table) in flight with `payload`.
        The endpoint's exceptions pass through, with nothing in flight."""
        prefix = _KIND_ID.pack(KIND_REQUEST, req.id)
        self._write(CONTROL_CHANNEL, prefix, payload)
        key = prefix[1:]
        req._key = key
        req._client = self
        req.attempts += 1
        self._inflight[key] = req
        self.outstanding += 1
        self.sent += 1

    def _forget(self, req: Request) -> None:
        self._discard(req)

    def _discard(self, req: Request) -> None:
        if self._inflight.pop(req._key, None) is not None:
            self.outstanding -= 1
            req._client = None
            if not self.outstanding and self.on_idle is not None:
                self.on_idle(self)

    def _on_timeout(self, req: Request, timeout: float) -> None:
        from .errors import RequestTimeout

        req._timer = None
        if req._state == PENDING:
            self._discard(req)
            req._fail(RequestTimeout(f"request {req.id} got no reply within {timeout} s"))

    def take_all(self) -> list[Request]:
        """Remove and return every request in flight, oldest first (they
        stay pending: the caller fails them or sends them elsewhere)."""
        reqs = list(self._inflight.values())
        self._inflight.clear()
        self.outstanding = 0
        for r in reqs:
            r._client = None
        return reqs

    def fail_all(self, exc_factory: Callable[[Request], BaseException]) -> None:
        """Fail every request in flight with exc_factory(request)."""
        for req in self.take_all():
            req._fail(exc_factory(req))

    # -- receiving ------------------------------------------------------------------

    def _on_frame(self, chan: int, payload: Any) -> None:
        if chan != CONTROL_CHANNEL or payload[0] not in (KIND_REPLY, KIND_FAIL):
            other = self._other
            if other is not None:
                other(chan, payload)
            return
        key = payload[1:ID_OVERHEAD]
        if type(key) is not bytes:
            key = bytes(key)  # a bytearray (a large reply) cannot be a dict key
        inflight = self._inflight
        try:
            req = inflight[key]
            del inflight[key]
        except KeyError:
            # Timed out or cancelled already (the late answer is dropped), or
            # a reply too short to carry an id.
            if len(key) != 8:
                log.warning("evloop: rpc: dropping a reply frame without an id: %r", payload[:16])
            return
        self.outstanding -= 1
        kind = payload[0]
        if type(payload) is bytearray:  # a large reply: trimmed in place, no copy
            del payload[:ID_OVERHEAD]
            body = payload
        else:
            body = payload[ID_OVERHEAD:]
        if kind == KIND_REPLY:
            codec = self.codec
            if codec is None:
                req._resolve(body)
            else:
                try:
                    value = codec.decode(body)
                except Exception as exc:
                    err = PayloadError(f"reply to request {req.id} could not be decoded: {exc}")
                    err.__cause__ = exc
                    req._fail(err)
                else:
                    req._resolve(value)
        else:
            req._fail(decode_error(body))
        if not self.outstanding and self.on_idle is not None:
            self.on_idle(self)


# -- the server's side ----------------------------------------------------------------


class Reply:
    """Answers one request from a deferred handler: `reply(data)` or
    `reply.fail(exc)`, exactly once. For a message it does nothing. Answers
    to a caller that has gone away are dropped."""

    __slots__ = ("_write", "_head", "_codec", "id", "_done")

    def __init__(self, endpoint: FrameEndpoint, head: bytes | None, codec: Codec | None = None):
        self._write = endpoint.write_frame
        self._head = head  # the request's kind byte + id as received
        self._codec = codec
        self.id = None if head is None else int.from_bytes(head[1:], "big")
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def __call__(self, data: Any = b"") -> None:
        if self._done:
            raise RuntimeError(f"request {self.id} was already answered")
        self._done = True
        head = self._head
        if head is None:
            return
        if self._codec is not None:
            data = self._codec.encode(data)
        elif data is None:
            data = b""
        _send(self._write, _R + head[1:], data)

    def fail(self, exc: BaseException) -> None:
        if self._done:
            raise RuntimeError(f"request {self.id} was already answered")
        self._done = True
        if self._head is not None:
            _send(self._write, _X + self._head[1:], encode_error(exc))


def _send(write: Callable[..., None], head: bytes, body: Any) -> None:
    try:
        if body:
            write(CONTROL_CHANNEL, head, body)
        else:
            write(CONTROL_CHANNEL, head)
    except ConnClosedError:
        pass  # the caller is gone: nobody to answer


@overload
def serve(
    loop: Loop,
    pipe: FrameEndpoint,
    handler: Callable[..., Any],
    *,
    deferred: bool = ...,
    on_frame: Callable[[int, Any], Any] | None = ...,
    codec: str | Codec | None = ...,
) -> None: ...


@overload
def serve(
    ctx: Any,
    handler: Callable[..., Any],
    /,
    *,
    deferred: bool = ...,
    on_frame: Callable[[int, Any], Any] | None = ...,
    codec: str | Codec | None = ...,
) -> None: ...


def serve(
    loop: Any,
    pipe: Any,
    handler: Any = None,
    *,
    deferred: bool = False,
    on_frame: Callable[[int, Any], Any] | None = None,
    codec: str | Codec | None = None,
) -> None:
    """Answer requests arriving on `endpoint`: call it from a worker function
    as serve(loop, pipe, handler) or serve(ctx, handler).

    handler(data) -> reply is called for every request and message, and its
    return value is the reply (None: an empty reply). With deferred=True it
    is called as handler(data, reply) and answers later by calling
    reply(value) or reply.fail(exc) (see Reply). A handler that raises fails
    only that request (the caller gets a RemoteError); an exception from a
    message handler, which has nobody to answer, goes to the loop's exception
    handler (in a worker: the worker ends). With a codec, the handler gets
    and returns decoded values; a request that cannot be decoded fails with
    a RemoteError without reaching the handler. Frames on other channels go
    to on_frame(chan, payload). Heartbeats (P) are answered here, so a Pool
    can tell a stopped worker from a busy one."""
    endpoint = pipe
    if handler is None:  # serve(ctx, handler)
        ctx, handler = loop, pipe
        loop, endpoint = ctx.loop, ctx.pipe
    else:
        ctx = None
    cod = get_codec(codec)
    write = endpoint.write_frame
    runtime = sys.modules.get("evloop.worker")
    if runtime is not None:
        if ctx is None:
            ctx = runtime.current_context()
        if ctx is not None and ctx.pipe is endpoint:
            ctx.answers_pings = True

    def on_control(chan: int, payload: Any) -> None:
        if chan != CONTROL_CHANNEL:
            if on_frame is not None:
                on_frame(chan, payload)
            return
        kind = payload[0]
        if kind == KIND_REQUEST:
            try:
                payload[ID_OVERHEAD - 1]
            except IndexError:
                log.warning("evloop: serve: dropping a request without an id: %r", payload[:16])
                return
            tail = payload[1:ID_OVERHEAD]
            if type(payload) is bytearray:  # a large request: trimmed in place
                del payload[:ID_OVERHEAD]
                data = payload
            else:
                data = payload[ID_OVERHEAD:]
            if cod is not None:
                try:
                    data = cod.decode(data)
                except Exception as exc:
                    _send(write, _X + tail, encode_error(exc))
                    return
            if deferred:
                reply = Reply(endpoint, _Q + tail, cod)
                try:
                    handler(data, reply)
                except Exception as exc:
                    if reply._done:
                        raise  # answered already: a plain bug, fatal like any other
                    reply.fail(exc)
                return
            try:
                result = handler(data)
                if cod is not None:
                    result = cod.encode(result)
                if result:
                    write(CONTROL_CHANNEL, _R + tail, result)
                else:
                    write(CONTROL_CHANNEL, _R + tail)
            except ConnClosedError:
                pass  # the caller is gone
            except Exception as exc:
                _send(write, _X + tail, encode_error(exc))
        elif kind == KIND_MESSAGE:
            data = payload[1:]
            if cod is not None:
                data = cod.decode(data)
            if deferred:
                handler(data, Reply(endpoint, None, cod))
            else:
                handler(data)
        elif kind == KIND_PING:
            _send(write, _PONG, payload[1:])
        else:
            log.debug("evloop: serve: ignoring control kind %r", payload[:1])

    endpoint.on_frame = on_control
