# evloop/launch.py
#
# Start one child process whose only inherited descriptors are 0-2 and its
# end of a socketpair on fd 3 (CHILD_FD), with the parent-death signal set.
# This is the mechanism under spawn(); it knows nothing of Loops or Workers.
#
# The C spawner (csrc/evl_spawn.c, built as evloop._spawn) does fork+exec
# with vfork() and only async-signal-safe calls in between: prctl, the
# getppid() race check, dup2 onto fd 3, close_range, chdir, signal resets,
# execve; a failure comes back as (stage, errno) through an error pipe. The
# fallback, used when the extension is missing or EVLOOP_PURE_PYTHON=1,
# goes through subprocess.Popen(preexec_fn=...), which runs Python between
# fork and exec and is therefore not safe in a parent with threads.
# EVLOOP_REQUIRE_C=1 makes a failed import of the extension fatal.
"""Start one child process with only fds 0-3 and the parent-death signal (C, or a Popen fallback). See the comment header above for the invariants."""

from __future__ import annotations

import errno
import importlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from typing import Any

from . import _env
from .control import CHILD_FD
from .errors import SpawnError

__all__ = ["CHILD_FD", "IMPLEMENTATION", "c_import_error", "resolve_program", "start"]

_c_spawn: Any = None
c_import_error: ImportError | None = None
try:
    # import_module(): "from . import _spawn" reports a missing extension as
    # a circular import; this says "No module named 'evloop._spawn'".
    _c_spawn = importlib.import_module("._spawn", __package__)
except ImportError as exc:
    _env.c_import_failed("evloop._spawn", "the C spawner", exc)  # raises under EVLOOP_REQUIRE_C=1
    c_import_error = exc

# The C spawner's fd number is declared in evl_spawn.h: it must be the protocol's.
if _c_spawn is not None and int(_c_spawn.lib.EVL_SPAWN_FD) != CHILD_FD:
    raise ImportError(
        f"evloop._spawn puts the socket on fd {_c_spawn.lib.EVL_SPAWN_FD}, not {CHILD_FD}"
    )

IMPLEMENTATION = "python" if _c_spawn is None or _env.pure_python() else "c"

# What each enum evl_spawn_stage value names, for SpawnError's message: the
# numbers come from csrc/evl_spawn.h through the extension, so the two cannot
# drift apart.
_STAGES: dict[int, str] = {}
if _c_spawn is not None:
    _STAGES = {
        _c_spawn.lib.EVL_SPAWN_BADARG: "bad arguments",
        _c_spawn.lib.EVL_SPAWN_PIPE: "pipe2",
        _c_spawn.lib.EVL_SPAWN_FORK: "vfork",
        _c_spawn.lib.EVL_SPAWN_PDEATHSIG: "prctl(PR_SET_PDEATHSIG)",
        _c_spawn.lib.EVL_SPAWN_DUP: "dup2",
        _c_spawn.lib.EVL_SPAWN_CHDIR: "chdir",
        _c_spawn.lib.EVL_SPAWN_EXEC: "execve",
        _c_spawn.lib.EVL_SPAWN_REPORT: "reading the child's report",
    }


def resolve_program(prog: str, env: Mapping[str, str]) -> str:
    if "/" in prog:
        return prog
    found = shutil.which(prog, path=env.get("PATH", os.defpath))
    if found is None:
        cause = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), prog)
        raise SpawnError(errno.ENOENT, f"cannot spawn {prog!r}: not found on PATH") from cause
    return found


def _spawn_error(err: int, stage: str, path: str) -> SpawnError:
    cause = OSError(err, os.strerror(err), path)
    exc = SpawnError(err, f"cannot spawn {path!r}: {stage} failed: {os.strerror(err)}")
    exc.__cause__ = cause
    return exc


def _start_c(
    path: str, argv: list[str], env: dict[str, str], cwd: str | None, fd: int, pdeathsig: int
) -> int:
    ffi, lib = _c_spawn.ffi, _c_spawn.lib
    # Every char[] must stay alive for the duration of the call.
    argv_c = [ffi.new("char[]", os.fsencode(a)) for a in argv]
    env_c = [ffi.new("char[]", os.fsencode(k) + b"=" + os.fsencode(v)) for k, v in env.items()]
    argv_arr = ffi.new("char *[]", [*argv_c, ffi.NULL])
    env_arr = ffi.new("char *[]", [*env_c, ffi.NULL])
    stage = ffi.new("int *")
    err = ffi.new("int *")
    pid = lib.evl_spawn(
        os.fsencode(path),
        argv_arr,
        env_arr,
        os.fsencode(cwd) if cwd is not None else ffi.NULL,
        fd,
        pdeathsig,
        stage,
        err,
    )
    if pid < 0:
        raise _spawn_error(err[0] or errno.EIO, _STAGES.get(stage[0], f"stage {stage[0]}"), path)
    return int(pid)


_libc: Any = None


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _prctl_pdeathsig(sig: int) -> None:
    import ctypes

    if _load_libc().prctl(1, sig, 0, 0, 0) != 0:  # 1 is PR_SET_PDEATHSIG
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _start_python(
    path: str, argv: list[str], env: dict[str, str], cwd: str | None, fd: int, pdeathsig: int
) -> tuple[int, subprocess.Popen[bytes]]:
    """The fallback without the C extension. preexec_fn runs Python between
    fork and exec, which can deadlock if another thread held a lock (the
    import lock, malloc's) at the moment of fork: not thread-safe."""
    parent = os.getpid()
    if pdeathsig:
        _load_libc()  # before fork: dlopen() in the child could deadlock

    def preexec() -> None:
        if pdeathsig:
            _prctl_pdeathsig(pdeathsig)
        if os.getppid() != parent:
            os._exit(127)
        if fd == CHILD_FD:
            os.set_inheritable(fd, True)
        else:
            os.dup2(fd, CHILD_FD)
        # Close-on-exec fds (Popen's error pipe among them) vanish at exec;
        # close every other one above the socket now.
        for name in os.listdir("/proc/self/fd"):
            n = int(name)
            try:
                if n > CHILD_FD and os.get_inheritable(n):
                    os.close(n)
            except OSError:
                pass  # the directory fd of listdir(), already closed
        for sig in signal.valid_signals():
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError, RuntimeError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, ())

    # Keep fds 0..3 occupied while Popen makes its error pipe, so the pipe
    # cannot land on fd 3 where preexec() puts the socket.
    holders: list[int] = []
    try:
        while True:
            h = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            if h > CHILD_FD:
                os.close(h)
                break
            holders.append(h)
        try:
            popen = subprocess.Popen(
                argv, executable=path, env=env, cwd=cwd, close_fds=False, preexec_fn=preexec
            )
        except OSError as exc:
            raise _spawn_error(exc.errno or errno.EIO, "exec", path) from exc
        except subprocess.SubprocessError as exc:
            raise SpawnError(errno.EIO, f"cannot spawn {path!r}: {exc}") from exc
    finally:
        for h in holders:
            os.close(h)
    return popen.pid, popen


def start(
    path: str, argv: list[str], env: dict[str, str], cwd: str | None, fd: int, pdeathsig: int
) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Start `path` with `argv` and `env`, `fd` becoming the child's fd 3.
    Returns the pid (and, for the fallback, the Popen to reap through).
    Raises SpawnError with the child's own errno if it cannot be started."""
    if IMPLEMENTATION == "c":
        return _start_c(path, argv, env, cwd, fd, pdeathsig), None
    return _start_python(path, argv, env, cwd, fd, pdeathsig)
