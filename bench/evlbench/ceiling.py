# bench/evlbench/ceiling.py
#
# The C ceiling: bench/ceiling.c, plain blocking reads and writes with
# no event loop, is what this machine's AF_UNIX socketpair can do for our
# frame format. It is compiled with `cc -O2` (or $CC) into build/bench/ of the
# source tree when the binary is missing or older than the source, and run
# once per measurement; it forks its own peer and prints one JSON line.
# Without a compiler or a source tree the system is Unsupported, not broken.
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .common import BENCH_ROOT, REPO_ROOT, RTT_SIZE, Latency, PoolResult, Throughput, Unsupported

SOURCE = BENCH_ROOT / "ceiling.c"
BINARY = REPO_ROOT / "build" / "bench" / "ceiling"
RUN_TIMEOUT = 600.0  # the harness's own per-measurement timeout is the real bound


def _compiler() -> list[str] | None:
    cc = shlex.split(os.environ.get("CC", "cc"))
    if cc and shutil.which(cc[0]):
        return cc
    return None


def unavailable(**opts: Any) -> str | None:
    if not SOURCE.exists():
        return f"{SOURCE} not found (not a source checkout)"
    if not _is_fresh() and _compiler() is None:
        return "no C compiler (cc) found — skipped"
    return None


def _is_fresh() -> bool:
    try:
        return BINARY.stat().st_mtime >= SOURCE.stat().st_mtime
    except FileNotFoundError:
        return False


def binary() -> Path:
    """The compiled ceiling program, built first if it is missing or stale.
    Compiles to a temporary name and renames, so concurrent runs never see a
    half-written binary."""
    reason = unavailable()
    if reason:
        raise Unsupported(reason)
    if _is_fresh():
        return BINARY
    cc = _compiler()
    assert cc is not None
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    tmp = BINARY.with_name(f"{BINARY.name}.{os.getpid()}.tmp")
    argv = [*cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed:\n{done.stderr}")
        os.replace(tmp, BINARY)
    finally:
        tmp.unlink(missing_ok=True)
    return BINARY


def _run(*args: str) -> dict[str, Any]:
    argv = [str(binary()), *args]
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


def pool(workers: int, requests: int, window: int, **opts: Any) -> PoolResult:
    raise Unsupported("n/a (the C ceiling has no pool workload)")
