# evloop/errors.py
#
# Every exception evloop raises on purpose lives here, under one root,
# EvloopError, so a daemon can catch "anything evloop complained about" in one
# clause. A wrapped OSError is always raised `from` the original so the errno
# and its traceback are kept.
from __future__ import annotations


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
