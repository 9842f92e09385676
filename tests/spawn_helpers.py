# tests/spawn_helpers.py
#
# Process bookkeeping shared by tests/test_spawn.py and tests/test_pool.py.
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

# A `python -c` program's prelude: send(chan, data) writes one frame to fd 3.
PY_PRELUDE = (
    "import os, struct, sys\n"
    "def send(chan, data):\n"
    "    frame = struct.pack('>HI', chan, len(data)) + data\n"
    "    while frame:\n"
    "        frame = frame[os.write(3, frame):]\n"
)


def py_exec(code: str) -> list[str]:
    """argv running `code` (after PY_PRELUDE) in a plain Python process."""
    return [sys.executable, "-c", PY_PRELUDE + code]


def zombie_children() -> list[int]:
    """Pids of our own children that have exited but were not reaped."""
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] == b"Z" and int(fields[1]) == me:
            out.append(int(name))
    return out


def fd_count() -> int:
    # One of the entries is listdir's own fd; it is there on every call.
    return len(os.listdir("/proc/self/fd"))


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def wait_until(loop: Any, cond: Callable[[], Any], timeout: float = 20.0) -> bool:
    """Run `loop` until cond() holds or `timeout` REAL seconds pass. For
    loops on a VirtualClock, whose run_until(timeout=...) deadline is a
    virtual timer the clock would jump to while a worker process is still
    starting: here the deadline is the machine's, and the virtual clock
    still jumps to the loop's own timers when nothing else happens."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        # Timers pending: the clock jumps to the next after its idle
        # threshold. None: wait for fds a little, then look again.
        loop.run_once(None if loop.next_timeout() is not None else 0.25)
    return True
