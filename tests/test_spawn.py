# tests/test_spawn.py
#
# spawn() and Worker on real processes: Python targets in fresh interpreters,
# shell and C executables, fd inheritance, signals, parent death, fd passing,
# and reaping (no zombie, no fd left behind). The core cases run once per
# spawner: the C one (evloop._spawn) and the subprocess fallback.
from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import evloop
import evloop.launch as launch_mod  # noqa: E402
from evloop import (
    ConnClosedError,
    Loop,
    LoopClosedError,
    RemoteError,
    SpawnError,
    TargetError,
    TruncatedFrameError,
    connect_tcp,
    listen_tcp,
)
from evloop.spawn import CONTROL_CHANNEL, Worker, spawn, target_name
from tests import workers
from tests.conftest import drain
from tests.spawn_helpers import fd_count, pid_alive, py_exec, zombie_children

spawn_mod = importlib.import_module("evloop.spawn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLS = ["c", "python"]


@pytest.fixture(autouse=True)
def no_zombies() -> Iterator[None]:
    # Set up before `loop`, so this runs after the loop fixture has closed
    # the loop (which reaps whatever the test left running).
    yield
    assert zombie_children() == []


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "c" and launch_mod._c_spawn is None:
        pytest.skip(f"C spawner not built: {launch_mod.c_import_error}")
    monkeypatch.setattr(launch_mod, "IMPLEMENTATION", request.param)
    return str(request.param)


class Recorder:
    """Collects a Worker's callbacks in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.frames: list[tuple[int, bytes]] = []
        self.errors: list[BaseException] = []
        self.exits: list[Worker] = []

    def kwargs(self) -> dict[str, Any]:
        return {"on_frame": self.on_frame, "on_exit": self.on_exit, "on_error": self.on_error}

    def on_frame(self, worker: Worker, chan: int, payload: Any) -> None:
        self.frames.append((chan, bytes(payload)))
        self.events.append(("frame", chan))

    def on_exit(self, worker: Worker) -> None:
        self.exits.append(worker)
        self.events.append(("exit", worker.returncode))

    def on_error(self, worker: Worker, exc: BaseException) -> None:
        self.errors.append(exc)
        self.events.append(("error", type(exc).__name__))


def finish(loop: Loop, worker: Worker, timeout: float = 10.0) -> None:
    assert loop.run_until(lambda: worker.done, timeout=timeout), f"{worker} did not finish"


# -- which spawner ------------------------------------------------------------


def test_c_spawner_is_used_in_the_normal_build(loop: Loop, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("EVLOOP_PURE_PYTHON", "") not in ("", "0"):
        assert launch_mod.IMPLEMENTATION == "python"
        pytest.skip("EVLOOP_PURE_PYTHON is set: the fallback is in use on purpose")
    assert launch_mod._c_spawn is not None, launch_mod.c_import_error
    assert launch_mod.IMPLEMENTATION == "c"
    calls = []
    real = launch_mod._start_c
    monkeypatch.setattr(launch_mod, "_start_c", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(launch_mod, "_start_python", None)  # would raise if reached
    w = spawn(loop, ["true"])
    finish(loop, w)
    assert len(calls) == 1 and w.returncode == 0


# -- Python targets -------------------------------------------------------------


def test_echo_python_worker(loop: Loop, impl: str) -> None:
    rec = Recorder()
    w = spawn(loop, workers.echo, "> ", **rec.kwargs())
    assert w.target == "tests.workers:echo"
    payloads = [b"a", b"\x00\xff" * 100, bytes(range(256)), b"x" * 300_000]
    for i, p in enumerate(payloads):
        w.write_frame(i * 1000, p)
    assert loop.run_until(lambda: len(rec.frames) == len(payloads), timeout=10)
    assert rec.frames == [(i * 1000, b"> " + p) for i, p in enumerate(payloads)]
    w.close()  # EOF: the bootstrap exits 0
    finish(loop, w)
    assert w.returncode == 0 and w.error is None and rec.errors == []
    assert rec.exits == [w] and rec.events[-1] == ("exit", 0)
    assert w.pipe.closed


def test_args_env_and_exit_after_frames(loop: Loop, impl: str) -> None:
    rec = Recorder()
    args = [1, "two", [3, None], {"four": 4.5}, "\u00e9\U0001f600"]
    w = spawn(loop, "tests.workers:hello", *args, **rec.kwargs())
    finish(loop, w)
    # The frame written just before loop.stop() arrives before on_exit.
    assert rec.events == [("frame", 1), ("exit", 0)]
    info = json.loads(rec.frames[0][1])
    assert info == {"args": args, "pid": w.pid, "fd": "3"}


def test_arguments_must_be_json(loop: Loop) -> None:
    with pytest.raises(TypeError, match="JSON"):
        spawn(loop, workers.hello, object())
    with pytest.raises(TypeError, match="argv"):
        spawn(loop, ["true"], 1)


@pytest.mark.parametrize(
    "bad", ["nocolon", "mod:", ":func", "1mod:f", "a b:c", "a:b:c", "a.:f", "a..b:f", ""]
)
def test_bad_target_string(loop: Loop, bad: str) -> None:
    with pytest.raises(ValueError, match="package.module:function"):
        spawn(loop, bad)


def _nested_holder() -> Any:
    def nested(loop: Loop, pipe: Any) -> None:
        pass

    return nested


def test_unnameable_functions_are_refused(loop: Loop) -> None:
    fds0 = loop.statistics().fds
    assert target_name(workers.echo) == "tests.workers:echo"
    with pytest.raises(ValueError, match="lambda"):
        spawn(loop, lambda loop, pipe: None)
    with pytest.raises(ValueError, match="nested function"):
        spawn(loop, _nested_holder())
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec("def main_fn(loop, pipe):\n    pass\n", ns)
    with pytest.raises(ValueError, match="__main__"):
        spawn(loop, ns["main_fn"])
    with pytest.raises(ValueError, match="lead back"):
        spawn(loop, Recorder().on_exit)  # a bound method
    with pytest.raises(TypeError):
        spawn(loop, 42)  # type: ignore[arg-type]
    assert loop.statistics().fds == fds0  # nothing was started or registered


def test_a_missing_target_is_refused_before_anything_starts(loop: Loop) -> None:
    fds0 = loop.statistics().fds
    with pytest.raises(TargetError, match="no module named 'tests.no_such_module'"):
        spawn(loop, "tests.no_such_module:f")
    with pytest.raises(TargetError, match="no 'no_such_function'"):
        spawn(loop, "tests.workers:no_such_function")
    with pytest.raises(TargetError, match="did you mean 'echo'"):
        spawn(loop, "tests.workers:ehco")
    with pytest.raises(TargetError, match="no module named 'no_such_top_level_module'"):
        spawn(loop, "no_such_top_level_module:f")
    assert issubclass(TargetError, ValueError)
    assert loop.statistics().fds == fds0  # nothing was started


def test_an_import_error_inside_the_target_module_is_a_remote_error(loop: Loop) -> None:
    rec = Recorder()
    w = spawn(loop, "tests.broken_worker_module:work", **rec.kwargs())
    finish(loop, w)
    assert w.returncode == 1
    assert isinstance(w.error, RemoteError)
    assert w.error.remote_type == "ModuleNotFoundError"
    assert "a_dependency_that_is_not_installed" in w.error.remote_message
    assert not w.ready


def test_exception_at_setup(loop: Loop, impl: str) -> None:
    rec = Recorder()
    w = spawn(loop, workers.fail_at_setup, "bad config", **rec.kwargs())
    finish(loop, w)
    assert w.returncode == 1
    assert rec.errors == [w.error]
    err = w.error
    assert isinstance(err, RemoteError)
    assert (err.remote_type, err.remote_message) == ("ValueError", "bad config")
    assert "fail_at_setup" in err.remote_traceback
    assert "raise ValueError(message)" in err.remote_traceback
    assert str(err) == "ValueError: bad config"
    # The report is delivered before the exit.
    assert rec.events == [("error", "RemoteError"), ("exit", 1)]


def test_exception_in_a_later_callback_is_fatal(loop: Loop) -> None:
    rec = Recorder()
    w = spawn(loop, workers.fail_in_callback, **rec.kwargs())
    w.write_frame(3, b"first")
    assert loop.run_until(lambda: rec.frames, timeout=10)
    w.write_frame(3, b"raise")
    finish(loop, w)
    assert rec.frames == [(3, b"first")]
    assert w.returncode == 1
    err = w.error
    assert err is not None and err.remote_type == "tests.workers.CustomError"
    assert err.remote_message == "raised in on_frame"
    assert "in on_frame" in err.remote_traceback
    assert rec.events[-2:] == [("error", "RemoteError"), ("exit", 1)]


# -- executables ----------------------------------------------------------------


def test_shell_worker(loop: Loop, impl: str) -> None:
    rec = Recorder()
    w = spawn(loop, ["sh", "-c", 'exec cat <&"$EVLOOP_FD" >&3'], **rec.kwargs())
    frames = [(0, b"shell"), (65534, b"\x00" * 70_000), (7, b"\xff")]
    for chan, data in frames:
        w.write_frame(chan, data)
    assert loop.run_until(lambda: len(rec.frames) == 3, timeout=10)
    assert rec.frames == frames
    w.close()  # cat sees EOF
    finish(loop, w)
    assert w.returncode == 0


C_ECHO = r"""
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* Reads exactly n bytes; -1 on EOF or error. */
static int read_full(int fd, unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Answers every frame on the next channel up. */
int main(void)
{
    static unsigned char buf[1 << 20];
    unsigned char h[6];
    const char *s = getenv("EVLOOP_FD");
    int fd = s != NULL ? atoi(s) : 3;

    while (read_full(fd, h, 6) == 0) {
        uint32_t len = (uint32_t)h[2] << 24 | (uint32_t)h[3] << 16 | (uint32_t)h[4] << 8 | h[5];
        unsigned chan = ((unsigned)h[0] << 8 | h[1]) + 1u;
        if (len == 0 || len > sizeof buf || read_full(fd, buf, len) != 0)
            return 2;
        h[0] = (unsigned char)(chan >> 8);
        h[1] = (unsigned char)chan;
        if (write_full(fd, h, 6) != 0 || write_full(fd, buf, len) != 0)
            return 3;
    }
    return 0;
}
"""


def test_c_worker(loop: Loop, tmp_path: Any) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "echo.c"
    src.write_text(C_ECHO)
    exe = tmp_path / "echo"
    subprocess.run([cc, "-O1", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    rec = Recorder()
    w = spawn(loop, [str(exe)], **rec.kwargs())
    frames = [(i, bytes([i]) * (i * 997 + 1)) for i in range(20)]
    for chan, data in frames:
        w.write_frame(chan, data)
    assert loop.run_until(lambda: len(rec.frames) == 20, timeout=10)
    assert rec.frames == [(chan + 1, data) for chan, data in frames]
    w.close()
    finish(loop, w)
    assert w.returncode == 0


def test_c_spawner_standalone(tmp_path: Any) -> None:
    # csrc/test_spawn.c drives evl_spawn() directly: the fd-3 corner cases
    # (socket already on 3, error pipe on 3) that Python cannot arrange.
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "test_spawn"
    csrc = os.path.join(ROOT, "csrc")
    sources = [os.path.join(csrc, "test_spawn.c"), os.path.join(csrc, "evl_spawn.c")]
    subprocess.run(
        [cc, "-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-o", str(exe), *sources],
        check=True,
    )
    out = subprocess.run([str(exe)], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode()
    assert b"all checks passed" in out.stdout


def test_missing_executable(loop: Loop, impl: str, tmp_path: Any) -> None:
    fds0 = loop.statistics().fds
    with pytest.raises(SpawnError) as info:
        spawn(loop, [str(tmp_path / "no-such-program")])
    assert info.value.errno == errno.ENOENT
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(SpawnError) as info:
        spawn(loop, ["evloop-no-such-program-on-path"])
    assert info.value.errno == errno.ENOENT
    assert isinstance(info.value.__cause__, FileNotFoundError)
    not_exec = tmp_path / "data.txt"
    not_exec.write_text("#!/bin/sh\n")
    with pytest.raises(SpawnError) as info:
        spawn(loop, [str(not_exec)])
    assert info.value.errno == errno.EACCES
    assert isinstance(info.value.__cause__, PermissionError)
    with pytest.raises(SpawnError) as info:
        spawn(loop, ["true"], cwd=str(tmp_path / "no-such-dir"))
    assert info.value.errno == errno.ENOENT
    assert loop.statistics().fds == fds0


def test_cwd_and_env(loop: Loop, impl: str, tmp_path: Any) -> None:
    rec = Recorder()
    code = "send(1, (os.getcwd() + '|' + os.environ['ONLY'] + '|' + str(len(os.environ))).encode())"
    w = spawn(loop, py_exec(code), cwd=str(tmp_path), env={"ONLY": "me"}, **rec.kwargs())
    finish(loop, w)
    cwd, only, n = rec.frames[0][1].decode().split("|")
    assert (os.path.realpath(cwd), only) == (os.path.realpath(tmp_path), "me")
    # ONLY and EVLOOP_FD, plus whatever the interpreter adds on its own (LC_CTYPE).
    assert int(n) <= 3


# -- what the child inherits ------------------------------------------------------


def test_only_the_socket_is_inherited(loop: Loop, impl: str) -> None:
    opened = [os.open(os.devnull, os.O_RDONLY)]
    r, wfd = os.pipe()
    opened += [r, wfd]
    for fd in opened:
        os.set_inheritable(fd, True)
    try:
        rec = Recorder()
        code = (
            "fds = sorted(int(n) for n in os.listdir('/proc/self/fd'))\n"
            "fds = [fd for fd in fds if os.path.exists(f'/proc/self/fd/{fd}')]\n"
            "send(1, ' '.join(map(str, fds)).encode())\n"
        )
        w = spawn(loop, py_exec(code), **rec.kwargs())
        finish(loop, w)
        listed = [int(x) for x in rec.frames[0][1].split()]
        std = [fd for fd in (0, 1, 2) if os.path.exists(f"/proc/self/fd/{fd}")]
        assert listed == [*std, 3]
        # A Python worker: its own fds are all close-on-exec, so anything
        # inheritable besides stdio would have come from us.
        rec2 = Recorder()
        w2 = spawn(loop, workers.report_fds, **rec2.kwargs())
        finish(loop, w2)
        fds = {int(k): v for k, v in json.loads(rec2.frames[0][1]).items()}
        assert 3 in fds and not fds[3]  # the bootstrap made it close-on-exec
        assert {fd for fd, inh in fds.items() if inh} <= {0, 1, 2}
    finally:
        for fd in opened:
            os.close(fd)


def test_signal_state_is_reset(loop: Loop, impl: str) -> None:
    # The child must not inherit an ignored SIGUSR1 or a blocked SIGUSR2.
    old_handler = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    try:
        rec = Recorder()
        code = (
            "lines = open('/proc/self/status').read().splitlines()\n"
            "d = dict(l.split(':\\t') for l in lines if l.startswith('Sig'))\n"
            "send(1, (d['SigIgn'] + ' ' + d['SigBlk']).encode())\n"
        )
        w = spawn(loop, py_exec(code), **rec.kwargs())
        finish(loop, w)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGUSR1, old_handler)
    ign, blk = (int(x, 16) for x in rec.frames[0][1].split())
    assert not ign & (1 << (signal.SIGUSR1 - 1))
    assert blk == 0


# -- signals and exit -------------------------------------------------------------


def test_terminate_escalates_to_sigkill(loop: Loop) -> None:
    rec = Recorder()
    w = spawn(loop, workers.ignore_sigterm, **rec.kwargs())
    assert loop.run_until(lambda: rec.frames, timeout=10)
    assert rec.frames == [(1, b"ignoring")]
    t0 = loop.time()
    w.terminate(grace=0.3)
    finish(loop, w)
    assert w.returncode == -signal.SIGKILL
    assert loop.time() - t0 >= 0.29


def test_terminate_and_kill(loop: Loop, impl: str) -> None:
    rec = Recorder()
    a = spawn(loop, workers.idle, **rec.kwargs())
    b = spawn(loop, ["sleep", "60"], **rec.kwargs())
    assert loop.run_until(lambda: rec.frames, timeout=10)  # a is running its loop
    a.terminate()
    b.kill()
    finish(loop, a)
    finish(loop, b)
    assert (a.returncode, b.returncode) == (-signal.SIGTERM, -signal.SIGKILL)
    a.kill()  # reaped: a no-op, never a signal to a recycled pid
    a.terminate()


def test_exit_code(loop: Loop) -> None:
    w = spawn(loop, ["sh", "-c", "exit 7"])
    finish(loop, w)
    assert w.returncode == 7 and not w.alive


def test_exit_while_a_grandchild_holds_the_socket(loop: Loop) -> None:
    # The child exits, but a grandchild keeps fd 3 open: the Worker must
    # still finish (read what is queued, then close its end).
    rec = Recorder()
    code = (
        "import subprocess\n"
        "p = subprocess.Popen(['sleep', '60'], pass_fds=(3,))\n"
        "send(1, str(p.pid).encode())\n"
    )
    w = spawn(loop, py_exec(code), **rec.kwargs())
    try:
        finish(loop, w)
        assert w.returncode == 0 and rec.frames[0][0] == 1
    finally:
        if rec.frames:
            os.kill(int(rec.frames[0][1]), signal.SIGKILL)


def test_half_a_frame_then_exit(loop: Loop) -> None:
    rec = Recorder()
    code = "send(1, b'whole')\nos.write(3, b'\\x00\\x01\\x00\\x00\\x00\\x10abc')\n"
    w = spawn(loop, py_exec(code), **rec.kwargs())
    finish(loop, w)
    assert rec.frames == [(1, b"whole")]
    assert len(rec.errors) == 1 and isinstance(rec.errors[0], TruncatedFrameError)
    assert rec.events[-1] == ("exit", 0)


def test_channel_65535_is_reserved(loop: Loop) -> None:
    w = spawn(loop, ["sh", "-c", "exec cat <&3 >&3"])
    with pytest.raises(ValueError, match="user channels"):
        w.write_frame(CONTROL_CHANNEL, b"x")
    with pytest.raises(ValueError, match="user channels"):
        w.send_fd(0, chan=CONTROL_CHANNEL)
    w.close()
    finish(loop, w)


def test_sigchld_fallback(loop: Loop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spawn_mod, "_USE_PIDFD", False)
    rec = Recorder()
    ws = [spawn(loop, ["sh", "-c", f"exit {i}"], **rec.kwargs()) for i in range(5)]
    ws.append(spawn(loop, workers.echo, **rec.kwargs()))
    ws[-1].write_frame(1, b"x")
    assert loop.run_until(lambda: rec.frames, timeout=10)
    ws[-1].close()
    for w in ws:
        finish(loop, w)
    assert [w.returncode for w in ws] == [0, 1, 2, 3, 4, 0]
    assert spawn_mod._sigchld_workers == {}
    # The handler is gone with the last worker.
    assert signal.getsignal(signal.SIGCHLD) in (signal.SIG_DFL, None)


def test_loop_close_kills_and_reaps(monkeypatch: pytest.MonkeyPatch) -> None:
    before = fd_count()
    lp = Loop()
    rec = Recorder()
    ws = [spawn(lp, workers.idle, **rec.kwargs()), spawn(lp, ["sleep", "60"], **rec.kwargs())]
    assert lp.run_until(lambda: rec.frames, timeout=10)
    lp.close()
    assert [w.returncode for w in ws] == [-signal.SIGKILL] * 2
    assert sorted(rec.exits, key=id) == sorted(ws, key=id)
    assert not any(pid_alive(w.pid) for w in ws)
    assert fd_count() == before
    with pytest.raises(LoopClosedError):
        spawn(lp, ["true"])


# -- scale ----------------------------------------------------------------------------


def test_32_workers_at_once(loop: Loop) -> None:
    rec = Recorder()
    ws = [spawn(loop, workers.echo, f"{i}:", **rec.kwargs()) for i in range(32)]
    assert len({w.pid for w in ws}) == 32
    for w in ws:
        w.write_frame(5, b"ping")
    assert loop.run_until(lambda: len(rec.frames) == 32, timeout=40)
    assert sorted(rec.frames) == sorted((5, f"{i}:ping".encode()) for i in range(32))
    for w in ws:
        w.close()
    assert loop.run_until(lambda: all(w.done for w in ws), timeout=20)
    assert all(w.returncode == 0 for w in ws)


def test_1000_spawns_leave_nothing_behind(loop: Loop) -> None:
    true = shutil.which("true")
    assert true is not None
    before = fd_count()
    fds0 = loop.statistics().fds
    statuses: list[int | None] = []
    for _wave in range(20):
        ws = [
            spawn(loop, [true], on_exit=lambda w: statuses.append(w.returncode)) for _ in range(50)
        ]
        assert loop.run_until(lambda ws=ws: all(w.done for w in ws), timeout=20)
    assert statuses == [0] * 1000
    assert fd_count() == before
    assert zombie_children() == []
    assert loop.statistics().fds == fds0


def test_parent_with_busy_threads(loop: Loop) -> None:
    # Threads hold locks (their own, malloc's, the import lock) at any moment.
    # A bare fork would copy them, held, into a child with nobody to release
    # them; the C spawner runs no such code before exec.
    if launch_mod.IMPLEMENTATION != "c":
        pytest.skip("the subprocess fallback is documented as not thread-safe")
    stop = threading.Event()
    lock = threading.Lock()

    def busy() -> None:
        while not stop.is_set():
            with lock:
                junk = [bytearray(512) for _ in range(64)]
            del junk
            importlib.import_module("json")

    threads = [threading.Thread(target=busy) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        rec = Recorder()
        ws = [spawn(loop, workers.echo, **rec.kwargs()) for _ in range(4)]
        ws += [spawn(loop, ["true"], **rec.kwargs()) for _ in range(50)]
        for w in ws[:4]:
            w.write_frame(1, b"ok")
        assert loop.run_until(lambda: len(rec.frames) == 4, timeout=30)
        for w in ws[:4]:
            w.close()
        assert loop.run_until(lambda: all(w.done for w in ws), timeout=30)
        assert all(w.returncode == 0 for w in ws)
    finally:
        stop.set()
        for t in threads:
            t.join()


# -- parent death ---------------------------------------------------------------------

INTERMEDIATE = textwrap.dedent(
    """
    import sys
    import evloop.launch
    from evloop import Loop, spawn

    mode = sys.argv[1]
    evloop.launch.IMPLEMENTATION = sys.argv[2]
    loop = Loop()
    if mode == "pdeathsig":
        w = spawn(loop, ["sleep", "60"])
    else:  # "eof": no pdeathsig, the bootstrap must notice the closed Pipe
        w = spawn(loop, "tests.workers:idle", pdeathsig=0)
    print(w.pid, flush=True)
    sys.stdin.read()  # block until killed
    """
)


@pytest.mark.parametrize("mode", ["pdeathsig", "eof"])
def test_worker_dies_with_its_parent(loop: Loop, impl: str, mode: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", INTERMEDIATE, mode, impl],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    pid = None
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        # Watch the grandchild with a pidfd: readable once it has exited.
        pidfd = os.pidfd_open(pid)
        gone: list[bool] = []
        loop.register(pidfd, evloop.EVENT_READ, lambda _m: gone.append(True))
        try:
            if mode == "eof":
                assert not loop.run_until(lambda: gone, timeout=0.2), "worker exited early"
            parent.kill()
            assert parent.wait(timeout=10) == -signal.SIGKILL
            assert loop.run_until(lambda: gone, timeout=10), f"worker {pid} outlived its parent"
        finally:
            loop.unregister(pidfd)
            os.close(pidfd)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        if parent.stdin is not None:
            parent.stdin.close()
        if parent.stdout is not None:
            parent.stdout.close()


# -- fd passing -----------------------------------------------------------------------


def test_tcp_connection_handed_to_a_worker(loop: Loop) -> None:
    w = spawn(loop, workers.line_server, 7)
    handed: list[int] = []

    def on_conn(conn: evloop.Conn) -> None:
        w.send_fd(conn.fd, chan=7, data=b"conn")
        handed.append(conn.fd)
        conn.abort()  # the worker has its own copy now

    server = listen_tcp(loop, "127.0.0.1", 0, on_conn, conn_kwargs={"start_reading": False})
    replies: list[bytes] = []

    def connected(conn: evloop.Conn | None, exc: BaseException | None) -> None:
        assert conn is not None, exc
        got = bytearray()
        conn.on_data = lambda c: drain(c, got)
        conn.on_close = lambda _exc: replies.append(bytes(got))
        conn.write(b"hello over tcp\n")

    for _ in range(3):
        connect_tcp(loop, "127.0.0.1", server.port, connected)
    assert loop.run_until(lambda: len(replies) == 3, timeout=10)
    assert replies == [f"{w.pid} hello over tcp\n".encode()] * 3
    assert len(handed) == 3
    server.close()
    w.close()
    finish(loop, w)
    assert w.returncode == 0


# -- the pre-fork example ---------------------------------------------------------------

EXAMPLE = os.path.join(ROOT, "examples", "prefork_server.py")


def test_prefork_example_demo() -> None:
    out = subprocess.run(
        [sys.executable, EXAMPLE, "--workers", "3", "--demo", "6"],
        capture_output=True,
        timeout=50,
        cwd="/",  # the workers must find the script's module from anywhere
    )
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.decode().splitlines()
    answers = [line for line in lines if line.startswith("worker ")]
    assert len(answers) == 6
    assert len({a.split(":")[0] for a in answers}) == 3  # round-robin reached all
    assert lines[-1] == "6 answers from 3 workers"


def test_prefork_example_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, EXAMPLE, "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert first.startswith("listening on 127.0.0.1:"), first
        port = int(first.split(":")[1].split(",")[0])
        answers = []
        for i in range(4):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(f"line {i}\n".encode())
                answers.append(s.makefile("rb").readline().decode())
        assert [a.split(": ", 1)[1] for a in answers] == [f"line {i}\n" for i in range(4)]
        assert len({a.split(":")[0] for a in answers}) == 2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- the documentation's examples ---------------------------------------------------------

DOC = os.path.join(ROOT, "docs", "spawn.md")


def doc_example(name: str) -> str:
    """The ```python block of docs/spawn.md that starts with "# <name>"."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    for block in text.split("```python\n")[1:]:
        code = block.split("```", 1)[0]
        if code.startswith(f"# {name}\n"):
            return code
    raise AssertionError(f"no example {name} in {DOC}")


@pytest.mark.parametrize(
    "name, expect",
    [
        ("spawn_example.py", [b"MAKE THIS LOUD", b"exit status 0", b"frames in, frames out"]),
        ("pool_example.py", [b"PoolStatistics(size=4", b"completed=8"]),
    ],
)
def test_doc_examples_run(tmp_path: Any, name: str, expect: list[bytes]) -> None:
    script = tmp_path / name
    script.write_text(doc_example(name))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=50, cwd="/")
    assert out.returncode == 0, out.stderr.decode()
    for e in expect:
        assert e in out.stdout, out.stdout.decode()


def test_a_worker_that_corrupts_its_stream_is_stopped(loop: Loop) -> None:
    # A bad header (length 0), then the worker ignores its dead channel. The
    # parent reports the ProtocolError and, since the channel can never
    # recover, terminates the worker instead of leaving it running.
    rec = Recorder()
    w = spawn(
        loop,
        ["sh", "-c", "printf '\\000\\001\\000\\000\\000\\000' >&3; exec sleep 30"],
        **rec.kwargs(),
    )
    finish(loop, w, timeout=15)
    assert [type(e).__name__ for e in rec.errors] == ["ProtocolError"]
    assert w.returncode == -signal.SIGTERM
    assert zombie_children() == []


def test_a_worker_that_drops_its_channel_but_lives_on_is_stopped(loop: Loop) -> None:
    rec = Recorder()
    w = spawn(loop, ["sh", "-c", "exec 3>&-; exec sleep 30"], **rec.kwargs())
    finish(loop, w, timeout=15)  # ERROR_GRACE after the EOF, then SIGTERM
    assert w.returncode == -signal.SIGTERM
    assert zombie_children() == []


# -- defect 2: a worker's last frames before it exits -------------------------------

_FLOOD_THEN_EXIT = """
frames = b"".join(struct.pack(">HI", 1, 32) + i.to_bytes(4, "big") * 8 for i in range(5000))
while frames:
    frames = frames[os.write(3, frames):]
os._exit(0)
"""


def test_every_frame_written_before_exit_is_delivered_while_the_parent_writes(
    loop: Loop,
) -> None:
    # The worker writes 5,000 frames and exits without reading; the parent
    # keeps writing to it, so its sends fail (EPIPE) while the worker's
    # frames still sit unread in the parent's socket. All must arrive, in
    # order, before on_exit.
    got: list[int] = []
    at_exit: list[int] = []

    def on_frame(w: Worker, chan: int, data: Any) -> None:
        got.append(int.from_bytes(data[:4], "big"))
        try:
            w.write_frame(2, bytes(4096))
        except ConnClosedError:
            pass  # the worker is gone: writing to it is over

    w = spawn(
        loop,
        py_exec(_FLOOD_THEN_EXIT),
        on_frame=on_frame,
        on_exit=lambda w: at_exit.append(len(got)),
    )
    for _ in range(64):
        w.write_frame(2, bytes(65536))
    assert loop.run_until(lambda: w.done, timeout=20)
    assert at_exit == [5000], f"{len(got)} of 5000 frames delivered before on_exit"
    assert got == list(range(5000))


# -- the worker's context, exit future, context manager, the module ------------------


def test_a_target_can_ask_for_a_worker_context(loop: Loop) -> None:
    rec = Recorder()
    w = spawn(loop, "tests.workers:ctx_hello", "hi", **rec.kwargs())
    assert loop.run_until(lambda: rec.frames, timeout=20)
    info = json.loads(rec.frames[0][1])
    assert info == {
        "greeting": "hi",
        "target": "tests.workers:ctx_hello",
        "args": ["hi"],
        "endpoints": ["parent"],
    }
    assert loop.run_until(lambda: w.ready, timeout=10)
    w.close()
    finish(loop, w)


def test_exited_is_a_future_of_the_exit_status(loop: Loop) -> None:
    w = spawn(loop, workers.idle)
    fut = w.exited()
    assert fut is w.exited() and not fut.done()
    seen: list[int] = []
    fut.add_done_callback(lambda f: seen.append(f.result()))
    w.close()
    assert loop.run_until(fut.done, timeout=20)
    assert fut.result() == 0 and seen == [0] and w.done
    assert w.exited().result() == 0
    assert isinstance(fut, evloop.Future)


def test_worker_is_a_context_manager(loop: Loop) -> None:
    got: list[bytes] = []
    with spawn(loop, workers.echo, on_frame=lambda w, c, p: got.append(bytes(p))) as w:
        w.write_frame(1, b"ping")
        assert loop.run_until(lambda: got, timeout=20)
    assert w.done and w.returncode == 0 and got == [b"ping"]


def test_import_evloop_spawn_gives_the_module_and_calling_it_still_works(loop: Loop) -> None:
    import types

    import evloop.spawn as module

    assert isinstance(module, types.ModuleType) and module.__name__ == "evloop.spawn"
    assert evloop.spawn is module and evloop.spawn_worker is module.spawn
    w = evloop.spawn(loop, ["true"])  # the module is callable, for older code
    assert isinstance(w, Worker)
    assert loop.run_until(lambda: w.done, timeout=20)


def test_spawn_refuses_to_run_in_a_worker_importing_its_target(loop: Loop) -> None:
    rec = Recorder()
    w = spawn(loop, "tests.recursive_worker:work", **rec.kwargs())
    finish(loop, w)
    assert w.returncode == 1 and rec.frames == []
    assert w.error is not None and w.error.remote_type == "evloop.errors.SpawnError"
    assert "__main__" in w.error.remote_message


_MAIN_SCRIPT = """
import sys
from evloop import Loop
from evloop.spawn import spawn

def work(loop, pipe, word):
    pipe.write_frame(1, (__name__ + " " + word).encode())

if __name__ == "__main__":
    loop = Loop()
    got = []
    w = spawn(loop, work, "hi", on_frame=lambda w, c, p: got.append(bytes(p)))
    assert loop.run_until(lambda: got, timeout=20), "no frame"
    print(w.target, got[0].decode())
    w.close()
    assert loop.run_until(lambda: w.done, timeout=20)
    loop.close()
"""


def test_functions_of_the_main_script_are_targets(tmp_path: Any) -> None:
    script = tmp_path / "main_script.py"
    script.write_text(_MAIN_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=50, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    target, name, word = out.stdout.split()
    # The worker imported the script by path, under a name other than
    # __main__, so its __main__ block did not run there.
    assert target == f"{script}:work" and name == "__evloop_main__" and word == "hi"


def test_a_main_without_a_file_is_refused_with_how_to_fix_it() -> None:
    code = (
        "from evloop.spawn import target_name\n"
        "def f(loop, pipe): pass\n"
        "try:\n"
        "    target_name(f)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert "has no script file" in out.stdout and "module:function" in out.stdout


def test_flush_sends_a_workers_progress_from_inside_a_long_callback(loop: Loop) -> None:
    got: list[bytes] = []
    worker = spawn(
        loop, "tests.workers:flush_progress", on_frame=lambda w, c, d: got.append(bytes(d))
    )
    try:
        worker.write_frame(0, b"go")
        assert loop.run_until(lambda: got == [b"progress"], timeout=20), got
        os.kill(worker.pid, signal.SIGUSR1)  # the callback may return now
        assert loop.run_until(lambda: got == [b"progress", b"done"], timeout=20), got
    finally:
        worker.close()
        loop.run_until(lambda: worker.done, timeout=10)
