# evloop/prefork.py
#
# Pre-forked TCP daemons: K worker processes share one port with
# SO_REUSEPORT, so the kernel spreads new connections over them and a
# connection never crosses a process boundary (no fd passing per accept, no
# thundering herd on one listening socket).
#
# The parent reserves the port first: it binds a SO_REUSEPORT socket to
# host:port (port 0 picks a free one) and never listens on it, so the port
# is known before any worker starts and stays ours while workers come and
# go; a socket that does not listen takes no connections. Each worker is a
# fresh interpreter (spawn()) that runs `target(loop, host, port, *args)`,
# which listens with listen_tcp(..., reuse_port=True) and returns its
# Server; the worker then says READY on its Pipe. serve_prefork() returns
# once every worker is ready; a worker that dies unexpectedly is restarted
# (after a short, growing delay), and one that fails at start-up fails
# serve_prefork() with its error.
#
# Shutdown: stop() sends STOP to every worker, which runs Server.shutdown()
# (stop accepting, let each connection finish) and exits when its last
# connection is gone or its deadline passes. Workers ignore SIGINT, so a
# terminal's Ctrl-C reaches the parent's run_daemon() only, which stops
# them in order.
from __future__ import annotations

import functools
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

from .errors import SpawnError
from .loop import Loop
from .pipe import Pipe
from .server import Server
from .spawn import Worker, spawn, target_name

__all__ = ["Prefork", "serve_prefork"]

log = logging.getLogger("evloop")

_CHAN = 1
_READY = b"R"
_STOP = b"S"
_RESTART_DELAY = (0.1, 5.0)  # first delay, cap (doubling)


def _worker_entry(
    loop: Loop, pipe: Pipe, target: str, host: str, port: int, deadline: float, args: list[Any]
) -> None:
    """Runs in each worker (see the module header)."""
    from .worker import import_target

    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the parent decides
    func = import_target(target)
    server: Server = func(loop, host, port, *args)

    def on_frame(chan: int, payload: Any) -> None:
        if chan == _CHAN and bytes(payload) == _STOP:
            server.shutdown(deadline, callback=lambda _s: pipe.close())

    pipe.on_frame = on_frame
    pipe.write_frame(_CHAN, _READY)


class Prefork:
    """K workers serving one port; see the module header. `port` is the
    port they share; `workers` the live Worker objects; stop() ends them."""

    def __init__(
        self,
        loop: Loop,
        target: Callable[..., Server] | str,
        *args: Any,
        workers: int,
        host: str = "127.0.0.1",
        port: int = 0,
        deadline: float = 10.0,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.loop = loop
        self.target = target_name(target)
        self.args = list(args)
        self.host = host
        self.deadline = deadline
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, type_, proto, _, addr = infos[0]
        self._reserve: socket.socket | None = socket.socket(
            family, type_ | socket.SOCK_CLOEXEC, proto
        )
        self._reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            self._reserve.bind(addr)
        except OSError:
            self._reserve.close()
            raise
        self.port: int = self._reserve.getsockname()[1]
        self.workers: list[Worker | None] = [None] * workers
        self._ready: set[int] = set()
        self._stopping = False
        self._failure: BaseException | None = None
        self._delay = [_RESTART_DELAY[0]] * workers
        for i in range(workers):
            self._start(i)

    def _start(self, i: int) -> None:
        if self._stopping or self.loop.closed:
            return
        try:
            w = spawn(
                self.loop,
                _worker_entry,
                self.target,
                self.host,
                self.port,
                self.deadline,
                self.args,
                on_frame=functools.partial(self._on_frame, i),
                on_exit=functools.partial(self._on_exit, i),
                on_error=self._on_error,
            )
        except SpawnError as exc:
            self._on_error(None, exc)
            return
        self.workers[i] = w

    def _on_frame(self, i: int, _w: Worker, chan: int, payload: Any) -> None:
        if chan == _CHAN and bytes(payload) == _READY:
            self._ready.add(i)
            self._delay[i] = _RESTART_DELAY[0]

    def _on_error(self, _w: Worker | None, exc: BaseException) -> None:
        if not self._ready and self._failure is None:
            self._failure = exc  # start-up failed: serve_prefork() reports it
        else:
            log.error("evloop: prefork worker failed: %s", exc)

    def _on_exit(self, i: int, w: Worker) -> None:
        was_ready = i in self._ready
        self._ready.discard(i)
        self.workers[i] = None
        if self._stopping or self._failure is not None:
            return
        if not was_ready and self._failure is None:
            self._failure = SpawnError(f"worker {i} exited during start-up (status {w.returncode})")
            return
        delay = self._delay[i]
        self._delay[i] = min(delay * 2, _RESTART_DELAY[1])
        log.warning(
            "evloop: worker %d (pid %d) exited (%s); restarting in %g s",
            i,
            w.pid,
            w.returncode,
            delay,
        )
        self.loop.call_later(delay, self._start, i)

    @property
    def ready(self) -> bool:
        return len(self._ready) == len(self.workers)

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    @property
    def closed(self) -> bool:
        return self._stopping and all(w is None or w.done for w in self.workers)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Run the loop until every worker listens; raise the start-up
        failure, or SpawnError on timeout."""
        ok = self.loop.run_until(lambda: self.ready or self._failure is not None, timeout=timeout)
        if self._failure is not None:
            self.close()
            raise self._failure
        if not ok:
            self.close()
            raise SpawnError(f"workers not ready after {timeout:g} s")

    def shutdown(
        self, deadline: float = 10.0, callback: Callable[[Prefork], Any] | None = None
    ) -> None:
        """Ask every worker to finish (see the module header); callback(self)
        once all have exited. For run_daemon()."""
        self._stopping = True
        for w in self.workers:
            if w is not None and not w.done:
                try:
                    w.write_frame(_CHAN, _STOP)
                except Exception:
                    w.terminate(deadline)
        self._release()

        def check() -> None:
            if all(w is None or w.done for w in self.workers):
                if callback is not None:
                    callback(self)
            else:
                self.loop.call_later(0.05, check)

        check()

    def close(self) -> None:
        """Stop every worker now (SIGTERM, then SIGKILL after 2 s)."""
        self._stopping = True
        for w in self.workers:
            if w is not None and not w.done:
                w.terminate(2.0)
        self._release()

    abort = close

    def _release(self) -> None:
        if self._reserve is not None:
            self._reserve.close()
            self._reserve = None


def serve_prefork(
    loop: Loop,
    target: Callable[..., Server] | str,
    *args: Any,
    workers: int,
    host: str = "127.0.0.1",
    port: int = 0,
    deadline: float = 10.0,
    timeout: float = 30.0,
) -> Prefork:
    """Start `workers` processes each running target(loop, host, port,
    *args) (which must listen with reuse_port=True and return its Server),
    and return once all of them listen. Pass the result to run_daemon()."""
    pf = Prefork(loop, target, *args, workers=workers, host=host, port=port, deadline=deadline)
    pf.wait_ready(timeout)
    return pf
