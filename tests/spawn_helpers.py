# tests/spawn_helpers.py
#
# Process bookkeeping shared by tests/test_spawn.py and tests/test_pool.py.
from __future__ import annotations

import os
import sys

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
