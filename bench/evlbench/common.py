# bench/evlbench/common.py
#
# What every system in the benchmark shares: the wire format, the payloads,
# the result types, the registry of systems, and the helpers that start and
# reap the child processes at the other end of each workload.
#
# The contract for a system module (a peer, or evloop's own evl.py):
#
#   throughput(size, duration, **opts) -> Throughput
#   rtt(count, **opts) -> Latency
#   pool(workers, requests, window, **opts) -> PoolResult
#
# Any of them may raise Unsupported("reason"). The opts are the ones the
# registry below gives for the system. The `system` field of a result may hold
# any label: the harness replaces it with the registry name. A module may also
# define `unavailable(**opts) -> str | None`, which the harness asks once
# before measuring, so that a missing dependency costs one line, not a run.
#
# A module that spawns children with spawn_child() defines
# `child(role, fd, **params)`; evlbench.worker calls it in the child.
#
# Every socketpair in the benchmark keeps the kernel's default buffer sizes
# (no SO_SNDBUF/SO_RCVBUF tuning anywhere), so every system sees the same pipe.
from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --- wire format -----------------------------------------------------------

HEADER = struct.Struct(">HI")  # channel id (u16 BE) | payload length (u32 BE)
HEADER_SIZE = HEADER.size
CHANNEL = 1
RTT_SIZE = 64  # payload of every rtt frame
REQUEST_SIZE = 64  # payload of every pool request and reply
REQUEST_ID = struct.Struct(">I")  # a pool request's correlation id, first in its payload

WORKLOADS = ("throughput", "rtt", "pool")
SIZES = (64, 1024, 64 * 1024, 1024 * 1024)


class Unsupported(Exception):
    """Raised by a system's workload function when the system cannot run that
    workload here (a missing dependency, or a workload it does not have). The
    harness reports the reason and carries on; it is not a failure."""


class BadFrame(Exception):
    """Raised by a receiver when a frame's channel or length is not the one the
    workload sent, or the stream ended inside a frame: the system under test
    corrupted or lost data."""


class ChildFailed(Exception):
    """Raised when a benchmark child process exits non-zero, is killed, or does
    not exit in time after its workload ended."""


def payload(size: int) -> bytes:
    """The fixed, random-looking payload of `size` bytes (seeded by size, so
    every system and every process builds the same bytes, once)."""
    return random.Random(size).randbytes(size)


def frame(size: int, chan: int = CHANNEL) -> bytes:
    """One complete frame carrying payload(size)."""
    return HEADER.pack(chan, size) + payload(size)


def check_header(chan: int, length: int, size: int) -> None:
    """Raise BadFrame unless a header says (CHANNEL, size)."""
    if chan != CHANNEL or length != size:
        raise BadFrame(
            f"frame on channel {chan} with {length} bytes, expected channel {CHANNEL} with {size}"
        )


def clock_batch(size: int) -> int:
    """How many frames a throughput sender writes between looks at the clock:
    about 256 KiB worth, so the clock costs nothing at 64 B and the deadline
    is still met within a few milliseconds at 1 MiB."""
    return max(1, (256 * 1024) // (HEADER_SIZE + size))


def rtt_warmup(count: int) -> int:
    """Round trips made before the timed ones (connection set-up, caches)."""
    return max(1, min(1000, count // 10))


def request_filler() -> bytes:
    """The bytes after the correlation id in a pool request."""
    return payload(REQUEST_SIZE - REQUEST_ID.size)


# --- results ---------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    """One-way framed throughput: `frames` frames carrying `bytes` payload
    bytes arrived in `seconds`, timed from the first byte received to EOF."""

    system: str
    size: int
    frames: int
    bytes: int
    seconds: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    @property
    def figure(self) -> float:
        """The number a higher-is-better comparison uses."""
        return self.mb_per_s


@dataclass(frozen=True)
class Latency:
    """`count` sequential round trips took `seconds` in all; per-trip mean and
    99th percentile (nearest rank) in microseconds."""

    system: str
    count: int
    seconds: float
    mean_us: float
    p99_us: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def figure(self) -> float:
        return self.per_s

    @classmethod
    def from_samples(cls, system: str, samples_ns: Sequence[int], seconds: float) -> Latency:
        """Summarise per-trip times recorded with time.perf_counter_ns()."""
        if not samples_ns:
            raise ValueError("no round trips recorded")
        mean = sum(samples_ns) / len(samples_ns)
        return cls(system, len(samples_ns), seconds, mean / 1e3, percentile(samples_ns, 99) / 1e3)


@dataclass(frozen=True)
class PoolResult:
    """`requests` requests answered by `workers` worker processes in `seconds`."""

    system: str
    workers: int
    requests: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def figure(self) -> float:
        return self.per_s


Result = Throughput | Latency | PoolResult
RESULT_TYPES: dict[str, type[Throughput] | type[Latency] | type[PoolResult]] = {
    "throughput": Throughput,
    "rtt": Latency,
    "pool": PoolResult,
}


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least pct% of the
    samples at or below it."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = -(-len(ordered) * pct // 100)  # ceiling without floats drifting
    return ordered[max(0, int(rank) - 1)]


@dataclass
class Measurement:
    """The outcome of one (workload, size, system) cell of the run. `status` is
    "ok", "unsupported" (skipped with a reason), "failed" or "timeout";
    `result` is the best of `repeats` when at least one run was ok."""

    workload: str
    system: str
    size: int | None = None
    status: str = "ok"
    result: Result | None = None
    reason: str = ""
    repeats: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.result is not None

    @property
    def broken(self) -> bool:
        return self.status in ("failed", "timeout")


def result_from_dict(workload: str, data: dict[str, Any]) -> Result:
    return RESULT_TYPES[workload](**data)


# --- the registry ----------------------------------------------------------

# name -> (module path, opts passed to every workload function)
SYSTEMS: dict[str, tuple[str, dict[str, Any]]] = {
    "evloop": ("evlbench.evl", {}),
    "evloop-budget1": ("evlbench.evl", {"budget": 1}),
    "asyncio-streams": ("evlbench.aio", {"loop": "asyncio", "api": "streams"}),
    "asyncio-protocol": ("evlbench.aio", {"loop": "asyncio", "api": "protocol"}),
    "uvloop-streams": ("evlbench.aio", {"loop": "uvloop", "api": "streams"}),
    "uvloop-protocol": ("evlbench.aio", {"loop": "uvloop", "api": "protocol"}),
    "multiprocessing": ("evlbench.mp", {}),
    "c": ("evlbench.ceiling", {}),
}
EVLOOP = "evloop"  # the system whose ratios the table shows
UVLOOP_SYSTEMS = ("uvloop-streams", "uvloop-protocol")


# --- children --------------------------------------------------------------

# bench/ (the directory holding the `evlbench` package) and the source tree
# above it (holding `evloop`), put first on every child's path so that
# `-m evlbench.worker` finds this very tree whatever the cwd.
BENCH_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = BENCH_ROOT.parent


def child_env() -> dict[str, str]:
    """The environment of a child process: ours, with bench/ and the source
    tree first on PYTHONPATH."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH_ROOT), str(REPO_ROOT)] + ([path] if path else [])
    )
    return env


def spawn_child(module: str, role: str, fd: int, **params: Any) -> subprocess.Popen[bytes]:
    """Start a fresh interpreter running `module.child(role, fd, **params)`,
    with `fd` (one end of a socketpair) passed down under the same number. A
    fresh interpreter rather than a fork: forking a process that has an event
    loop is unfair to some systems and unsafe for others."""
    env = child_env()
    argv = [sys.executable, "-m", "evlbench.worker", module, role, str(fd), json.dumps(params)]
    return subprocess.Popen(argv, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)


class Children:
    """The children of one workload. Leaving the `with` block normally waits
    for each to exit (they exit by themselves once the workload ends) and
    raises ChildFailed if one failed; leaving it by an exception kills them
    first. Either way every child is reaped."""

    def __init__(self, exit_timeout: float = 20.0) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exit_timeout = exit_timeout

    def spawn(self, module: str, role: str, fd: int, **params: Any) -> subprocess.Popen[bytes]:
        proc = spawn_child(module, role, fd, **params)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Children:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
        deadline = time.monotonic() + self.exit_timeout
        failures = []
        for proc in self.procs:
            try:
                rc = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                failures.append(f"child {proc.pid} did not exit within {self.exit_timeout:g} s")
                continue
            if rc != 0 and exc_type is None:
                failures.append(f"child {proc.pid} exited with status {rc}")
        if failures and exc_type is None:
            raise ChildFailed("; ".join(failures))


# --- sizes -----------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1024,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 1 << 20,
}


def parse_size(text: str) -> int:
    """'64', '1K', '64KiB', '1M', '1MiB' -> bytes (binary units)."""
    raw = text.strip().lower().replace(" ", "")
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(digits) :]
    if not digits or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r}")
    return int(digits) * _UNITS[unit]


def size_label(size: int) -> str:
    """64 -> '64 B', 1024 -> '1 KiB', 1048576 -> '1 MiB'."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"
