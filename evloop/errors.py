# evloop/errors.py
#
# Every exception evloop raises on purpose lives here, under one root,
# EvloopError, so a daemon can catch "anything evloop complained about" in one
# clause. A wrapped OSError is always raised `from` the original so the errno
# and its traceback are kept.
"""Every exception evloop raises on purpose, under one root: EvloopError (and CancelledError). The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import sys
from collections.abc import Sequence


class EvloopError(Exception):
    """Root of every exception evloop raises on purpose."""


class LoopClosedError(EvloopError, RuntimeError):
    """Raised when something is scheduled on, or registered with, a Loop that
    has been closed, or when a closed Loop is run again."""


class LoopRunningError(EvloopError, RuntimeError):
    """Raised when `run()` is called on a Loop that is already running, or
    `close()` is called from inside one of its own callbacks."""


class ConnClosedError(EvloopError, ConnectionError):
    """Raised by `Conn.write()` (and everything built on it) when the Conn is
    already closed, closing, or its write side was shut down. `reason` holds
    the exception that closed it, if there was one."""

    def __init__(self, msg: str = "connection is closed", reason: BaseException | None = None):
        super().__init__(msg)
        self.reason = reason


class BufferFullError(EvloopError, BufferError):
    """Raised by `Conn.write()` when accepting the data would push the write
    buffer past its hard cap (`write_cap`). Nothing of the refused write is
    queued; the Conn stays open. Producers should watch the high/low
    watermarks (`on_pause_writing` / `on_resume_writing`) to avoid this."""


class ReadLimitError(EvloopError, ValueError):
    """Raised by `Conn.read_until()` / `readline()` when `limit` bytes are
    buffered and no delimiter was found among them; and the error a Conn
    closes with (passed to `on_close`) when its read buffer reached
    `read_limit` while the consumer took none of it and no `on_read_limit`
    hook was set: a stalled reader says so instead of hanging."""


class IdleTimeoutError(EvloopError, TimeoutError):
    """The error a Conn closes with (passed to `on_close`) when no byte was
    received or sent for its `idle_timeout` seconds; `timeout` holds that
    setting."""

    def __init__(self, msg: str, *, timeout: float):
        super().__init__(msg)
        self.timeout = timeout


class FdPassingError(EvloopError, OSError):
    """A message carried more file descriptors (SCM_RIGHTS) than a Conn with
    `receive_fds=True` has room for, so the kernel closed the extra ones
    (MSG_CTRUNC): the fd hand-off is lost, and the Conn closes with this
    error rather than hide it."""


class ConnectError(EvloopError, ConnectionError):
    """Raised or reported when a non-blocking connect fails or times out; the
    underlying OSError (or TimeoutError) is its `__cause__`."""


class ProtocolError(EvloopError, ValueError):
    """A peer sent a frame header evloop refuses: a length of 0 or above the
    Pipe's maximum. The attributes name the channel, the length and the byte
    offset of the bad header in the Conn's input stream. The Pipe that saw it
    reports it to its error callback and closes its Conn; other Conns are
    untouched."""

    def __init__(self, msg: str, *, channel: int, length: int, offset: int):
        super().__init__(msg)
        self.channel = channel
        self.length = length
        self.offset = offset


class TruncatedFrameError(ProtocolError):
    """The stream ended (EOF) in the middle of a frame. `length` is the number
    of bytes of the incomplete frame that did arrive (header included),
    `offset` where it started in the stream, `channel` its channel, or -1
    when the header itself was cut."""


class UnroutableFrame(EvloopError, LookupError):
    """A frame arrived on a channel that nothing routes (a ChannelMux with no
    route and no default for it): reported to the loop's exception handler
    (or the mux's `on_unrouted`) instead of being dropped silently.
    `channel` is the frame's channel."""

    def __init__(self, msg: str, *, channel: int):
        super().__init__(msg)
        self.channel = channel


class WorkerError(EvloopError):
    """Root of the errors about spawned worker processes."""


class SpawnError(WorkerError, OSError):
    """Raised when a worker process cannot be started (bad target, exec
    failure, resource exhaustion)."""


class WorkerCrashed(WorkerError):
    """A request could not complete because the worker serving it exited.
    `worker` names the worker (its pid and index); `status` is its exit code,
    or the negated signal number when it was killed by a signal."""

    def __init__(self, msg: str, *, worker: str, status: int | None):
        super().__init__(msg)
        self.worker = worker
        self.status = status


class RemoteError(WorkerError):
    """The worker's function raised (at setup or in a later callback, which
    ends the worker), or a pool request handler raised (which fails only that
    request). `remote_type`, `remote_message` and `remote_traceback` carry the
    original exception's type name, message and formatted traceback text from
    the child."""

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str):
        super().__init__(f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class RequestTimeout(WorkerError, TimeoutError):
    """A pool request got no reply within its timeout."""


class RequestCancelled(WorkerError):
    """The error of a pool Request that was cancelled with `Request.cancel()`
    before its reply arrived: `result()` raises it and `exception()` returns
    it. A reply that arrives later is dropped."""


class InvalidStateError(EvloopError, RuntimeError):
    """Raised by `Future.result()`/`exception()` (a Request is a Future)
    while it is still pending (wait for `done()`, a done callback, or await
    it), and by `set_result()`/`set_exception()` on one already done."""


class CancelledError(BaseException):
    """The one evloop exception outside the EvloopError root, on purpose: it
    is what a cancelled Future's `result()` raises and what is thrown into a
    cancelled coroutine, and like asyncio's and trio's it derives from
    BaseException so that an `except Exception:` in user code cannot swallow
    a cancellation by accident."""


class PoolClosedError(WorkerError, RuntimeError):
    """Raised when work is submitted to a Pool that is shutting down or shut
    down, and the error of requests still outstanding when the shutdown
    deadline passes, when the pool has no worker left and may not restart
    one, when a replacement worker fails to start (the SpawnError is the
    `__cause__`), or when the Loop is closed under it."""


class TargetError(WorkerError, ValueError):
    """Raised by `spawn()` and `Pool()` before anything is started when the
    worker target cannot work: a malformed name, a lambda or nested function
    (a fresh interpreter cannot import it), or a module or function that does
    not exist. The existence check reads the module's source without running
    it; a module that fails while importing is reported by the worker as a
    RemoteError instead."""


class WorkerHung(WorkerCrashed):
    """The error of a pool request whose worker stopped answering: nothing
    came from it for the pool's `hang_timeout` while it owed an answer (a
    request or a heartbeat). The worker is killed and replaced; a WorkerHung
    is a WorkerCrashed, with `status` None (it had not exited yet)."""


class WorkerBootError(WorkerError):
    """Workers of a Pool failed to start `max_boot_failures` times in a row
    (each exited, or could not be spawned, before it was up), so the pool
    stopped restarting them and closed. `error` is the last worker's own
    report (a RemoteError with the child's traceback, or the SpawnError), also
    the `__cause__`; requests failed by it have it as their cause."""

    def __init__(self, msg: str, *, error: BaseException | None):
        super().__init__(msg)
        self.error = error


class PayloadError(WorkerError, ValueError):
    """A request or reply payload could not be decoded by the codec the Pool
    or serve() was given (`codec="json"`, ...): the request fails with it,
    the codec's own exception as the `__cause__`."""


class RespProtocolError(EvloopError, ValueError):
    """A client sent bytes that are not a RESP request evloop accepts: a
    malformed count or bulk header, a bulk longer than `max_bulk_len`, an
    array longer than `max_multibulk_len`, an inline line longer than
    `max_inline_len`, unbalanced quotes. Raised by `RespParser.parse()`; the
    message is Redis' wording, which RespConnection sends as "-ERR Protocol
    error: <message>" before it closes that connection (others are
    untouched)."""


class HttpError(EvloopError, ValueError):
    """A client sent an HTTP request evloop refuses. `status` is the answer
    it gets (400 malformed, 413 body too large, 431 header too large, 501
    unsupported transfer coding, 505 unsupported version) and the message
    says what was wrong. Raised by `HttpRequestParser.feed()`; the
    connection is answered with that status and closed, since the stream can
    no longer be trusted to be in step. Other connections are untouched."""

    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status = status


class StreamAborted(EvloopError, ConnectionError):
    """An HTTP request or response stream ended before it was complete
    because its connection died (the client reset, went away mid-body, or
    timed out) or an earlier stage failed. Passed to the handler's abort
    callback and raised by writes on a response that can no longer reach the
    client; `reason` holds the connection's error, if there was one."""

    def __init__(self, msg: str, reason: BaseException | None = None):
        super().__init__(msg)
        self.reason = reason


class TLSError(EvloopError, ConnectionError):
    """A TLS connection failed: the handshake was refused (bad certificate,
    no shared protocol or cipher, a client speaking plain text), it did not
    finish within `handshake_timeout`, or a record failed to decrypt. It is
    the error a TLS Conn closes with (passed to `on_close`), on that
    connection only; the ssl.SSLError is its `__cause__`, and `reason` holds
    OpenSSL's short reason code when there is one (e.g. "WRONG_VERSION_NUMBER")."""

    def __init__(self, msg: str, reason: str | None = None):
        super().__init__(msg)
        self.reason = reason


# -- coroutines (evloop.tasks) --------------------------------------------------


class DeadlineExceeded(EvloopError, TimeoutError):
    """Raised by `fail_after()`/`fail_at()` when the block's deadline passed
    before it finished (the block was cancelled at its next await), and by
    the primitives' `send(..., timeout=t)` / `recv(timeout=t)` for t > 0."""


class LoopStoppedError(EvloopError, RuntimeError):
    """Raised by `run_until_complete()` when the Loop was stopped (`stop()`)
    before the awaitable it was running completed."""


class WouldBlock(EvloopError):
    """Raised by a primitive's `send(..., timeout=0)` / `recv(timeout=0)`
    (the selectable API's "are you ready now?") when the operation cannot
    complete at once. Nothing was sent or received."""


if sys.version_info >= (3, 11):

    class TaskGroupError(ExceptionGroup, EvloopError):  # noqa: F821
        """Raised when a TaskGroup exits after one or more of its tasks (or
        its own body) raised: every error is in `exceptions`, in the order
        they happened. On Python 3.11+ it is an ExceptionGroup, so
        `except* ValueError:` works; on 3.10 it is a plain EvloopError with
        the same `exceptions` tuple and message."""

else:

    class TaskGroupError(EvloopError):
        """Raised when a TaskGroup exits after one or more of its tasks (or
        its own body) raised: every error is in `exceptions`, in the order
        they happened. On Python 3.11+ it is an ExceptionGroup, so
        `except* ValueError:` works; on 3.10 it is a plain EvloopError with
        the same `exceptions` tuple and message."""

        def __init__(self, message: str, exceptions: Sequence[BaseException]):
            super().__init__(message, tuple(exceptions))
            self.message = message
            self.exceptions = tuple(exceptions)

        def __str__(self) -> str:
            n = len(self.exceptions)
            return f"{self.message} ({n} sub-exception{'s' if n != 1 else ''})"


class IncompleteReadError(EvloopError, EOFError):
    """Raised by the awaitable `read_exactly()`/`read_until()` on a Conn when
    the stream ended (EOF or close) before the requested bytes arrived.
    `partial` holds the bytes that did arrive (left unconsumed in the Conn
    when it is still open); `expected` the count or delimiter waited for."""

    def __init__(self, msg: str, *, partial: bytes, expected: int | bytes):
        super().__init__(msg)
        self.partial = partial
        self.expected = expected


# -- message patterns (evloop.patterns) -----------------------------------------


class ChannelError(EvloopError):
    """Root of the errors of evloop.patterns' primitives."""


class EndOfChannel(ChannelError):
    """Raised by `recv()` once every sender closed in an orderly way and
    everything they sent was received: the stream ended, nothing failed."""


class BrokenChannelError(ChannelError):
    """Raised by `send()` when nobody can ever receive what it sends: the
    receiving side closed in an orderly way (or a remote peer went away).
    The item was not delivered."""


class ChannelFailed(ChannelError):
    """Raised on one side of a primitive when the other side closed it with
    an error (`close(exc)`, a failing `map`/`filter` function, a remote
    endpoint that broke): by `recv()` once the items sent before the failure
    were received, by `send()` at once. `cause` (also `__cause__`) is the
    error: the original exception in-process, a RemoteError across
    processes, or the endpoint's error."""

    def __init__(self, msg: str, cause: BaseException | None = None):
        super().__init__(msg)
        self.cause = cause
        self.__cause__ = cause


class ClosedChannelError(ChannelError):
    """Raised by `send()`/`recv()` on a primitive (or one end of it) that
    this side closed itself: using what you closed is a bug, not an end of
    stream."""


class Unroutable(ChannelError, LookupError):
    """Raised by `Router.reply()` when the sender the reply is addressed to
    is gone (closed, its process exited) or never existed: a reply is never
    dropped silently. `origin` is the address that could not be reached."""

    def __init__(self, msg: str, *, origin: object):
        super().__init__(msg)
        self.origin = origin


class LinkProtocolError(ChannelError, ValueError):
    """A peer sent a frame the pattern link protocol does not allow (an
    unknown kind byte, a short frame, an item without credit, an ack for
    nothing). The link is failed with it: both sides see ChannelFailed."""


class SessionError(EvloopError):
    """Root of the errors of evloop.session (messengers and their lossless
    sessions). `peer` names the peer's messenger address when it is known
    (an empty string before a handshake said who it is). `refused_by_peer`
    is True when the error is the peer's REFUSE of our handshake (the peer
    found the fault) rather than something we found ourselves."""

    def __init__(self, msg: str, *, peer: str = ""):
        super().__init__(msg)
        self.peer = peer
        self.refused_by_peer = False


class SessionProtocolError(SessionError, ValueError):
    """A peer broke the session protocol on the reserved session channel:
    a control frame of an unknown kind, a truncated or oversized one, a bad
    magic or version in the handshake, a data frame before the handshake
    finished, or an absurd sequence number (an ack for more messages than
    were sent, a resume point outside what is kept). Only the connection
    that carried it is closed; the error goes to the messenger's on_error
    (by default the loop's exception handler)."""


class AuthenticationError(SessionError, PermissionError):
    """The session handshake's challenge/response failed: the peer's HMAC
    did not match our shared key, or only one side has a key. Raised on
    both sides, before any message is delivered: the side that checked the
    proof refuses the connection (and reports this to on_error), the side
    that was refused reports it to on_refused. The session is not retried
    automatically: a wrong key is a configuration error."""


class KeepaliveTimeout(SessionError, TimeoutError):
    """Nothing arrived from the peer for `misses` keepalive intervals: the
    peer is declared dead, the connection is faulted (and, for a lossless
    session, reconnected). `timeout` is misses x interval in seconds."""

    def __init__(self, msg: str, *, peer: str = "", timeout: float):
        super().__init__(msg, peer=peer)
        self.timeout = timeout


class SessionReset(SessionError, ConnectionError):
    """A session was reset and its undelivered messages discarded:
    `dropped` says how many. Passed to on_reset when a lossy session loses
    its connection (the messages queued or in flight are dropped, as a lossy
    policy promises), and to on_refused when authentication failed."""

    def __init__(self, msg: str, *, peer: str = "", dropped: int = 0):
        super().__init__(msg, peer=peer)
        self.dropped = dropped


class InjectedFault(SessionError, ConnectionError):
    """The connection was dropped on purpose by the messenger's
    `inject_socket_failures` setting (every N messages sent): the fault a
    lossless session must survive without losing, duplicating or
    reordering a message."""


# -- the service graph (evloop.graph) --------------------------------------------


class GraphError(EvloopError):
    """Root of the service graph's errors (evloop.graph). Raised as itself
    when a graph cannot be loaded or started for a reason that is not about
    one port: a servlet named twice or not at all, a target that cannot be
    imported or is not a Servlet class, arguments a worker process cannot
    be given (not JSON), a placement other than "inprocess" or "worker", a
    servlet in a worker that tries to open flows, or a graph used in the
    wrong state (started twice, called after shutdown). `line` is the line
    of the text form the error is about (0: none, or the Python API)."""

    def __init__(self, msg: str, *, line: int = 0):
        super().__init__(msg)
        self.line = line


class GraphSyntaxError(GraphError, ValueError):
    """The text form of a graph could not be parsed: a line that is neither
    a `servlet` declaration nor an edge, a bad `key=value` argument, an
    unknown `@placement`. `line` is the 1-based line number and the message
    quotes the line and says what was expected there."""


class PortError(GraphError, ValueError):
    """A port is missing, mistyped or misused. At load time: an edge names a
    port that does not exist, goes from an INPUT or into an OUTPUT, connects
    a port twice, joins ports of different codecs, or a port is left
    unconnected. At run time: a servlet emits on an input or on a port it
    never defined. `servlet` and `port` name the port (None when unknown);
    the message names it as servlet.port, with the text form's line when
    there is one."""

    def __init__(
        self, msg: str, *, servlet: str | None = None, port: str | None = None, line: int = 0
    ):
        super().__init__(msg, line=line)
        self.servlet = servlet
        self.port = port


class PortDefinitionError(PortError):
    """Raised by `Servlet.define()`: called outside the servlet's init step
    (ports are declared in init only, as Plumber's pipe_define), a port name
    defined twice or not an identifier, flags that are not an int or have
    reserved bits, an unknown codec, or a companion that is not an input
    port defined before it."""


class PortFlagError(PortError):
    """Raised by an execution's flag operations (`Execution.set_flags`,
    `clear_flags`: Plumber's pipe_cntl): the direction bit of a port cannot
    change while it runs, bits outside the private and shared user masks
    (and PERSIST) cannot be set, and flags cannot change once the execution
    has returned."""


class FlowAborted(GraphError):
    """A flow (one request on its way through a service graph) was aborted
    before it completed. The servlet (or `RunningGraph.call`) that opened
    the flow is told with it: a call's Future fails with it, the TCP servlet
    closes the flow's connection. `flow` is the flow's id, `servlet` names
    the servlet that aborted it (None: the graph). Raised as itself when a
    servlet aborted the flow on purpose (`Execution.abort`)."""

    def __init__(self, msg: str, *, flow: int = 0, servlet: str | None = None):
        super().__init__(msg)
        self.flow = flow
        self.servlet = servlet


class ServletCrashed(FlowAborted):
    """The worker process of a servlet exited (was killed, crashed, was
    found hung) while the flow was in flight through it, or the servlet had
    no worker when the flow reached it (it was being restarted). The message
    names the servlet, the pid and the exit status. The graph does not send
    the flow again: the supervision restarts the process, and the next flows
    go to the new one (docs/graph.md, failure semantics)."""


class ServletError(FlowAborted):
    """A servlet raised while it handled a message of the flow (its exec).
    The flow is aborted; the servlet goes on serving other flows. For an
    in-process servlet the exception is the `__cause__`; from a worker
    process it is a RemoteError carrying the original's type, message and
    traceback."""


class GraphStopped(FlowAborted):
    """The graph was stopped with the flow still in flight: its shutdown
    deadline passed before the flow completed, or the graph was aborted."""
