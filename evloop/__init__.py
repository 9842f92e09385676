"""evloop: a single-threaded epoll event loop, framed Pipes and supervised
worker processes for Python on Linux. See README.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .conn import Conn, ConnStatistics
from .daemon import run_daemon
from .errors import (
    AuthenticationError,
    BufferFullError,
    CancelledError,
    ConnClosedError,
    ConnectError,
    EvloopError,
    FdPassingError,
    IdleTimeoutError,
    InjectedFault,
    InvalidStateError,
    KeepaliveTimeout,
    LoopClosedError,
    LoopRunningError,
    PoolClosedError,
    ProtocolError,
    ReadLimitError,
    RemoteError,
    RequestCancelled,
    RequestTimeout,
    SessionError,
    SessionProtocolError,
    SessionReset,
    SpawnError,
    TruncatedFrameError,
    UnroutableFrame,
    WorkerCrashed,
    WorkerError,
)
from .future import Future
from .loop import EVENT_READ, EVENT_WRITE, Handle, Loop, LoopStatistics, TimerHandle
from .pipe import DEFAULT_MAX_LEN, HEADER_SIZE, Pipe, PipeStatistics
from .pool import Pool, PoolStatistics, Reply, Request, serve
from .server import (
    Server,
    ServerStatistics,
    conn_pair,
    connect_tcp,
    connect_unix,
    listen_tcp,
    listen_unix,
)
from .spawn import Worker, spawn

__version__ = "0.1.0"

# evloop.session is imported on first use, not by `import evloop`: a worker
# process imports evloop at start-up and should not pay for the messenger.
if TYPE_CHECKING:
    from .session import (
        SESSION_CHANNEL,
        Messenger,
        MessengerStatistics,
        Policy,
        Session,
        SessionStatistics,
        Throttle,
    )
else:
    _SESSION_NAMES = frozenset(
        ("Messenger", "MessengerStatistics", "Session", "SessionStatistics", "Policy",
         "Throttle", "SESSION_CHANNEL")
    )  # fmt: skip

    def __getattr__(name: str) -> object:
        if name in _SESSION_NAMES:
            from . import session

            return getattr(session, name)
        raise AttributeError(f"module 'evloop' has no attribute {name!r}")


__all__ = [
    "Loop", "Handle", "TimerHandle", "LoopStatistics", "EVENT_READ", "EVENT_WRITE",
    "Conn", "ConnStatistics", "Pipe", "PipeStatistics", "HEADER_SIZE", "DEFAULT_MAX_LEN",
    "spawn", "Worker", "Pool", "Request", "PoolStatistics", "serve", "Reply",
    "Server", "ServerStatistics", "run_daemon", "listen_tcp", "listen_unix", "connect_tcp", "connect_unix", "conn_pair",
    "EvloopError", "LoopClosedError", "LoopRunningError", "ConnClosedError", "BufferFullError",
    "ReadLimitError", "IdleTimeoutError", "FdPassingError", "ConnectError", "ProtocolError", "TruncatedFrameError", "UnroutableFrame", "WorkerError", "SpawnError",
    "WorkerCrashed", "RemoteError", "RequestTimeout", "PoolClosedError", "RequestCancelled",
    "InvalidStateError", "CancelledError", "Future",
    "Messenger", "MessengerStatistics", "Session", "SessionStatistics", "Policy", "Throttle",
    "SESSION_CHANNEL", "SessionError", "SessionProtocolError", "AuthenticationError",
    "KeepaliveTimeout", "SessionReset", "InjectedFault",
]  # fmt: skip
