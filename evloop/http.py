# evloop/http.py
#
# HTTP/1.1 server side, as three pipeline stages joined by small message
# objects, so each stage can later run as a servlet on a service graph's
# ports (see "Stages" below and docs/http.md):
#
#   Conn bytes --> [parse: HttpRequestParser] --RequestHead/RequestBody/RequestEnd/RequestAbort-->
#              --> [handle: HandlerStage(handler)] --ResponseHead/ResponseBody/ResponseEnd-->
#              --> [respond: Responder(conn)] --> Conn bytes
#
# and back, from respond to handle, a ResponseAbort when the connection can
# no longer carry a response. Every message names its request by `seq`, the
# request's number on its connection (0, 1, 2...): that is how responses are
# matched to requests, in order, with pipelining. HttpConnection wires the
# three stages to one Conn in-process; a stage sees only its input messages
# and the callable it emits to (`sink`), never another stage.
#
# Parse. A head is read with Conn.read_until(b"\r\n\r\n", max_header): the
# Conn remembers how far it scanned, so a slowloris client trickling its
# header byte by byte costs linear time, and a head past max_header is 431.
# The body is framed by Content-Length or chunked coding (Transfer-Encoding
# other than chunked is 501; both at once, or a bad length, is 400: the
# usual request-smuggling defences) and passed on as it arrives, in pieces,
# never buffered whole; a body past max_body is 413. A malformed request is
# HttpError(400) and the parser stops: what follows cannot be trusted to be
# in step. HTTP/1.0 and 1.1 are spoken; other versions get 505.
#
# Respond. Responses leave in request order: the oldest unfinished response
# streams straight to the Conn; a later one that is produced early is held
# (bounded by max_held bytes) until those before it end. A response without
# Content-Length is sent chunked to an HTTP/1.1 client and close-delimited to
# an HTTP/1.0 one; HEAD, 1xx, 204 and 304 responses have no body. The
# connection closes after a response when the request asked for it
# (Connection: close, HTTP/1.0 without keep-alive), the response said so,
# or the body was close-delimited; requests pipelined after it are dropped.
#
# Faults, as the seed's notes ask: a socket that dies breaks only what it
# must. The request whose body was still arriving gets RequestAbort (its
# handler's on_abort); every response not yet finished gets ResponseAbort
# (Response.aborted becomes true, on_abort runs, later writes return False);
# responses already sent are untouched, other connections never notice, and
# no exception reaches the loop. A handler that raises gets a 500 if it had
# not started its response, else its connection is closed.
#
# Bounds: at most max_pipeline requests in flight per connection (then
# reading pauses until responses finish), header_timeout seconds for a head
# to arrive once its first byte has (408), and whatever idle_timeout the
# Conn has between requests.
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from .conn import Conn
from .errors import HttpError, ReadLimitError, StreamAborted
from .loop import TimerHandle

__all__ = [
    "HttpRequestParser", "HandlerStage", "Responder", "HttpConnection", "http_server", "HandleStage",
    "Request", "Response", "Handler", "Headers",
    "RequestHead", "RequestBody", "RequestEnd", "RequestAbort",
    "ResponseHead", "ResponseBody", "ResponseEnd", "ResponseAbort",
    "REASONS", "DEFAULT_MAX_HEADER", "DEFAULT_MAX_BODY",
]  # fmt: skip

Headers = list[tuple[bytes, bytes]]  # (lower-cased name, value), in order

DEFAULT_MAX_HEADER = 16 * 1024  # request line + headers
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_MAX_PIPELINE = 64
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_HELD = 4 * 1024 * 1024
_CHUNK_LINE_MAX = 1024  # a chunk-size line with its extensions

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
    302: "Found", 304: "Not Modified", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    413: "Content Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}  # fmt: skip

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value: visible characters, spaces and tabs (obs-text allowed); no
# CR, LF, NUL or other controls.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")


# -- messages between the stages ----------------------------------------------


class RequestHead:
    """parse -> handle: a request line and its headers. `body` is "none",
    "length" (`length` bytes follow as RequestBody) or "chunked"; with
    "none" no RequestEnd follows (the head is the whole request)."""

    __slots__ = ("seq", "method", "target", "version", "headers", "keep_alive", "body", "length", "expect_continue")  # fmt: skip

    def __init__(
        self, seq: int, method: bytes, target: bytes, version: bytes, headers: Headers,
        keep_alive: bool, body: str, length: int, expect_continue: bool,
    ):  # fmt: skip
        self.seq = seq
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = body
        self.length = length
        self.expect_continue = expect_continue


class RequestBody:
    """parse -> handle: the next piece of request `seq`'s body."""

    __slots__ = ("seq", "data")

    def __init__(self, seq: int, data: bytes):
        self.seq = seq
        self.data = data


class RequestEnd:
    """parse -> handle: request `seq`'s body is complete (`trailers` from a
    chunked body)."""

    __slots__ = ("seq", "trailers")

    def __init__(self, seq: int, trailers: Headers):
        self.seq = seq
        self.trailers = trailers


class RequestAbort:
    """parse -> handle: request `seq` will never be complete (the
    connection died mid-body, or its bytes broke the protocol)."""

    __slots__ = ("seq", "error")

    def __init__(self, seq: int, error: BaseException):
        self.seq = seq
        self.error = error


class ResponseHead:
    """handle -> respond: the status line and headers of response `seq`.
    With `body` set, the response is complete (no ResponseBody/End follow)."""

    __slots__ = ("seq", "status", "reason", "headers", "body")

    def __init__(
        self, seq: int, status: int, reason: str, headers: Headers, body: bytes | None = None
    ):
        self.seq = seq
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


class ResponseBody:
    """handle -> respond: the next piece of response `seq`'s body."""

    __slots__ = ("seq", "data")

    def __init__(self, seq: int, data: bytes):
        self.seq = seq
        self.data = data


class ResponseEnd:
    """handle -> respond: response `seq` is complete."""

    __slots__ = ("seq",)

    def __init__(self, seq: int):
        self.seq = seq


class ResponseAbort:
    """respond -> handle: response `seq` cannot reach the client any more
    (the connection died or closed); `error` says why."""

    __slots__ = ("seq", "error")

    def __init__(self, seq: int, error: BaseException):
        self.seq = seq
        self.error = error


RequestMessage = RequestHead | RequestBody | RequestEnd | RequestAbort
ResponseMessage = ResponseHead | ResponseBody | ResponseEnd


# -- stage 1: parse -------------------------------------------------------------


class HttpRequestParser:
    """The parse stage: `feed(conn)` consumes what is buffered in `conn` and
    emits request messages to `sink`, in order; a partial head or body is
    resumed by the next call (see the module header). Raises HttpError
    after emitting everything before the bad bytes; the parser is then done
    (`failed`), as is one that saw a request that ends the connection."""

    __slots__ = (
        "sink", "max_header", "max_body", "seq", "_state", "_left", "_total", "_done",
        "_close_after", "_trailers", "failed",
    )  # fmt: skip

    def __init__(
        self,
        sink: Callable[[RequestMessage], Any],
        *,
        max_header: int = DEFAULT_MAX_HEADER,
        max_body: int = DEFAULT_MAX_BODY,
    ):
        self.sink = sink
        self.max_header = max_header
        self.max_body = max_body
        self.seq = 0  # the next request's number
        self._state = (
            0  # 0 head, 1 length body, 2 chunk size, 3 chunk data, 4 chunk CRLF, 5 trailers
        )
        self._left = 0  # bytes left of the body or chunk
        self._total = 0  # body bytes so far (for max_body)
        self._done = False  # a request ended the connection: parse nothing after it
        self._close_after = False  # the current request ends the connection after its body
        self._trailers: Headers = []
        self.failed = False

    @property
    def in_head(self) -> bool:
        """Between requests or inside a head (no body is being read)."""
        return self._state == 0

    @property
    def done(self) -> bool:
        return self._done or self.failed

    def feed(self, conn: Conn, limit: int = 1 << 30) -> int:
        """Parse what is buffered; emit at most `limit` request heads (the
        caller's pipelining window). Returns the number of heads emitted."""
        heads = 0
        try:
            while conn.read_buffered and not self._done:
                state = self._state
                if state == 0:
                    if heads >= limit:
                        break
                    if not self._head(conn):
                        break
                    heads += 1
                elif state == 1:
                    self._length_body(conn)
                    if self._state == 1:
                        break
                elif not self._chunked(conn):
                    break
        except HttpError:
            self.failed = True
            self._done = True
            raise
        return heads

    def _head(self, conn: Conn) -> bool:
        view = conn.read()
        # Empty lines before a request line are ignored (RFC 9112 2.2).
        skip = 0
        while view[skip : skip + 2] == b"\r\n":
            skip += 2
        view.release()
        if skip:
            conn.consume(skip)
            if not conn.read_buffered:
                return False
        limit = min(self.max_header, conn.read_limit)
        try:
            raw = conn.read_until(b"\r\n\r\n", limit)
        except ReadLimitError:
            raise HttpError(431, f"request head longer than {limit} bytes") from None
        if raw is None:
            return False
        seq = self.seq
        self.seq = seq + 1
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        if version != b"HTTP/1.1" and version != b"HTTP/1.0":
            if re.fullmatch(rb"HTTP/\d\.\d", version):
                raise HttpError(505, f"HTTP version {version.decode()} is not supported")
            raise HttpError(400, "malformed request line")
        if not _TOKEN.fullmatch(method):
            raise HttpError(400, "malformed method")
        if not target or _BAD_TARGET.search(target):
            raise HttpError(400, "malformed request target")
        headers = _parse_fields(lines, 1)
        keep_alive = version == b"HTTP/1.1"
        length = -1
        te = None
        expect = False
        host = 0
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    raise HttpError(400, "malformed Content-Length")
                n = int(value)
                if length >= 0 and n != length:
                    raise HttpError(400, "conflicting Content-Length headers")
                length = n
            elif name == b"transfer-encoding":
                te = value.lower() if te is None else te + b", " + value.lower()
            elif name == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
            elif name == b"host":
                host += 1
        if version == b"HTTP/1.1" and host != 1:
            raise HttpError(400, "an HTTP/1.1 request needs exactly one Host header")
        if te is not None:
            if length >= 0:
                raise HttpError(400, "both Transfer-Encoding and Content-Length")
            if te != b"chunked":
                raise HttpError(
                    501, f"Transfer-Encoding {te.decode(errors='replace')!r} is not supported"
                )
            body = "chunked"
            self._state = 2
        elif length > 0:
            if length > self.max_body:
                raise HttpError(413, f"body of {length} bytes is over the limit of {self.max_body}")
            body = "length"
            self._state = 1
            self._left = length
        else:
            body = "none"
            length = 0
        self._total = 0
        # After a request that ends the connection nothing more is read.
        self._close_after = not keep_alive
        self._done = not keep_alive and body == "none"
        self.sink(
            RequestHead(seq, method, target, version, headers, keep_alive, body, length, expect)
        )
        return True

    def _length_body(self, conn: Conn) -> None:
        n = min(self._left, conn.read_buffered)
        data = conn.take(0, n)
        self._left -= n
        seq = self.seq - 1
        self.sink(RequestBody(seq, data))
        if self._left == 0:
            self._end(seq, [])

    def _end(self, seq: int, trailers: Headers) -> None:
        self._state = 0
        if self._close_after:
            self._done = True
        self.sink(RequestEnd(seq, trailers))

    def _chunked(self, conn: Conn) -> bool:
        state = self._state
        seq = self.seq - 1
        if state == 2:  # chunk-size [; ext] CRLF
            try:
                line = conn.read_until(b"\r\n", min(_CHUNK_LINE_MAX, conn.read_limit))
            except ReadLimitError:
                raise HttpError(400, "chunk size line too long") from None
            if line is None:
                return False
            size = line[:-2].split(b";", 1)[0].strip(b" \t")
            if not size or len(size) > 15 or not re.fullmatch(rb"[0-9A-Fa-f]+", size):
                raise HttpError(400, "malformed chunk size")
            n = int(size, 16)
            if n == 0:
                self._state = 5
                self._trailers = []
                return True
            self._total += n
            if self._total > self.max_body:
                raise HttpError(413, f"chunked body over the limit of {self.max_body} bytes")
            self._left = n
            self._state = 3
            return True
        if state == 3:
            n = min(self._left, conn.read_buffered)
            self.sink(RequestBody(seq, conn.take(0, n)))
            self._left -= n
            if self._left == 0:
                self._state = 4
            return True
        if state == 4:
            if conn.read_buffered < 2:
                return False
            view = conn.read()
            ok = view[:2] == b"\r\n"
            view.release()
            if not ok:
                raise HttpError(400, "missing CRLF after a chunk")
            conn.consume(2)
            self._state = 2
            return True
        # state 5: trailer fields, then an empty line
        try:
            line = conn.read_until(b"\r\n", min(self.max_header, conn.read_limit))
        except ReadLimitError:
            raise HttpError(431, "trailer field too long") from None
        if line is None:
            return False
        if line == b"\r\n":
            trailers, self._trailers = self._trailers, []
            self._end(seq, trailers)
            return True
        self._trailers += _parse_fields([line[:-2]], 0)
        if sum(len(n) + len(v) for n, v in self._trailers) > self.max_header:
            raise HttpError(431, "trailers too long")
        return True


def _parse_fields(lines: list[bytes], start: int) -> Headers:
    headers: Headers = []
    for k in range(start, len(lines)):
        line = lines[k]
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            if line[:1] in (b" ", b"\t"):
                raise HttpError(400, "obsolete line folding in a header")
            raise HttpError(400, "malformed header line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HttpError(400, f"control character in header {name.decode()!r}")
        headers.append((name.lower(), value))
    return headers


# -- stage 2: handle --------------------------------------------------------------


class Request:
    """What a handler sees of one request. Attributes: method, target,
    version (bytes), headers (list of (lower-case name, value)), seq.

    The body arrives after the handler was called: set `on_body(data)` to
    stream it and `on_end()` to hear it is complete, or call
    `read_body(callback)` to get it whole (callback(body) once complete).
    `on_abort(exc)` runs if the request or its response can no longer
    complete (the connection died): exc is a StreamAborted."""

    __slots__ = (
        "method", "target", "version", "headers", "seq", "keep_alive", "trailers",
        "on_body", "on_end", "on_abort", "complete", "aborted", "_chunks",
    )  # fmt: skip

    def __init__(self, head: RequestHead):
        self.method = head.method
        self.target = head.target
        self.version = head.version
        self.headers = head.headers
        self.seq = head.seq
        self.keep_alive = head.keep_alive
        self.trailers: Headers = []
        self.on_body: Callable[[bytes], Any] | None = None
        self.on_end: Callable[[], Any] | None = None
        self.on_abort: Callable[[StreamAborted], Any] | None = None
        self.complete = head.body == "none"
        self.aborted: StreamAborted | None = None
        self._chunks: list[bytes] | None = None

    def header(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The first value of header `name` (lower case), or default."""
        for n, v in self.headers:
            if n == name:
                return v
        return default

    def read_body(self, callback: Callable[[bytes], Any]) -> None:
        """callback(body) once the whole body has arrived (at once if it
        already has, or if there is none)."""
        if self.complete and self._chunks is None:
            callback(b"")
            return
        chunks = self._chunks = [] if self._chunks is None else self._chunks

        def on_body(data: bytes) -> None:
            chunks.append(data)

        def on_end() -> None:
            callback(b"".join(chunks))

        self.on_body = on_body
        self.on_end = on_end


class Response:
    """What a handler writes to. Either `send(status, body, headers)` in
    one go, or `start(status, headers)`, any number of `write(data)`, then
    `end()`. Without a content-length header, the body goes chunked (HTTP/1.1)
    or close-delimited (HTTP/1.0). Writes return False, and are dropped,
    once the response was aborted (`aborted`, and on_abort on the Request)."""

    __slots__ = ("_stage", "seq", "started", "finished", "aborted", "_request")

    def __init__(self, stage: HandlerStage, request: Request):
        self._stage = stage
        self._request = request
        self.seq = request.seq
        self.started = False
        self.finished = False
        self.aborted: StreamAborted | None = None

    def send(self, status: int, body: bytes = b"", headers: Headers | None = None) -> bool:
        """The whole response at once: status, headers and body."""
        if self.started:
            raise RuntimeError("response already started")
        self.started = self.finished = True
        if self.aborted is not None:
            return False
        self._stage.sink(
            ResponseHead(self.seq, status, REASONS.get(status, ""), headers or [], body)
        )
        self._stage._finished(self.seq)
        return True

    def start(self, status: int, headers: Headers | None = None, reason: str | None = None) -> bool:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        if self.aborted is not None:
            return False
        if reason is None:
            reason = REASONS.get(status, "")
        self._stage.sink(ResponseHead(self.seq, status, reason, headers or []))
        return True

    def write(self, data: bytes) -> bool:
        if not self.started:
            self.start(200)
        if self.finished:
            raise RuntimeError("response already ended")
        if self.aborted is not None:
            return False
        if data:
            self._stage.sink(ResponseBody(self.seq, bytes(data)))
        return True

    def end(self, data: bytes = b"") -> bool:
        if data:
            self.write(data)
        elif not self.started:
            self.start(200)
        if self.finished:
            return self.aborted is None
        self.finished = True
        if self.aborted is not None:
            return False
        self._stage.sink(ResponseEnd(self.seq))
        self._stage._finished(self.seq)
        return True

    @property
    def writable(self) -> bool:
        """False while the connection's write buffer is above its high
        watermark: a streaming producer should wait (when_writable)."""
        return self._stage.writable()

    def when_writable(self, fn: Callable[[], Any]) -> None:
        self._stage.when_writable(fn)


Handler = Callable[[Request, Response], Any]


class HandlerStage:
    """The handle stage: request messages in (`feed`), response messages
    out (`sink`); calls `handler(request, response)` once per request head
    and routes body, end and abort messages to the right Request."""

    __slots__ = ("handler", "sink", "loop_errors", "_open", "writable", "when_writable")

    def __init__(
        self,
        handler: Handler,
        sink: Callable[[ResponseMessage], Any],
        *,
        on_error: Callable[[BaseException, Any], Any],
        writable: Callable[[], bool] = lambda: True,
        when_writable: Callable[[Callable[[], Any]], Any] | None = None,
    ):
        self.handler = handler
        self.sink = sink
        self.loop_errors = on_error
        self._open: dict[int, tuple[Request, Response]] = {}
        self.writable = writable
        self.when_writable = when_writable or (lambda fn: fn())

    @property
    def in_flight(self) -> int:
        return len(self._open)

    def feed(self, msg: RequestMessage | ResponseAbort) -> None:
        t = type(msg)
        if t is RequestHead:
            assert isinstance(msg, RequestHead)
            req = Request(msg)
            resp = Response(self, req)
            self._open[msg.seq] = (req, resp)
            self._call(self.handler, req, resp, req, resp)
            return
        entry = self._open.get(msg.seq)
        if entry is None:
            return  # finished and forgotten already
        req, resp = entry
        if t is RequestBody:
            assert isinstance(msg, RequestBody)
            if req.on_body is not None:
                self._call(req.on_body, req, resp, msg.data)
        elif t is RequestEnd:
            assert isinstance(msg, RequestEnd)
            req.complete = True
            req.trailers = msg.trailers
            if req.on_end is not None:
                self._call(req.on_end, req, resp)
            if resp.finished:
                self._open.pop(msg.seq, None)
        else:
            assert isinstance(msg, (RequestAbort, ResponseAbort))
            self._abort(req, resp, msg.error)

    def _abort(self, req: Request, resp: Response, error: BaseException) -> None:
        exc = error if isinstance(error, StreamAborted) else StreamAborted(str(error), error)
        self._open.pop(req.seq, None)
        if req.aborted is None and not (req.complete and resp.finished):
            req.aborted = resp.aborted = exc
            if req.on_abort is not None:
                try:
                    req.on_abort(exc)
                except Exception as e:
                    self.loop_errors(e, req.on_abort)

    def _call(self, fn: Callable[..., Any], req: Request, resp: Response, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.loop_errors(exc, fn)
            if not resp.started:
                resp.send(500, b"internal server error\n", [(b"content-type", b"text/plain")])
            elif not resp.finished:
                # Half a response is on the wire: only closing can say so.
                resp.finished = True
                self.sink(ResponseAbort(resp.seq, exc))  # type: ignore[arg-type]

    def _finished(self, seq: int) -> None:
        entry = self._open.get(seq)
        if entry is not None and entry[0].complete:
            del self._open[seq]

    def abort_all(self, error: BaseException) -> None:
        """The connection is gone: every open request/response learns it."""
        for req, resp in list(self._open.values()):
            self._abort(req, resp, error)


# -- stage 3: respond -------------------------------------------------------------


class _Out:
    __slots__ = (
        "seq",
        "head_request",
        "keep_alive",
        "version",
        "parts",
        "ended",
        "mode",
        "started",
    )

    def __init__(self, seq: int, head_request: bool, keep_alive: bool, version: bytes):
        self.seq = seq
        self.head_request = head_request
        self.keep_alive = keep_alive
        self.version = version
        self.parts: list[bytes] = []  # encoded bytes held until it is this one's turn
        self.ended = False
        self.mode = 0  # 0 none, 1 length/identity, 2 chunked, 3 close-delimited
        self.started = False


class Responder:
    """The respond stage: response messages in (`feed`), bytes out to
    `conn`, in request order (see the module header). `expect(head)` is
    called for each request head, before its response messages, so the
    stage knows the order, the method and the version; `on_abort(seq, exc)`
    is told of every response that can no longer be sent."""

    __slots__ = ("conn", "on_abort", "max_held", "_queue", "_held", "_closed", "on_idle")

    def __init__(
        self,
        conn: Conn,
        *,
        on_abort: Callable[[ResponseAbort], Any],
        max_held: int = DEFAULT_MAX_HELD,
    ):
        self.conn = conn
        self.on_abort = on_abort
        self.max_held = max_held
        self._queue: dict[int, _Out] = {}  # in request order (dicts keep insertion order)
        self._held = 0
        self._closed = False
        self.on_idle: Callable[[], Any] | None = None  # a response finished: the window moved

    @property
    def pending(self) -> int:
        return len(self._queue)

    def keep_alive(self, seq: int, keep: bool) -> None:
        """The persist flag of response `seq`'s port (evloop.graph.http): if
        clear, the connection closes after that response, as if the request
        had asked to. It cannot keep alive what the request said to close."""
        out = self._queue.get(seq)
        if out is not None and not keep:
            out.keep_alive = False

    def expect(self, head: RequestHead) -> None:
        self._queue[head.seq] = _Out(
            head.seq, head.method == b"HEAD", head.keep_alive, head.version
        )

    def feed(self, msg: ResponseMessage | ResponseAbort) -> None:
        out = self._queue.get(msg.seq)
        if out is None or self._closed:
            return
        t = type(msg)
        if t is ResponseHead:
            assert isinstance(msg, ResponseHead)
            self._encode_head(out, msg)
        elif t is ResponseBody:
            assert isinstance(msg, ResponseBody)
            data = msg.data
            if out.head_request or out.mode == 0:
                pass
            elif out.mode == 2:
                self._emit(out, b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self._emit(out, data)
        elif t is ResponseEnd:
            self._end(out)
        else:  # ResponseAbort from the handler: the response cannot be completed
            assert isinstance(msg, ResponseAbort)
            self.close(msg.error)

    def _encode_head(self, out: _Out, msg: ResponseHead) -> None:
        status = msg.status
        body = msg.body
        has_length = False
        close = not out.keep_alive
        lines = [b"%s %d %s\r\n" % (out.version, status, msg.reason.encode("latin-1", "replace"))]
        for name, value in msg.headers:
            lname = name.lower()
            if lname == b"content-length":
                has_length = True
            elif lname == b"transfer-encoding":
                continue  # the framing is ours to choose
            elif lname == b"connection" and b"close" in value.lower():
                close = True
            lines.append(b"%s: %s\r\n" % (name, value))
        no_body = out.head_request or status < 200 or status in (204, 304)
        if body is not None:
            if not has_length and not (status < 200 or status in (204, 304)):
                lines.append(b"content-length: %d\r\n" % len(body))
            out.mode = 1
        elif no_body:
            out.mode = 0
        elif has_length:
            out.mode = 1
        elif out.version == b"HTTP/1.1":
            lines.append(b"transfer-encoding: chunked\r\n")
            out.mode = 2
        else:
            out.mode = 3
            close = True
        if close:
            out.keep_alive = False
            lines.append(b"connection: close\r\n")
        elif out.version == b"HTTP/1.0":
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        if body and not no_body:
            lines.append(body)
        out.started = True
        self._emit(out, b"".join(lines))
        if body is not None:
            self._end(out)

    def _emit(self, out: _Out, data: bytes) -> None:
        if next(iter(self._queue)) == out.seq:
            self._write(data)
        else:
            out.parts.append(data)
            self._held += len(data)
            if self._held > self.max_held:
                self.close(StreamAborted(f"more than {self.max_held} bytes of responses held back"))

    def _write(self, data: bytes) -> None:
        conn = self.conn
        if conn.closing:
            return
        if conn.write_failed:
            # The client is gone (a send failed): nothing more can reach it.
            self.close(StreamAborted("the client went away (a send failed)"))
            return
        conn.write(data)

    def _end(self, out: _Out) -> None:
        if out.ended:
            return
        if not out.started:
            self._encode_head(out, ResponseHead(out.seq, 200, "OK", []))
        out.ended = True
        if out.mode == 2:
            self._emit(out, b"0\r\n\r\n")
        # Pop every finished response from the front, releasing what they held.
        queue = self._queue
        while queue:
            seq = next(iter(queue))
            first = queue[seq]
            if first.parts:
                for part in first.parts:
                    self._held -= len(part)
                    self._write(part)
                first.parts.clear()
            if not first.ended:
                break
            del queue[seq]
            if not first.keep_alive:
                self.close(None)
                return
        if self.on_idle is not None:
            self.on_idle()

    def drop(self, seq: int, error: BaseException) -> None:
        """Request `seq` will never be complete (its client stopped sending
        mid-body): forget its response if nothing of it was sent, so the
        ones before it can still finish; else the connection must close."""
        out = self._queue.get(seq)
        if out is None or out.ended:
            return
        if out.started:
            self.close(error)
            return
        del self._queue[seq]
        self._held -= sum(len(p) for p in out.parts)
        self.on_abort(ResponseAbort(seq, error))
        if self.on_idle is not None:
            self.on_idle()

    def close(self, error: BaseException | None) -> None:
        """Close the connection after what is written; every response not
        finished is aborted (with `error`, or a StreamAborted)."""
        if self._closed:
            return
        self._closed = True
        queue, self._queue = self._queue, {}
        self._held = 0
        exc = StreamAborted("connection closed before the response was complete", error)
        for out in queue.values():
            if not out.ended:
                self.on_abort(ResponseAbort(out.seq, exc))
        if not self.conn.closing:
            if error is None:
                self.conn.close()
            else:
                self.conn.abort(error if isinstance(error, Exception) else None)


# -- wiring the stages to one Conn ------------------------------------------------


class HandleStage(Protocol):
    """What HttpConnection needs of its handle stage: a HandlerStage, or
    (evloop.graph.http) a feed onto a service graph's ports."""

    def feed(self, msg: RequestMessage | ResponseAbort) -> None: ...

    def abort_all(self, error: BaseException) -> None: ...


class HttpConnection:
    """The three stages on one Conn, in-process: bytes -> parse -> handle
    -> respond -> bytes. See the module header."""

    __slots__ = (
        "conn", "parser", "handler", "responder", "max_pipeline", "header_timeout",
        "_timer", "_paused", "_in_feed", "_eof",
    )  # fmt: skip

    def __init__(
        self,
        conn: Conn,
        handler: Handler,
        *,
        max_header: int = DEFAULT_MAX_HEADER,
        max_body: int = DEFAULT_MAX_BODY,
        max_pipeline: int = DEFAULT_MAX_PIPELINE,
        header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
        stage: HandleStage | None = None,
    ):
        self.conn = conn
        loop = conn.loop
        self.responder = Responder(conn, on_abort=self._response_aborted)
        # `stage`: the seam for evloop.graph.http, whose handle stage is a
        # servlet reached over ports (it ignores `handler`).
        self.handler: HandleStage = stage or HandlerStage(
            handler,
            self.responder.feed,
            on_error=loop.call_exception_handler,
            writable=lambda: conn.writable,
            when_writable=conn.when_writable,
        )
        self.parser = HttpRequestParser(self._on_request, max_header=max_header, max_body=max_body)
        self.max_pipeline = max_pipeline
        self.header_timeout = header_timeout
        self._timer: TimerHandle | None = None
        self._paused = False
        self._in_feed = False
        self._eof = False
        self.responder.on_idle = self._on_response_done
        # Reading pauses on purpose while the pipelining window is full: a
        # full read buffer then is back-pressure, not a stalled parser.
        conn.on_read_limit = _ignore
        conn.on_data = self._on_data
        conn.on_close = self._on_close
        conn.on_eof = self._on_eof

    def _on_request(self, msg: RequestMessage) -> None:
        if type(msg) is RequestHead:
            assert isinstance(msg, RequestHead)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.responder.expect(msg)
            if msg.expect_continue and msg.body != "none" and self.responder.pending == 1:
                self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.handler.feed(msg)

    def _response_aborted(self, msg: ResponseAbort) -> None:
        self.handler.feed(msg)

    def _on_data(self, conn: Conn) -> None:
        if self._in_feed:
            return
        parser = self.parser
        if parser.done:
            conn.consume(conn.read_buffered)  # after a close-ending request: not ours
            return
        window = self.max_pipeline - self.responder.pending
        self._in_feed = True
        try:
            parser.feed(conn, window)
        except HttpError as exc:
            self._refuse(exc)
            return
        finally:
            self._in_feed = False
        if conn.closing:
            return
        if self.responder.pending >= self.max_pipeline and parser.in_head and conn.read_buffered:
            # The window is full: let the kernel hold the rest.
            self._paused = True
            conn.pause_reading()
        elif parser.in_head and conn.read_buffered and self._timer is None and self.header_timeout:
            self._timer = conn.loop.call_later(self.header_timeout, self._header_timeout)

    def _on_response_done(self) -> None:
        if self._eof and not self.responder.pending:
            self.conn.close()  # the client has stopped sending and has every answer
            return
        if self._paused and self.responder.pending < self.max_pipeline:
            self._paused = False
            self.conn.resume_reading()  # shows the buffered bytes again

    def _header_timeout(self) -> None:
        self._timer = None
        if not self.conn.closing and self.parser.in_head and self.conn.read_buffered:
            self._refuse(
                HttpError(408, f"request head not complete within {self.header_timeout:g} s")
            )

    def _refuse(self, exc: HttpError) -> None:
        # The stream is out of step: answer (once the responses before it
        # are out) and close. The request being parsed, if any, is aborted.
        parser = self.parser
        parser._done = True
        if not parser.in_head:
            self.handler.feed(RequestAbort(parser.seq - 1, exc))
        body = f"{exc}\n".encode()
        seq = parser.seq
        parser.seq += 1
        head = RequestHead(seq, b"GET", b"", b"HTTP/1.1", [], False, "none", 0, False)
        self.responder.expect(head)
        self.responder.feed(
            ResponseHead(seq, exc.status, REASONS.get(exc.status, ""),
                         [(b"content-type", b"text/plain"), (b"connection", b"close")], body)
        )  # fmt: skip
        n = self.conn.read_buffered
        if n:
            self.conn.consume(n)

    def _on_eof(self, conn: Conn) -> bool:
        # The client will send nothing more. A request cut off mid-way is
        # broken; finished ones still get their responses (half-close).
        self._eof = True
        if not self.parser.in_head:
            aborted = StreamAborted("the client closed its side in the middle of a request")
            seq = self.parser.seq - 1
            self.parser._done = True
            self.handler.feed(RequestAbort(seq, aborted))
            self.responder.drop(seq, aborted)
        if self.responder.pending:
            return True  # keep writing: close once the responses are out
        return False

    def _on_close(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.responder._closed = True
        if exc is None:
            error = StreamAborted("connection closed")
        elif isinstance(exc, StreamAborted):
            error = exc
        else:
            error = StreamAborted(f"connection lost: {exc!r}", exc)
        self.handler.abort_all(error)


def _ignore(_conn: Conn) -> None:
    return None


def http_server(handler: Handler, **options: Any) -> Callable[[Conn], HttpConnection]:
    """An on_conn for listen_tcp(): serve HTTP with `handler` on every
    accepted Conn (options as HttpConnection takes them)."""

    def on_conn(conn: Conn) -> HttpConnection:
        return HttpConnection(conn, handler, **options)

    return on_conn
