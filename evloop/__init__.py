"""evloop: a single-threaded epoll event loop, framed Pipes and supervised
worker processes for Python on Linux. See README.md."""

from __future__ import annotations

from .conn import Conn, ConnStatistics
from .errors import (
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
    IncompleteReadError,
    InvalidStateError,
    LinkProtocolError,
    LoopClosedError,
    LoopRunningError,
    LoopStoppedError,
    PoolClosedError,
    ProtocolError,
    ReadLimitError,
    RemoteError,
    RequestCancelled,
    RequestTimeout,
    SpawnError,
    TaskGroupError,
    TruncatedFrameError,
    Unroutable,
    UnroutableFrame,
    WorkerCrashed,
    WorkerError,
    WouldBlock,
)
from .future import Future
from .loop import EVENT_READ, EVENT_WRITE, Handle, Loop, LoopStatistics, TimerHandle
from .mempipe import MemPipe, mempipe_pair
from .pipe import DEFAULT_MAX_LEN, HEADER_SIZE, Pipe, PipeStatistics
from .pool import Pool, PoolStatistics, Reply, Request, serve
from .server import Server, conn_pair, connect_tcp, connect_unix, listen_tcp, listen_unix
from .spawn import Worker, spawn
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

__version__ = "0.1.0"

__all__ = [
    "Loop", "Handle", "TimerHandle", "LoopStatistics", "EVENT_READ", "EVENT_WRITE",
    "Conn", "ConnStatistics", "Pipe", "PipeStatistics", "HEADER_SIZE", "DEFAULT_MAX_LEN",
    "spawn", "Worker", "Pool", "Request", "PoolStatistics", "serve", "Reply",
    "Server", "listen_tcp", "listen_unix", "connect_tcp", "connect_unix", "conn_pair",
    "EvloopError", "LoopClosedError", "LoopRunningError", "ConnClosedError", "BufferFullError",
    "ReadLimitError", "ConnectError", "ProtocolError", "TruncatedFrameError", "UnroutableFrame", "WorkerError", "SpawnError",
    "WorkerCrashed", "RemoteError", "RequestTimeout", "PoolClosedError", "RequestCancelled",
    "InvalidStateError", "CancelledError", "Future",
    "run", "run_until_complete", "create_task", "Task", "TaskGroup", "CancelScope", "sleep",
    "move_on_after", "move_on_at", "fail_after", "fail_at", "MemPipe", "mempipe_pair",
    "DeadlineExceeded", "LoopStoppedError", "WouldBlock", "TaskGroupError", "IncompleteReadError",
    "ChannelError", "EndOfChannel", "BrokenChannelError", "ChannelFailed", "ClosedChannelError",
    "Unroutable", "LinkProtocolError",
]  # fmt: skip
