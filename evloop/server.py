# evloop/server.py
#
# Listeners, outgoing connects and socketpairs, all producing Conns on a Loop.
#
# A listener accepts in a loop until EAGAIN on each readiness event (the
# kernel's backlog is drained in one turn, up to `accept_batch`). On
# EMFILE/ENFILE (out of fds) or ENOBUFS/ENOMEM it stops watching the
# listening socket and tries again after `emfile_retry` seconds: a level-
# triggered listener that cannot accept would otherwise spin the loop at 100%.
#
# A Server remembers the Conns it accepted (weakly: a closed Conn nobody
# holds is gone), so that shutdown() can stop accepting, ask each live Conn
# to finish (by default close(): flush what is queued, then close), and abort
# whatever is still open at the deadline. The Conns are made by
# `conn_factory(loop, sock, **conn_kwargs)`, Conn by default, so a TLS or
# protocol-specific subclass plugs in.
#
# connect_*() is non-blocking: the socket is connected with connect_ex(), the
# Conn is handed over once EPOLLOUT reports the result (SO_ERROR), and a timer
# turns a connect that takes too long into a ConnectError.
"""Listeners (TCP, Unix), non-blocking connects and socketpairs, all producing Conns on a Loop. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import errno
import os
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .conn import Conn
from .errors import ConnectError
from .loop import EVENT_READ, EVENT_WRITE, Loop, TimerHandle

__all__ = [
    "Server", "ServerStatistics", "listen_tcp", "listen_unix", "connect_tcp", "connect_unix",
    "conn_pair",
]  # fmt: skip

_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class ServerStatistics:
    accepted: int  # connections accepted in all
    live: int  # accepted Conns not closed yet
    resource_errors: int  # accepts that failed for lack of fds or memory
    accepting: bool


class Server:
    """A listening socket on a Loop; on_conn(conn) is called for each accepted
    connection, with the Conn built by `conn_factory(loop, sock,
    **conn_kwargs)` (default: Conn). conn_kwargs go to every Conn (for
    example read_limit, high_water, idle_timeout). A context manager:
    leaving the block closes the listening socket."""

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        on_conn: Callable[[Conn], Any],
        *,
        accept_batch: int = 256,
        emfile_retry: float = 0.1,
        conn_kwargs: dict[str, Any] | None = None,
        conn_factory: Callable[..., Conn] | None = None,
        on_accept_error: Callable[[OSError], Any] | None = None,
    ):
        sock.setblocking(False)
        self.loop = loop
        self._sock: socket.socket | None = sock
        self._name = _describe(sock)
        self.on_conn = on_conn
        self.accept_batch = accept_batch
        self.emfile_retry = emfile_retry
        self.conn_kwargs = conn_kwargs or {}
        self.conn_factory: Callable[..., Conn] = conn_factory or Conn
        self.on_accept_error = on_accept_error
        self._retry: TimerHandle | None = None
        self._conns: weakref.WeakSet[Conn] = weakref.WeakSet()
        self._shutdown_timer: TimerHandle | None = None
        self._shutdown_callbacks: list[Callable[[Server], Any]] | None = None
        self.accepted = 0
        self.resource_errors = 0
        self._unlink_path: str | None = None
        loop.register(sock.fileno(), EVENT_READ, self._on_readable)
        loop.adopt(self)

    @property
    def sockname(self) -> Any:
        if self._sock is None:
            raise OSError(errno.EBADF, "server is closed")
        return self._sock.getsockname()

    @property
    def port(self) -> int:
        return int(self.sockname[1])

    @property
    def closed(self) -> bool:
        return self._sock is None

    @property
    def accepting(self) -> bool:
        return self._sock is not None and self._retry is None

    def _on_readable(self, _mask: int) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(self.accept_batch):
            try:
                conn_sock, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued: not our problem
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    self.resource_errors += 1
                    self._back_off()
                if self.on_accept_error is not None:
                    self.on_accept_error(exc)
                return
            self.accepted += 1
            try:
                conn = self.conn_factory(self.loop, conn_sock, **self.conn_kwargs)
            except BaseException:
                conn_sock.close()
                raise
            self._conns.add(conn)
            self.on_conn(conn)

    def _back_off(self) -> None:
        assert self._sock is not None
        self.loop.unregister(self._sock.fileno())
        self._retry = self.loop.call_later(self.emfile_retry, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if self._sock is not None:
            self.loop.register(self._sock.fileno(), EVENT_READ, self._on_readable)

    def connections(self) -> list[Conn]:
        """The accepted Conns that are not closed yet."""
        return [c for c in self._conns if not c.closed]

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            self.accepted, len(self.connections()), self.resource_errors, self.accepting
        )

    def shutdown(
        self,
        deadline: float = 10.0,
        callback: Callable[[Server], Any] | None = None,
        *,
        drain: Callable[[Conn], Any] | None = None,
    ) -> None:
        """Stop accepting now, ask every live accepted Conn to finish with
        drain(conn) (default: conn.close(), which flushes what is queued and
        then closes), and abort those still open after `deadline` seconds.
        callback(server) runs once every accepted Conn is closed."""
        if callback is not None:
            if self._shutdown_callbacks is None:
                self._shutdown_callbacks = []
            self._shutdown_callbacks.append(callback)
        if self._shutdown_timer is not None:
            return  # already shutting down: the callback joins the wait
        self.close()
        for conn in self.connections():
            conn.when_closed(self._conn_gone)
            try:
                (drain or Conn.close)(conn)
            except Exception as exc:
                self.loop.call_exception_handler(exc, drain)
                conn.abort(exc)
        self._shutdown_timer = self.loop.call_later(deadline, self._shutdown_expired)
        self._conn_gone()

    def _conn_gone(self) -> None:
        if self._shutdown_timer is None or self.connections():
            return
        self._shutdown_timer.cancel()
        callbacks, self._shutdown_callbacks = self._shutdown_callbacks or [], []
        for fn in callbacks:
            self.loop.call_soon(fn, self)

    def _shutdown_expired(self) -> None:
        for conn in self.connections():
            conn.abort()
        self._conn_gone()

    def close(self) -> None:
        """Stop listening and close the socket (accepted Conns live on: see
        shutdown())."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.loop.unregister(sock.fileno())
        sock.close()
        self.loop.disown(self)
        if self._unlink_path is not None:
            try:
                os.unlink(self._unlink_path)
            except FileNotFoundError:
                pass

    abort = close

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = (
            "closed" if self._sock is None else ("listening" if self.accepting else "backing off")
        )
        return (
            f"<Server {self._name} {state} accepted={self.accepted} live={len(self.connections())}>"
        )


def _describe(sock: socket.socket) -> str:
    try:
        name = sock.getsockname()
    except OSError:
        return "?"
    if sock.family == socket.AF_UNIX:
        return f"unix:{name or '(unnamed)'}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    return f"{name[0]}:{name[1]}"


def listen_tcp(
    loop: Loop,
    host: str,
    port: int,
    on_conn: Callable[[Conn], Any],
    *,
    backlog: int = 1024,
    reuse_port: bool = False,
    **kwargs: Any,
) -> Server:
    """Listen on host:port (port 0 picks a free one: see Server.port). The
    keyword arguments go to Server: conn_kwargs (for every accepted Conn),
    conn_factory, accept_batch, emfile_retry, on_accept_error."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_ | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(backlog)
        return Server(loop, sock, on_conn, **kwargs)
    except BaseException:
        sock.close()
        raise


def listen_unix(
    loop: Loop, path: str, on_conn: Callable[[Conn], Any], *, backlog: int = 1024, **kwargs: Any
) -> Server:
    """Listen on a Unix socket path; the path is unlinked when the Server closes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        sock.listen(backlog)
        server = Server(loop, sock, on_conn, **kwargs)
    except BaseException:
        sock.close()
        raise
    server._unlink_path = path
    return server


def _connect(
    loop: Loop,
    sock: socket.socket,
    addr: Any,
    callback: Callable[[Conn | None, BaseException | None], Any],
    timeout: float | None,
    conn_kwargs: dict[str, Any],
    conn_factory: Callable[..., Conn] = Conn,
) -> None:
    sock.setblocking(False)
    fd = sock.fileno()
    err = sock.connect_ex(addr)
    # For AF_UNIX, EAGAIN is not "in progress" but "the listener's backlog is
    # full": the socket is not connecting and never will.
    in_progress = (
        (errno.EINPROGRESS,) if sock.family == socket.AF_UNIX else (errno.EINPROGRESS, errno.EAGAIN)
    )
    if err != 0 and err not in in_progress:
        sock.close()
        exc = OSError(err, os.strerror(err))
        error = ConnectError(f"connect to {addr!r} failed: {exc.strerror}")
        error.__cause__ = exc
        loop.call_soon(callback, None, error)
        return
    timer: TimerHandle | None = None
    done = False

    def finish(conn: Conn | None, exc: BaseException | None) -> None:
        nonlocal done
        done = True
        if timer is not None:
            timer.cancel()
        loop.disown(pending)
        callback(conn, exc)

    def on_writable(_mask: int) -> None:
        if done:
            return
        loop.unregister(fd)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not err:
            try:
                sock.getpeername()  # writable and no error, but connected?
            except OSError as exc:
                err = exc.errno or errno.ENOTCONN
        if err:
            sock.close()
            cause = OSError(err, os.strerror(err))
            error = ConnectError(f"connect to {addr!r} failed: {cause.strerror}")
            error.__cause__ = cause
            finish(None, error)
            return
        try:
            conn = conn_factory(loop, sock, **conn_kwargs)
        except BaseException as exc:
            sock.close()
            finish(None, exc)
            return
        finish(conn, None)

    def on_timeout() -> None:
        if done:
            return
        loop.unregister(fd)
        sock.close()
        error = ConnectError(f"connect to {addr!r} timed out after {timeout} s")
        error.__cause__ = TimeoutError(errno.ETIMEDOUT, "connect timed out")
        finish(None, error)

    class _Pending:
        # Lets Loop.close() release a connect still in flight.
        def abort(self) -> None:
            nonlocal done
            if not done:
                done = True
                if timer is not None:
                    timer.cancel()
                loop.unregister(fd)
                sock.close()

    pending = _Pending()
    loop.adopt(pending)
    loop.register(fd, EVENT_WRITE, on_writable)
    if timeout is not None:
        timer = loop.call_later(timeout, on_timeout)


def connect_tcp(
    loop: Loop,
    host: str,
    port: int,
    callback: Callable[[Conn | None, BaseException | None], Any],
    *,
    timeout: float | None = 10.0,
    nodelay: bool = True,
    conn_factory: Callable[..., Conn] = Conn,
    **conn_kwargs: Any,
) -> None:
    """Connect without blocking; callback(conn, None) on success or
    callback(None, ConnectError) on failure or timeout. The Conn is
    conn_factory(loop, sock, **conn_kwargs) (Conn by default; a TLS client
    factory from evloop.tls, say). Name resolution uses getaddrinfo() and
    may block: pass a numeric address on hot paths."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        error = ConnectError(f"cannot resolve {host!r}: {exc}")
        error.__cause__ = exc
        loop.call_soon(callback, None, error)
        return
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_ | socket.SOCK_CLOEXEC, proto)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _connect(loop, sock, addr, callback, timeout, conn_kwargs, conn_factory)


def connect_unix(
    loop: Loop,
    path: str,
    callback: Callable[[Conn | None, BaseException | None], Any],
    *,
    timeout: float | None = 10.0,
    **conn_kwargs: Any,
) -> None:
    """connect_tcp() for a Unix socket path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    _connect(loop, sock, path, callback, timeout, conn_kwargs)


def conn_pair(loop: Loop, **conn_kwargs: Any) -> tuple[Conn, Conn]:
    """Two Conns on the two ends of a fresh AF_UNIX socketpair."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        return Conn(loop, a, **conn_kwargs), Conn(loop, b, **conn_kwargs)
    except BaseException:
        a.close()
        b.close()
        raise
