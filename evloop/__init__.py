"""evloop: a single-threaded epoll event loop, framed Pipes and supervised
worker processes for Python on Linux. See README.md.

`evloop.spawn` is the module evloop/spawn.py (so `import evloop.spawn` gives
the module); the function is `evloop.spawn.spawn`, also exported as
`evloop.spawn_worker`. Calling the module, `evloop.spawn(loop, target)`,
still calls the function, for code written before."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import spawn
from ._implementation import ComponentImplementation, Implementation, implementation
from .conn import Conn, ConnStatistics
from .daemon import run_daemon
from .errors import (
    AuthenticationError,
    BrokenChannelError,
    BufferFullError,
    CancelledError,
    ChannelError,
    ChannelFailed,
    ClosedChannelError,
    ConnClosedError,
    ConnectError,
    DeadlineExceeded,
    EndOfChannel,
    EvloopError,
    FdPassingError,
    FlowAborted,
    GraphError,
    GraphStopped,
    GraphSyntaxError,
    HttpError,
    IdleTimeoutError,
    IncompleteReadError,
    InjectedFault,
    InvalidStateError,
    KeepaliveTimeout,
    LinkProtocolError,
    LoopClosedError,
    LoopRunningError,
    LoopStoppedError,
    PayloadError,
    PoolClosedError,
    PortDefinitionError,
    PortError,
    PortFlagError,
    ProtocolError,
    ReadLimitError,
    RemoteError,
    RequestCancelled,
    RequestTimeout,
    RespProtocolError,
    ServletCrashed,
    ServletError,
    SessionError,
    SessionProtocolError,
    SessionReset,
    SpawnError,
    StreamAborted,
    TargetError,
    TaskGroupError,
    TLSError,
    TruncatedFrameError,
    Unroutable,
    UnroutableFrame,
    WorkerBootError,
    WorkerCrashed,
    WorkerError,
    WorkerHung,
    WouldBlock,
)
from .future import Future
from .loop import EVENT_READ, EVENT_WRITE, Handle, Loop, LoopStatistics, TimerHandle
from .mempipe import MemPipe, mempipe_pair
from .pipe import DEFAULT_MAX_LEN, HEADER_SIZE, Pipe, PipeStatistics
from .pool import Pool, PoolStatistics
from .rpc import Client, Reply, Request, serve
from .server import (
    Server,
    ServerStatistics,
    conn_pair,
    connect_tcp,
    connect_unix,
    listen_tcp,
    listen_unix,
)
from .spawn import Worker
from .spawn import spawn as spawn_worker
from .tasks import (
    CancelScope,
    Task,
    TaskGroup,
    create_task,
    fail_after,
    fail_at,
    move_on_after,
    move_on_at,
    run,
    run_until_complete,
    sleep,
)

# Imported on first use, not by `import evloop`: evloop.worker is the child
# runtime, run as `python -m evloop.worker` (importing it with the package
# would make runpy warn in every worker), and a worker process imports
# evloop at start-up and should not pay for the messenger.
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
    from .worker import WorkerContext

_SESSION_NAMES = frozenset(
    ("Messenger", "MessengerStatistics", "Session", "SessionStatistics", "Policy",
     "Throttle", "SESSION_CHANNEL")
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name == "WorkerContext":
        from .worker import WorkerContext

        return WorkerContext
    if name in _SESSION_NAMES:
        from . import session

        return getattr(session, name)
    raise AttributeError(f"module 'evloop' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Loop", "Handle", "TimerHandle", "LoopStatistics", "EVENT_READ", "EVENT_WRITE",
    "Conn", "ConnStatistics", "Pipe", "PipeStatistics", "HEADER_SIZE", "DEFAULT_MAX_LEN",
    "spawn", "spawn_worker", "Worker", "WorkerContext", "Pool", "Request", "PoolStatistics",
    "serve", "Reply", "Client",
    "Server", "ServerStatistics", "run_daemon", "listen_tcp", "listen_unix", "connect_tcp",
    "connect_unix", "conn_pair",
    "EvloopError", "LoopClosedError", "LoopRunningError", "ConnClosedError", "BufferFullError",
    "ReadLimitError", "IdleTimeoutError", "FdPassingError", "ConnectError", "ProtocolError",
    "TruncatedFrameError", "UnroutableFrame", "WorkerError", "SpawnError",
    "WorkerCrashed", "RemoteError", "RequestTimeout", "PoolClosedError", "RequestCancelled",
    "InvalidStateError", "CancelledError", "Future", "TargetError", "WorkerHung",
    "WorkerBootError", "PayloadError",
    "RespProtocolError", "HttpError", "StreamAborted", "TLSError",
    "implementation", "Implementation", "ComponentImplementation",
    "run", "run_until_complete", "create_task", "Task", "TaskGroup", "CancelScope", "sleep",
    "move_on_after", "move_on_at", "fail_after", "fail_at", "MemPipe", "mempipe_pair",
    "DeadlineExceeded", "LoopStoppedError", "WouldBlock", "TaskGroupError", "IncompleteReadError",
    "ChannelError", "EndOfChannel", "BrokenChannelError", "ChannelFailed", "ClosedChannelError",
    "Unroutable", "LinkProtocolError",
    "Messenger", "MessengerStatistics", "Session", "SessionStatistics", "Policy", "Throttle",
    "SESSION_CHANNEL", "SessionError", "SessionProtocolError", "AuthenticationError",
    "KeepaliveTimeout", "SessionReset", "InjectedFault",
    "GraphError", "GraphSyntaxError", "PortError", "PortDefinitionError", "PortFlagError",
    "FlowAborted", "ServletCrashed", "ServletError", "GraphStopped",
]  # fmt: skip
