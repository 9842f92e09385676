# bench/evlbench/ceiling.py
#
# The C ceiling: bench/ceiling.c, plain blocking reads and writes with no
# event loop, is what this machine's AF_UNIX socketpair can do for our frame
# format, end to end (throughput) and per round trip (rtt). It is compiled on
# demand (cbuild) and run once per measurement; it forks its own peer and
# prints one JSON line.
from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any

from .cbuild import CProgram
from .common import RTT_SIZE, Latency, Throughput

PROGRAM = CProgram("ceiling", "ceiling.c")
RUN_TIMEOUT = 600.0  # the harness's own per-measurement timeout is the real bound


def unavailable(**opts: Any) -> str | None:
    return PROGRAM.unavailable()


def _run(*args: str) -> dict[str, Any]:
    argv = [str(PROGRAM.path()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {done.returncode}:\n{done.stderr}")
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return data


def throughput(size: int, duration: float, **opts: Any) -> Throughput:
    out = _run("throughput", str(size), repr(float(duration)))
    return Throughput("c", size, out["frames"], out["bytes"], out["seconds"])


def rtt(count: int, **opts: Any) -> Latency:
    out = _run("rtt", str(count), str(RTT_SIZE))
    return Latency("c", out["count"], out["seconds"], out["mean_us"], out["p99_us"])
