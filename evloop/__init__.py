"""evloop: a single-threaded epoll event loop, framed Pipes and supervised
worker processes for Python on Linux. See README.md."""

from __future__ import annotations

from ._implementation import ComponentImplementation, Implementation, implementation
from .conn import Conn, ConnStatistics
from .errors import (
    BufferFullError,
    ConnClosedError,
    ConnectError,
    EvloopError,
    InvalidStateError,
    LoopClosedError,
    LoopRunningError,
    PoolClosedError,
    ProtocolError,
    ReadLimitError,
    RemoteError,
    RequestCancelled,
    RequestTimeout,
    SpawnError,
    TruncatedFrameError,
    WorkerCrashed,
    WorkerError,
)
from .loop import EVENT_READ, EVENT_WRITE, Handle, Loop, LoopStatistics, TimerHandle
from .pipe import DEFAULT_MAX_LEN, HEADER_SIZE, Pipe, PipeStatistics
from .pool import Pool, PoolStatistics, Reply, Request, serve
from .server import Server, conn_pair, connect_tcp, connect_unix, listen_tcp, listen_unix
from .spawn import Worker, spawn

__version__ = "0.1.0"

__all__ = [
    "Loop", "Handle", "TimerHandle", "LoopStatistics", "EVENT_READ", "EVENT_WRITE",
    "Conn", "ConnStatistics", "Pipe", "PipeStatistics", "HEADER_SIZE", "DEFAULT_MAX_LEN",
    "spawn", "Worker", "Pool", "Request", "PoolStatistics", "serve", "Reply",
    "Server", "listen_tcp", "listen_unix", "connect_tcp", "connect_unix", "conn_pair",
    "EvloopError", "LoopClosedError", "LoopRunningError", "ConnClosedError", "BufferFullError",
    "ReadLimitError", "ConnectError", "ProtocolError", "TruncatedFrameError", "WorkerError", "SpawnError",
    "WorkerCrashed", "RemoteError", "RequestTimeout", "PoolClosedError", "RequestCancelled",
    "InvalidStateError",
    "implementation", "Implementation", "ComponentImplementation",
]  # fmt: skip
