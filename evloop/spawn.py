# evloop/spawn.py
#
# spawn(): start a worker process joined to the parent by an AF_UNIX
# socketpair, and follow it on the Loop until it is reaped.
#
# The child is always a fresh program started with execve(), never a bare
# fork of the parent: a forked copy of a process with threads inherits locks
# held by threads that do not exist in the copy, and a forked copy of an
# event loop inherits its epoll set, signal fd and buffers. A Python target
# therefore runs in a new interpreter (`python -m evloop.worker`), which
# imports the function by name. Starting the process is evloop/launch.py's
# job (a C vfork+exec spawner, with a not-thread-safe Popen fallback); the
# messages on the reserved control channel are evloop/control.py's.
#
# What a child starts with: fd 3 (also named by EVLOOP_FD=3) is its end of
# the socketpair; fds 0-2 are the parent's; every other descriptor is closed;
# signal dispositions are the defaults and nothing is blocked;
# PR_SET_PDEATHSIG delivers DEFAULT_PDEATHSIG (SIGKILL) if the parent dies.
#
# Invariants: a Worker owns its child until the child is reaped (pidfd, or
# SIGCHLD where pidfds are unavailable), and signals are only ever sent
# before that, so a pid is never confused with a recycled one. on_exit fires
# exactly once, after the child is reaped AND its Pipe is closed, so every
# frame the child wrote before it died has been delivered first (and
# exited() completes right after it). Channel 65535 (CONTROL_CHANNEL) is
# reserved for evloop's own messages. A Python worker that is still
# importing its target cannot spawn (SpawnError): that is how a module
# without a __main__ guard would start workers recursively.
#
# `import evloop.spawn` gives this module; calling the module, as in
# `evloop.spawn(loop, target)`, calls spawn() (kept for code written when
# evloop.spawn was the function). The typed route is
# `from evloop.spawn import spawn` or `evloop.spawn_worker`.
"""spawn() and Worker: start a worker process on a socketpair and follow it until it is reaped. See the comment header above for the invariants."""

from __future__ import annotations

import ast
import difflib
import errno
import importlib.machinery
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from . import codec, launch
from .conn import Conn
from .control import (
    CHILD_FD,
    CONTROL_CHANNEL,
    KIND_ERROR,
    KIND_READY,
    MAX_USER_CHANNEL,
    decode_error,
    encode_error,
)
from .errors import (
    LoopClosedError,
    ProtocolError,
    RemoteError,
    SpawnError,
    TargetError,
    TruncatedFrameError,
)
from .future import Future
from .loop import EVENT_READ, Loop, TimerHandle
from .pipe import Pipe

__all__ = [
    "spawn",
    "Worker",
    "target_name",
    "check_target",
    "CHILD_FD",
    "CONTROL_CHANNEL",
    "MAX_USER_CHANNEL",
    "DEFAULT_PDEATHSIG",
    "encode_error",
    "decode_error",
]

log = logging.getLogger("evloop")

# SIGKILL cannot be caught or ignored, so an orphan cannot outlive its parent
# by mistake; a worker that wants to clean up sees EOF on its Pipe first
# whenever the parent exits normally.
DEFAULT_PDEATHSIG = int(signal.SIGKILL)
# Seconds between SIGTERM and SIGKILL for a child that corrupted its stream.
ERROR_GRACE = 2.0
# How long `with Worker` waits for the worker to exit after closing its Pipe.
EXIT_WAIT = 5.0

# After the child is reaped, give its Pipe this long between progress checks
# to deliver what is still buffered before giving up on it.
_EXIT_LINGER = 1.0

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET_RE = re.compile(rf"^{_IDENT}(?:\.{_IDENT})*:{_IDENT}(?:\.{_IDENT})*$")
# A script named by its path: "/abs/or/rel/script.py:function".
_PATH_TARGET_RE = re.compile(rf"^(?P<path>.+\.py):(?P<qual>{_IDENT}(?:\.{_IDENT})*)$")
_TARGET_HELP = (
    "expected 'package.module:function' (dotted Python identifiers, one colon)"
    " or '/path/to/script.py:function'"
)


# -- targets ------------------------------------------------------------------


def target_name(fn: Callable[..., Any] | str) -> str:
    """The name a fresh interpreter can import `fn` by: "package.module:
    function", or "/path/script.py:function" for a function of the main
    script (the worker imports the script under another module name, so its
    `if __name__ == "__main__":` block does not run there). Raises
    TargetError (a ValueError), saying why, for a malformed name, a lambda, a
    nested function, a function of a __main__ that has no file (python -c, an
    interactive session), or an object that its module does not expose
    under its own qualified name."""
    if isinstance(fn, str):
        if not (_TARGET_RE.match(fn) or _PATH_TARGET_RE.match(fn)):
            raise TargetError(f"bad worker target {fn!r}: {_TARGET_HELP}")
        return fn
    if not callable(fn):
        raise TypeError(f"worker target must be a function, a name or an argv list, not {fn!r}")
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str):
        raise TargetError(f"{fn!r} has no __module__/__qualname__ to import it by in the worker")
    if getattr(fn, "__name__", None) == "<lambda>":
        raise TargetError(
            f"{mod}.{qual} is a lambda: the worker is a fresh interpreter that imports its"
            " function by name, and a lambda has none. Define it with def at module level."
        )
    if "<locals>" in qual:
        raise TargetError(
            f"{mod}.{qual} is a nested function: it exists only while its enclosing"
            " function runs, so a fresh interpreter cannot import it. Move it to module level."
        )
    module: Any = sys.modules.get(mod)
    obj = module
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn:
        raise TargetError(
            f"{mod}:{qual} does not lead back to {fn!r} (a bound method, a decorated or"
            " rebound function?): pass a module-level function or its 'module:name' string"
        )
    if mod == "__main__":
        return _main_target(module, qual)
    return f"{mod}:{qual}"


def _main_target(main: Any, qual: str) -> str:
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return f"{spec.name}:{qual}"  # python -m package.module: importable by name
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py") or not os.path.isfile(path):
        raise TargetError(
            f"{qual} is defined in __main__, which has no script file to import it from"
            " (python -c, an interactive session): the worker is a fresh interpreter."
            " Move the function into a module and name it 'module:function'."
        )
    return f"{os.path.abspath(path)}:{qual}"


# (path, mtime) -> top-level names of the module, or None if they cannot be
# known without running it.
_NAMES_CACHE: dict[tuple[str, float], frozenset[str] | None] = {}


def check_target(name: str) -> None:
    """Check, without running anything, that the module of the target `name`
    exists and (when its source shows every top-level name) defines the
    function. Raises TargetError with a suggestion for a typo. A module
    already imported in this process is asked directly. What the source
    cannot show (names made by a star import or a module __getattr__) is
    left to the worker, which reports an import failure as a RemoteError."""
    mod, _, qual = name.rpartition(":")
    top = qual.partition(".")[0]
    m = _PATH_TARGET_RE.match(name)
    if m is not None:
        path = m.group("path")
        if not os.path.isfile(path):
            raise TargetError(f"worker target {name!r}: no such script {path}")
        _check_names(name, path, top)
        return
    module = sys.modules.get(mod)
    if module is not None:
        if not hasattr(module, top):
            raise TargetError(_missing(name, mod, top, dir(module)))
        return
    origin = _find_source(name, mod)
    if origin is not None:
        _check_names(name, origin, top)


def _find_source(name: str, mod: str) -> str | None:
    """The source file of module `mod`, found without importing it (or any
    package above it that is not imported yet); None when that cannot be
    told without running code. TargetError if it certainly does not exist."""
    parts = mod.split(".")
    spec: importlib.machinery.ModuleSpec | None = None
    for i in range(len(parts)):
        full = ".".join(parts[: i + 1])
        loaded = sys.modules.get(full)
        if loaded is not None:
            spec = getattr(loaded, "__spec__", None)
            if spec is None:
                return None
            continue
        if i == 0:
            spec = importlib.util.find_spec(full)  # imports nothing for a top-level name
        else:
            assert spec is not None
            locations = spec.submodule_search_locations
            if locations is None:
                raise TargetError(
                    f"worker target {name!r}: {'.'.join(parts[:i])} is a module, not a package"
                )
            if spec.origin and _rewrites_path(spec.origin):
                return None  # the package computes its __path__: only running it tells
            spec = importlib.machinery.PathFinder.find_spec(full, list(locations))
        if spec is None:
            raise TargetError(f"worker target {name!r}: no module named {full!r}")
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return spec.origin


def _rewrites_path(origin: str) -> bool:
    try:
        with open(origin, "rb") as f:
            return b"__path__" in f.read()
    except OSError:
        return True


def _check_names(name: str, path: str, top: str) -> None:
    try:
        key = (path, os.stat(path).st_mtime)
    except OSError:
        return
    if key not in _NAMES_CACHE:
        _NAMES_CACHE[key] = _top_level_names(path)
    names = _NAMES_CACHE[key]
    if names is not None and top not in names:
        raise TargetError(_missing(name, path, top, names))


def _missing(name: str, where: str, top: str, names: Any) -> str:
    close = difflib.get_close_matches(top, [n for n in names if not n.startswith("__")], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"worker target {name!r}: {where} has no {top!r}{hint}"


def _top_level_names(path: str) -> frozenset[str] | None:
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None  # a syntax error is reported by the worker, with its traceback
    names: set[str] = set()
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for attr in ("body", "orelse", "finalbody", "handlers"):
                for sub in getattr(node, attr, []):
                    stack.extend(sub.body if isinstance(sub, ast.ExceptHandler) else [sub])
        else:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.add(sub.id)
    return frozenset(names)


# -- the Worker ---------------------------------------------------------------


class Worker:
    """A child process and the Pipe to it, owned by a Loop. Made by spawn().

    Attributes: `pid`; `pipe` (the parent's end; set `on_frame` here, not on
    the Pipe: a Pool stacks its request client on the Pipe's on_frame and
    hands every other frame to the Worker); `returncode` (None while the
    child runs, then its exit code, or -N if signal N killed it); `error` (a
    RemoteError if the child reported an exception); `target` (the function
    name or argv); `ready` (a Python worker's function returned, or an
    executable was started); `writable` (False while the Pipe's write buffer
    is above its high watermark).

    Callbacks (attributes, settable at any time):
      on_frame(worker, chan, payload)   a frame on a user channel
      on_error(worker, exc)             RemoteError from a Python worker, or
                                        ProtocolError from its stream
      on_exit(worker)                   once, after the child is reaped and
                                        every frame it sent was delivered
      on_ready(worker)                  a Python worker's function returned
      on_writable(worker)               `writable` changed
      on_control(worker, payload)       control frames spawn does not handle
                                        itself (kinds of other layers)

    `with spawn(...) as worker:` closes the Pipe on exit and, when the loop
    is not running, runs it until the worker has exited (EXIT_WAIT seconds,
    then SIGKILL).
    """

    def __init__(
        self,
        loop: Loop,
        pid: int,
        sock: socket.socket,
        *,
        target: str | tuple[str, ...],
        on_frame: Callable[[Worker, int, bytes | bytearray], Any] | None = None,
        on_exit: Callable[[Worker], Any] | None = None,
        on_error: Callable[[Worker, BaseException], Any] | None = None,
        popen: subprocess.Popen[bytes] | None = None,
        **pipe_kwargs: Any,
    ):
        self.loop = loop
        self.pid = pid
        self.target = target
        self.returncode: int | None = None
        self.error: RemoteError | None = None
        self.on_frame = on_frame
        self.on_exit = on_exit
        self.on_error = on_error
        self.on_control: Callable[[Worker, bytes], Any] | None = None
        self.on_ready: Callable[[Worker], Any] | None = None
        self.on_writable: Callable[[Worker], Any] | None = None
        # An executable is up once it is started; a Python worker says so.
        self.ready = isinstance(target, tuple)
        self.answers_pings = False  # its ready message said it answers heartbeats
        self.writable = True
        self.started = loop.time()
        self.exited_at: float | None = None
        self._popen = popen
        self._pidfd = -1
        self._sigchld = False
        self._kill_timer: TimerHandle | None = None
        self._linger_timer: TimerHandle | None = None
        self._orphan_timer: TimerHandle | None = None  # see _on_pipe_close
        self._close_requested = False
        self._exit_reported = False
        self._exited: Future[int] | None = None
        conn = Conn(loop, sock, on_pause_writing=self._on_pause, on_resume_writing=self._on_resume)
        try:
            self.pipe = Pipe(
                conn,
                self._on_frame,
                on_error=self._on_pipe_error,
                on_close=self._on_pipe_close,
                **pipe_kwargs,
            )
            self._watch()
        except BaseException:
            conn.on_close = None
            conn.abort()
            self._unwatch()
            raise
        loop.adopt(self)

    # -- state ----------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True until the child has been reaped."""
        return self.returncode is None

    @property
    def done(self) -> bool:
        """True once on_exit has fired (reaped and Pipe closed)."""
        return self._exit_reported

    def exited(self) -> Future[int]:
        """A Future of the exit status (returncode), completed right after
        on_exit: `await worker.exited()` in a coroutine, or add a done
        callback. The same Future on every call."""
        if self._exited is None:
            self._exited = Future(self.loop)
            if self._exit_reported:
                assert self.returncode is not None
                self._exited.set_result(self.returncode)
        return self._exited

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"exited {self.returncode}"
        return f"<Worker pid={self.pid} {state} target={self.target!r}>"

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._exit_reported:
            return
        self.close()
        if not self.loop.running and not self.loop.closed:
            if not self.loop.run_until(lambda: self._exit_reported, timeout=EXIT_WAIT):
                self.abort()

    # -- frames ---------------------------------------------------------------

    def write_frame(self, chan: int, data: Any, *more: Any) -> None:
        """pipe.write_frame() restricted to user channels 0..65534."""
        if not 0 <= chan <= MAX_USER_CHANNEL:
            raise ValueError(f"channel {chan} is outside the user channels 0..{MAX_USER_CHANNEL}")
        self.pipe.write_frame(chan, data, *more)

    def send_fd(self, fd: int, chan: int = 0, data: bytes = b"\0") -> None:
        """Send a frame (chan, data) carrying a duplicate of `fd` as SCM_RIGHTS.
        The caller may close its own fd at once. In a Python worker the fd has
        arrived by the time the frame is delivered: take it with
        `pipe.conn.pop_fd()` in the on_frame handler (fds queue in order)."""
        if not 0 <= chan <= MAX_USER_CHANNEL:
            raise ValueError(f"channel {chan} is outside the user channels 0..{MAX_USER_CHANNEL}")
        if not 0 < len(data) <= self.pipe.max_len:
            raise ValueError(f"payload must be 1..{self.pipe.max_len} bytes, got {len(data)}")
        self.pipe.conn.write_fds(codec.encode_header(chan, len(data)) + bytes(data), [fd])
        self.pipe.frames_out += 1
        self.pipe.payload_out += len(data)

    def _on_frame(self, chan: int, payload: Any) -> None:
        if chan == CONTROL_CHANNEL:
            self._on_control(payload)
        elif self.on_frame is not None:
            self.on_frame(self, chan, payload)

    def _on_control(self, payload: Any) -> None:
        kind = payload[0]
        if kind == KIND_ERROR:
            exc = decode_error(payload[1:])
            if self.error is None:
                self.error = exc
            self._notify_error(exc)
        elif kind == KIND_READY:
            if self.ready:
                return
            self.ready = True
            self.answers_pings = len(payload) > 1 and bool(payload[1] & 0x01)
            if self.on_ready is not None:
                self.on_ready(self)
        elif self.on_control is not None:
            self.on_control(self, bytes(payload))
        else:
            log.debug("evloop: worker %d: ignoring control message %r", self.pid, payload[:16])

    def _on_pipe_error(self, exc: BaseException) -> None:
        self._notify_error(exc)

    def _notify_error(self, exc: BaseException) -> None:
        if self.on_error is not None:
            try:
                self.on_error(self, exc)
            except Exception as inner:
                self.loop.call_exception_handler(inner, self.on_error)
        elif isinstance(exc, RemoteError):
            log.error(
                "evloop: worker %d (%s) failed: %s\n%s",
                self.pid, self.target, exc, exc.remote_traceback,
            )  # fmt: skip
        else:
            log.error("evloop: worker %d (%s): %s", self.pid, self.target, exc)

    def _on_pause(self) -> None:
        self.writable = False
        if self.on_writable is not None:
            self.on_writable(self)

    def _on_resume(self) -> None:
        self.writable = True
        if self.on_writable is not None:
            self.on_writable(self)

    # -- signals --------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the child; a no-op once it has been reaped."""
        if self.returncode is not None:
            return
        try:
            if self._pidfd >= 0:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass  # exited, not yet reaped: a zombie cannot be signalled

    def kill(self) -> None:
        """SIGKILL the child."""
        self.send_signal(signal.SIGKILL)

    def terminate(self, grace: float | None = 5.0) -> None:
        """SIGTERM the child, and SIGKILL it if it is still there after
        `grace` seconds (None: never)."""
        if self.returncode is not None:
            return
        self.send_signal(signal.SIGTERM)
        if grace is not None and self._kill_timer is None:
            self._kill_timer = self.loop.call_later(grace, self._grace_expired)

    def _grace_expired(self) -> None:
        self._kill_timer = None
        self.kill()

    def close(self) -> None:
        """Close the parent's end of the Pipe after flushing it. A Python
        worker sees end-of-file and exits 0; the Worker stays until reaped."""
        self._close_requested = True
        self.pipe.close()

    # -- exit -----------------------------------------------------------------

    def _watch(self) -> None:
        if _USE_PIDFD:
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                    raise
            else:
                self.loop.register(self._pidfd, EVENT_READ, self._on_pidfd)
                return
        _sigchld_watch(self.loop, self)
        self._sigchld = True

    def _unwatch(self) -> None:
        fd, self._pidfd = self._pidfd, -1
        if fd >= 0:
            self.loop.unregister(fd)
            os.close(fd)
        if self._sigchld:
            self._sigchld = False
            _sigchld_unwatch(self.loop, self)

    def _on_pidfd(self, _mask: int) -> None:
        self._poll()

    def _poll(self) -> None:
        """Reap the child if it has exited."""
        if self.returncode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Someone else reaped it (SIGCHLD set to SIG_IGN, or a stray
            # waitpid(-1)): the status is lost.
            log.warning("evloop: worker %d was reaped by someone else", self.pid)
            rc = 255
        else:
            if pid == 0:
                return
            rc = os.waitstatus_to_exitcode(status)
        self._reaped(rc)
        if not self.pipe.closed:
            self._drain_after_exit()

    def _reaped(self, returncode: int) -> None:
        """The child is gone: record it and drop what watched it. Every timer
        that targets the live child is cancelled here, in one place."""
        self.returncode = returncode
        self.exited_at = self.loop.time()
        if self._popen is not None:
            self._popen.returncode = returncode
        self._unwatch()
        for timer in (self._kill_timer, self._orphan_timer):
            if timer is not None:
                timer.cancel()
        self._kill_timer = self._orphan_timer = None
        if self.pipe.closed:
            self._report_exit()

    def _drain_after_exit(self) -> None:
        # The child is gone, but a grandchild may still hold its socket, so
        # EOF may never come by itself. Shutting down our read side makes the
        # Conn read what is already queued and then see EOF.
        sock = self.pipe.conn.socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        self._linger_timer = self.loop.call_later(_EXIT_LINGER, self._linger_check)

    def _linger_check(self) -> None:
        self._linger_timer = None
        if self.pipe.closed:
            return
        if self.pipe.conn.closing:
            # Every frame was delivered; only a flush to a peer that is not
            # reading is left. Nobody will read it.
            self.pipe.abort()
        else:
            self._linger_timer = self.loop.call_later(_EXIT_LINGER, self._linger_check)

    def _on_pipe_close(self, exc: BaseException | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self.returncode is not None:
            self._report_exit()
        elif isinstance(exc, ProtocolError) and not isinstance(exc, TruncatedFrameError):
            # The child wrote a corrupt stream: the channel can never carry
            # frames again, and the child may not notice it is gone. Stop it;
            # its exit is reported as usual.
            self.terminate(grace=ERROR_GRACE)
        elif not self._close_requested and self._orphan_timer is None:
            # The child closed its end (or reset it) without being asked: it
            # is most likely exiting. If it is still running ERROR_GRACE
            # later it is of no use to anyone (requests on it could never be
            # answered): stop it then. Waiting first avoids racing its exit.
            self._orphan_timer = self.loop.call_later(ERROR_GRACE, self._stop_if_alive)

    def _stop_if_alive(self) -> None:
        self._orphan_timer = None
        if self.returncode is None:
            self.terminate(grace=ERROR_GRACE)

    def _report_exit(self) -> None:
        if self._exit_reported:
            return
        self._exit_reported = True
        self.loop.disown(self)
        if self.on_exit is not None:
            try:
                self.on_exit(self)
            except Exception as exc:
                self.loop.call_exception_handler(exc, self.on_exit)
        if self._exited is not None and not self._exited.done():
            assert self.returncode is not None
            self._exited.set_result(self.returncode)

    def abort(self) -> None:
        """SIGKILL the child, reap it (blocking, briefly), close the Pipe and
        report the exit. Loop.close() calls this."""
        if self.returncode is None:
            self.kill()
            try:
                _, status = os.waitpid(self.pid, 0)
                rc = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                rc = -signal.SIGKILL
            self._reaped(rc)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self.pipe.abort()
        self._report_exit()


# -- SIGCHLD fallback -----------------------------------------------------------

# Where os.pidfd_open() is missing (Python < 3.9, Linux < 5.3, a seccomp
# filter), exits are noticed by SIGCHLD: one handler per Loop polls each of
# that Loop's Workers with waitpid(pid, WNOHANG), never waitpid(-1), so
# children that are not ours are left to their owners.
_USE_PIDFD = hasattr(os, "pidfd_open")
_sigchld_workers: dict[int, tuple[Loop, dict[int, Worker]]] = {}


def _sigchld_watch(loop: Loop, worker: Worker) -> None:
    entry = _sigchld_workers.get(id(loop))
    if entry is None:
        loop.add_signal_handler(signal.SIGCHLD, _on_sigchld, loop)
        entry = _sigchld_workers[id(loop)] = (loop, {})
    entry[1][worker.pid] = worker
    # It may have exited before the handler was in place.
    loop.call_soon(worker._poll)


def _sigchld_unwatch(loop: Loop, worker: Worker) -> None:
    entry = _sigchld_workers.get(id(loop))
    if entry is None:
        return
    entry[1].pop(worker.pid, None)
    if not entry[1]:
        del _sigchld_workers[id(loop)]
        if not loop.closed:
            loop.remove_signal_handler(signal.SIGCHLD)


def _on_sigchld(loop: Loop) -> None:
    entry = _sigchld_workers.get(id(loop))
    if entry is not None:
        for worker in list(entry[1].values()):
            worker._poll()


# -- spawn ----------------------------------------------------------------------


def _refuse_recursive_spawn() -> None:
    runtime = sys.modules.get("evloop.worker")
    if runtime is not None and runtime.importing_target():
        raise SpawnError(
            errno.EPERM,
            "spawn() was called while this worker was still importing its target module:"
            " the module starts workers at import time, so every worker would start"
            " more workers. Put the code that starts workers (Pool, spawn) under"
            ' `if __name__ == "__main__":` or inside a function.',
        )


def spawn(
    loop: Loop,
    target: Callable[..., Any] | str | Sequence[str],
    *args: Any,
    on_frame: Callable[[Worker, int, bytes | bytearray], Any] | None = None,
    on_exit: Callable[[Worker], Any] | None = None,
    on_error: Callable[[Worker, BaseException], Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    pdeathsig: int = DEFAULT_PDEATHSIG,
    **pipe_kwargs: Any,
) -> Worker:
    """Start a worker process and return its Worker (see docs/spawn.md).

    `target` is a module-level function (or its "package.module:function"
    name, or "/path/script.py:function"), run in a fresh interpreter as
    func(loop, pipe, *args) (or func(ctx, *args) when its first parameter is
    annotated WorkerContext) with args passed as JSON; or an argv list of an
    executable, which finds its end of the socketpair on fd 3 (EVLOOP_FD=3).
    `env` replaces the environment (default: the parent's), `cwd` is the
    child's working directory, `pdeathsig` the signal it gets when the parent
    dies (0: none); the rest goes to the Pipe (max_len, batch). Raises
    TargetError (a ValueError) for a target that cannot be named or does not
    exist, SpawnError if the program cannot be started or if this is a
    worker still importing its own target."""
    if loop.closed:
        raise LoopClosedError("the loop is closed")
    _refuse_recursive_spawn()
    child_env = dict(os.environ if env is None else env)
    child_env["EVLOOP_FD"] = str(CHILD_FD)
    label: str | tuple[str, ...]
    if isinstance(target, (list, tuple)):
        if args:
            raise TypeError("arguments of an executable target belong in its argv list")
        argv = [os.fsdecode(a) for a in target]
        if not argv or not argv[0]:
            raise ValueError("an executable target needs a non-empty argv list")
        path = launch.resolve_program(argv[0], child_env)
        label = tuple(argv)
    else:
        name = target_name(cast("Callable[..., Any] | str", target))
        check_target(name)
        try:
            args_json = json.dumps(list(args), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"worker arguments must be JSON-serializable: {exc}") from exc
        if not sys.executable:
            raise SpawnError(errno.ENOENT, "sys.executable is unknown: cannot start Python")
        path = sys.executable
        argv = [sys.executable, "-m", "evloop.worker", name, args_json]
        # The child imports the target with the parent's sys.path, so a
        # module the parent can import (a script's directory, a test root)
        # is importable there too.
        child_env["EVLOOP_SYS_PATH"] = json.dumps([os.path.abspath(p or ".") for p in sys.path])
        label = name
    if pdeathsig and not 0 < pdeathsig < signal.NSIG:
        raise ValueError(f"pdeathsig must be 0 or a signal number, got {pdeathsig}")
    cwd_s = os.fsdecode(cwd) if cwd is not None else None

    psock, csock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    popen: subprocess.Popen[bytes] | None = None
    try:
        pid, popen = launch.start(path, argv, child_env, cwd_s, csock.fileno(), int(pdeathsig))
    except BaseException:
        psock.close()
        raise
    finally:
        csock.close()
    try:
        return Worker(
            loop,
            pid,
            psock,
            target=label,
            on_frame=on_frame,
            on_exit=on_exit,
            on_error=on_error,
            popen=popen,
            **pipe_kwargs,
        )
    except BaseException:
        psock.close()
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        if popen is not None:
            popen.returncode = -signal.SIGKILL
        raise


class _CallableModule(types.ModuleType):
    """This module's type: calling `evloop.spawn(...)` calls spawn()."""

    def __call__(self, *args: Any, **kwargs: Any) -> Worker:
        return spawn(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
