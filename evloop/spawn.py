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
# job (a C vfork+exec spawner, with a not-thread-safe Popen fallback).
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
# frame the child wrote before it died has been delivered first. Channel
# 65535 (CONTROL_CHANNEL) is reserved for evloop's own messages.
from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from . import launch
from .conn import Conn
from .errors import LoopClosedError, ProtocolError, RemoteError, SpawnError, TruncatedFrameError
from .launch import CHILD_FD
from .loop import EVENT_READ, Loop, TimerHandle
from .pipe import Pipe

__all__ = [
    "spawn",
    "Worker",
    "target_name",
    "CHILD_FD",
    "CONTROL_CHANNEL",
    "MAX_USER_CHANNEL",
    "DEFAULT_PDEATHSIG",
]

log = logging.getLogger("evloop")

# The child's end of the socketpair, also announced as EVLOOP_FD.
# Reserved for evloop's worker control messages; user channels are below it.
CONTROL_CHANNEL = 0xFFFF
MAX_USER_CHANNEL = CONTROL_CHANNEL - 1
# SIGKILL cannot be caught or ignored, so an orphan cannot outlive its parent
# by mistake; a worker that wants to clean up sees EOF on its Pipe first
# whenever the parent exits normally.
DEFAULT_PDEATHSIG = int(signal.SIGKILL)
# Seconds between SIGTERM and SIGKILL for a child that corrupted its stream.
ERROR_GRACE = 2.0

# Control messages: the first payload byte on CONTROL_CHANNEL is the kind.
# spawn handles CTL_ERROR; the others (evloop.pool's) go to Worker.on_control.
CTL_ERROR = 0x45  # "E" child -> parent: JSON {"type", "message", "traceback"}

# After the child is reaped, give its Pipe this long between progress checks
# to deliver what is still buffered before giving up on it.
_EXIT_LINGER = 1.0

_TARGET_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
    r":[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$"
)
_pack_header = struct.Struct(">HI").pack


# -- error reports ------------------------------------------------------------

# Tracebacks beyond this are cut (from the front, keeping the innermost frames).
_MAX_TRACEBACK = 256 * 1024


def encode_error(exc: BaseException) -> bytes:
    """`exc` as UTF-8 JSON {"type", "message", "traceback"}: the body of an
    error report (CTL_ERROR) and of a failed pool reply."""
    t = type(exc)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    tb = "".join(traceback.format_exception(t, exc, exc.__traceback__))
    if len(tb) > _MAX_TRACEBACK:
        tb = "...\n" + tb[-_MAX_TRACEBACK:]
    info = {"type": name, "message": str(exc), "traceback": tb}
    return json.dumps(info).encode("utf-8", "replace")


def decode_error(body: bytes | bytearray | memoryview) -> RemoteError:
    """The RemoteError an encode_error() body describes."""
    try:
        info = json.loads(bytes(body).decode("utf-8", "replace"))
        return RemoteError(
            str(info.get("type", "?")), str(info.get("message", "")), str(info.get("traceback", ""))
        )
    except (ValueError, AttributeError):
        return RemoteError("?", f"unreadable error report {bytes(body[:80])!r}", "")


# -- targets ------------------------------------------------------------------


def target_name(fn: Callable[..., Any] | str) -> str:
    """The "package.module:function" name a fresh interpreter can import `fn`
    by. Raises ValueError, saying why, for a malformed name, a lambda, a
    nested function, a function defined in __main__, or an object that its
    module does not expose under its own qualified name."""
    if isinstance(fn, str):
        if not _TARGET_RE.match(fn):
            raise ValueError(
                f"bad worker target {fn!r}: expected 'package.module:function'"
                " (dotted Python identifiers, one colon)"
            )
        return fn
    if not callable(fn):
        raise TypeError(f"worker target must be a function, a name or an argv list, not {fn!r}")
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str):
        raise ValueError(f"{fn!r} has no __module__/__qualname__ to import it by in the worker")
    if getattr(fn, "__name__", None) == "<lambda>":
        raise ValueError(
            f"{mod}.{qual} is a lambda: the worker is a fresh interpreter that imports its"
            " function by name, and a lambda has none. Define it with def at module level."
        )
    if "<locals>" in qual:
        raise ValueError(
            f"{mod}.{qual} is a nested function: it exists only while its enclosing"
            " function runs, so a fresh interpreter cannot import it. Move it to module level."
        )
    if mod == "__main__":
        raise ValueError(
            f"{qual} is defined in __main__: in the worker's fresh interpreter __main__ is"
            " evloop.worker, not your script. Move it into an importable module, or name it"
            " as 'yourscript:function' with the script's directory on sys.path."
        )
    obj: Any = sys.modules.get(mod)
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn:
        raise ValueError(
            f"{mod}:{qual} does not lead back to {fn!r} (a bound method, a decorated or"
            " rebound function?): pass a module-level function or its 'module:name' string"
        )
    return f"{mod}:{qual}"


# -- the Worker ---------------------------------------------------------------


class Worker:
    """A child process and the Pipe to it, owned by a Loop. Made by spawn().

    Attributes: `pid`; `pipe` (the parent's end; do not replace its on_frame,
    set `on_frame` here); `returncode` (None while the child runs, then its
    exit code, or -N if signal N killed it); `error` (a RemoteError if the
    child reported an exception); `target` (the function name or argv).

    Callbacks (attributes, settable at any time):
      on_frame(worker, chan, payload)   a frame on a user channel
      on_error(worker, exc)             RemoteError from a Python worker, or
                                        ProtocolError from its stream
      on_exit(worker)                   once, after the child is reaped and
                                        every frame it sent was delivered
      on_control(worker, payload)       control frames spawn does not handle
                                        itself (used by evloop.pool)
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
        conn = Conn(loop, sock)
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

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"exited {self.returncode}"
        return f"<Worker pid={self.pid} {state} target={self.target!r}>"

    # -- frames ---------------------------------------------------------------

    def write_frame(self, chan: int, data: Any) -> None:
        """pipe.write_frame() restricted to user channels 0..65534."""
        if not 0 <= chan <= MAX_USER_CHANNEL:
            raise ValueError(f"channel {chan} is outside the user channels 0..{MAX_USER_CHANNEL}")
        self.pipe.write_frame(chan, data)

    def send_fd(self, fd: int, chan: int = 0, data: bytes = b"\0") -> None:
        """Send a frame (chan, data) carrying a duplicate of `fd` as SCM_RIGHTS.
        The caller may close its own fd at once. In a Python worker the fd has
        arrived by the time the frame is delivered: take it with
        `pipe.conn.pop_fd()` in the on_frame handler (fds queue in order)."""
        if not 0 <= chan <= MAX_USER_CHANNEL:
            raise ValueError(f"channel {chan} is outside the user channels 0..{MAX_USER_CHANNEL}")
        if not 0 < len(data) <= self.pipe.max_len:
            raise ValueError(f"payload must be 1..{self.pipe.max_len} bytes, got {len(data)}")
        self.pipe.conn.write_fds(_pack_header(chan, len(data)) + bytes(data), [fd])
        self.pipe.frames_out += 1
        self.pipe.payload_out += len(data)

    def _on_frame(self, chan: int, payload: Any) -> None:
        if chan == CONTROL_CHANNEL:
            self._on_control(bytes(payload))
        elif self.on_frame is not None:
            self.on_frame(self, chan, payload)

    def _on_control(self, payload: bytes) -> None:
        if payload[:1] == bytes((CTL_ERROR,)):
            exc = decode_error(payload[1:])
            if self.error is None:
                self.error = exc
            self._notify_error(exc)
        elif self.on_control is not None:
            self.on_control(self, payload)
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
            self._exited(255)
            return
        if pid != 0:
            self._exited(os.waitstatus_to_exitcode(status))

    def _exited(self, returncode: int) -> None:
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
            return
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
            self.returncode = rc
            self.exited_at = self.loop.time()
            if self._popen is not None:
                self._popen.returncode = rc
        self._unwatch()
        for t in (self._kill_timer, self._linger_timer):
            if t is not None:
                t.cancel()
        self._kill_timer = self._linger_timer = None
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
    name), run in a fresh interpreter as func(loop, pipe, *args) with args
    passed as JSON; or an argv list of an executable, which finds its end of
    the socketpair on fd 3 (EVLOOP_FD=3). `env` replaces the environment
    (default: the parent's), `cwd` is the child's working directory,
    `pdeathsig` the signal it gets when the parent dies (0: none); the rest
    goes to the Pipe (max_len, batch). Raises SpawnError if the program
    cannot be started, ValueError for a target that cannot be named."""
    if loop.closed:
        raise LoopClosedError("the loop is closed")
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
