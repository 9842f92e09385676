# Run the example daemons as real processes, and find the real clients.
from __future__ import annotations

import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def need(tool: str) -> str:
    """The path of a real client program, or skip the test saying why."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(
            f"{tool} is not installed (make test installs redis-tools, redis-server, wrk, "
            "curl and openssl with apt-get when it runs as root; install them to run this test)"
        )
    return path


class Daemon:
    def __init__(self, proc: subprocess.Popen[str], port: int):
        self.proc = proc
        self.port = port


@contextmanager
def daemon(script: str, *args: str, timeout: float = 30.0) -> Iterator[Daemon]:
    """Start examples/<script> --port 0 *args, wait for its "listening on"
    line, yield it; then SIGTERM and reap it (SIGKILL if it lingers), and
    check no worker process is left."""
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=EXAMPLES,
        start_new_session=True,
    )
    try:
        port = _wait_listening(proc, timeout)
        yield Daemon(proc, port)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            pass
        else:  # a worker outlived the parent: kill it, then fail
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{script}: processes left in its group after it exited")
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def _wait_listening(proc: subprocess.Popen[str], timeout: float) -> int:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError("daemon did not start listening in time")
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read() if proc.stderr else ""
                raise AssertionError(f"daemon exited before listening: {err}")
            m = re.search(r"listening on \S*?:(\d+)", line)
            if m:
                return int(m.group(1))
    finally:
        sel.close()


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def recv_until(sock: socket.socket, pred, limit: int = 1 << 26) -> bytes:
    """Read until pred(data) holds or EOF; the socket's timeout bounds each read."""
    data = b""
    while not pred(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise AssertionError("too much data")
    return data
