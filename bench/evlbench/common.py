# bench/evlbench/common.py
#
# What every system in the benchmark shares: the wire format, the payloads,
# the result types, the frame sink every receiver calls, and the helpers that
# start and reap the child processes at the other end of each workload. The
# registry of systems and workloads is registry.py.
#
# The contract for a system module (a peer, or evloop's own evl.py): one
# function per workload it takes part in, named after the workload, called
# with the workload's parameters (see registry.WORKLOADS) and the system's
# opts (registry.SYSTEMS) as keyword arguments, returning that workload's
# result type:
#
#   throughput(size, duration)                                   -> Throughput
#   recv(size, duration, batch)                                  -> Throughput
#   send(size, duration)                                         -> Throughput
#   many(conns, mode, duration, frames, size, batch, trickle, pause_us) -> ManyResult
#   memory(conns)                                                -> MemoryResult
#   rtt(count)                                                   -> Latency
#   pool(workers, requests, window)                              -> PoolResult
#
# Any of them may raise Unsupported("reason"). The `system` field of a result
# may hold any label: the harness replaces it with the registry name. A
# module may also define `unavailable(**opts) -> str | None`, which the
# harness asks once before measuring, so that a missing dependency costs one
# line, not a run.
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
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# --- wire format -----------------------------------------------------------

HEADER = struct.Struct(">HI")  # channel id (u16 BE) | payload length (u32 BE)
HEADER_SIZE = HEADER.size
CHANNEL = 1
RTT_SIZE = 64  # payload of every rtt frame
REQUEST_SIZE = 64  # payload of every pool request and reply
REQUEST_ID = struct.Struct(">I")  # a pool request's correlation id, first in its payload

SIZES = (64, 1024, 64 * 1024, 1024 * 1024)  # throughput's frame sizes


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


def c_payload(size: int) -> bytes:
    """The payload of every frame the C writer (bench/cpeer.c) sends."""
    return bytes((j * 131 + 7) & 0xFF for j in range(size))


def request_filler() -> bytes:
    """The bytes after the correlation id in a pool request."""
    return payload(REQUEST_SIZE - REQUEST_ID.size)


# --- results ---------------------------------------------------------------
#
# Every result type names its headline figure (`figure`), whether more of it
# is better, its unit, and the columns the table shows; the report takes the
# median and the min-max spread of each over the repeats.

Columns = tuple[tuple[str, str], ...]  # (attribute, heading)


@dataclass(frozen=True)
class Throughput:
    """Framed throughput: `frames` frames carrying `bytes` payload bytes in
    `seconds`, timed from the first frame (or byte) to the end of the stream."""

    system: str
    size: int
    frames: int
    bytes: int
    seconds: float

    HIGHER_IS_BETTER: ClassVar[bool] = True
    UNIT: ClassVar[str] = "frames/s"
    COLUMNS: ClassVar[Columns] = (("frames_per_s", "frames/s"), ("mb_per_s", "MB/s"))

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    @property
    def figure(self) -> float:
        """The headline number (at one frame size frames/s and MB/s give the
        same ratios)."""
        return self.frames_per_s


@dataclass(frozen=True)
class Latency:
    """`count` sequential round trips took `seconds` in all; per-trip mean and
    99th percentile (nearest rank) in microseconds."""

    system: str
    count: int
    seconds: float
    mean_us: float
    p99_us: float

    HIGHER_IS_BETTER: ClassVar[bool] = True
    UNIT: ClassVar[str] = "round trips/s"
    COLUMNS: ClassVar[Columns] = (
        ("per_s", "round trips/s"),
        ("mean_us", "mean µs"),
        ("p99_us", "p99 µs"),
    )

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

    HIGHER_IS_BETTER: ClassVar[bool] = True
    UNIT: ClassVar[str] = "requests/s"
    COLUMNS: ClassVar[Columns] = (("per_s", "requests/s"),)

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def figure(self) -> float:
        return self.per_s


@dataclass(frozen=True)
class ManyResult:
    """`frames` frames received over `conns` connections on one loop, with
    the wall time and the receiving process's CPU time (user + system) from
    the first frame to the end of the last connection. The headline is CPU
    ns per frame: in trickle mode the wall clock mostly measures the writer's
    pauses, and in flood mode the receiver is the bottleneck, so the two
    agree there (both are shown)."""

    system: str
    conns: int
    mode: str
    frames: int
    seconds: float
    cpu_seconds: float

    HIGHER_IS_BETTER: ClassVar[bool] = False
    UNIT: ClassVar[str] = "CPU ns/frame"
    COLUMNS: ClassVar[Columns] = (
        ("cpu_ns_per_frame", "CPU ns/frame"),
        ("wall_ns_per_frame", "wall ns/frame"),
        ("frames_per_s", "frames/s"),
    )

    @property
    def cpu_ns_per_frame(self) -> float:
        return self.cpu_seconds * 1e9 / self.frames if self.frames else 0.0

    @property
    def wall_ns_per_frame(self) -> float:
        return self.seconds * 1e9 / self.frames if self.frames else 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def figure(self) -> float:
        return self.cpu_ns_per_frame


@dataclass(frozen=True)
class MemoryResult:
    """Resident memory of `conns` idle connections in one fresh process.
    `sockets_bytes` is what creating the bare sockets (this process's end of
    each socketpair, a Python socket object; common.IdleSockets) added to
    RSS; `wrapped_bytes` is what wrapping each in the system's connection
    objects, registered on its loop, added on top of that. The headline is
    wrapped_bytes per connection."""

    system: str
    conns: int
    sockets_bytes: int
    wrapped_bytes: int

    HIGHER_IS_BETTER: ClassVar[bool] = False
    UNIT: ClassVar[str] = "KiB/conn"
    COLUMNS: ClassVar[Columns] = (
        ("kib_per_conn", "KiB/conn"),
        ("socket_kib_per_pair", "bare socket KiB"),
    )

    @property
    def kib_per_conn(self) -> float:
        return self.wrapped_bytes / 1024 / self.conns if self.conns else 0.0

    @property
    def socket_kib_per_pair(self) -> float:
        return self.sockets_bytes / 1024 / self.conns if self.conns else 0.0

    @property
    def figure(self) -> float:
        return self.kib_per_conn


Result = Throughput | Latency | PoolResult | ManyResult | MemoryResult
ResultType = (
    type[Throughput] | type[Latency] | type[PoolResult] | type[ManyResult] | type[MemoryResult]
)


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
    """The outcome of one (workload, case, system) cell of the run: every
    repeat that ran, in order. `status` is "ok", "unsupported" (skipped with a
    reason), "failed" or "timeout"; a cell where any repeat failed is failed
    (a system that crashes one time in three has not been measured)."""

    workload: str
    system: str
    case: str
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""
    repeats: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.repeats)

    @property
    def broken(self) -> bool:
        return self.status in ("failed", "timeout")

    def values(self, attr: str = "figure") -> list[float]:
        return [float(getattr(r, attr)) for r in self.repeats]

    def median(self, attr: str = "figure") -> float:
        """The median over the repeats (never the best)."""
        return float(statistics.median(self.values(attr)))

    def spread(self, attr: str = "figure") -> tuple[float, float]:
        """(min, max) over the repeats."""
        vals = self.values(attr)
        return min(vals), max(vals)


# --- the frame sink ------------------------------------------------------------


@dataclass(frozen=True)
class SinkState:
    frames: int
    t0: float  # perf_counter() at the first frame
    cpu0: float  # process_time() at the first frame
    last: Any  # the last payload delivered
    bad: tuple[int, int] | None  # (channel, length) of the first wrong frame


def frame_sink(size: int) -> tuple[Callable[[int, Any], None], Callable[[], SinkState]]:
    """The per-frame callback every receive-side workload gives every system,
    so that each does exactly the same work per frame: count it, keep the
    payload (the last one is compared with what the writer sent), check its
    channel and length. Returns (on_frame, state)."""
    frames = 0
    t0 = cpu0 = 0.0
    last: Any = None
    bad: tuple[int, int] | None = None
    clock, cpu = time.perf_counter, time.process_time

    def on_frame(chan: int, data: Any) -> None:
        nonlocal frames, t0, cpu0, last, bad
        if not frames:
            t0 = clock()
            cpu0 = cpu()
        frames += 1
        last = data
        if chan != CHANNEL or len(data) != size:
            if bad is None:
                bad = (chan, len(data))

    def state() -> SinkState:
        return SinkState(frames, t0, cpu0, last, bad)

    return on_frame, state


def check_sink(st: SinkState, expected_frames: int | None, expected_last: bytes) -> None:
    """Raise BadFrame unless the receiver got every frame the writer wrote,
    each well formed, the last one with the right bytes."""
    if st.bad is not None:
        raise BadFrame(f"a frame on channel {st.bad[0]} with {st.bad[1]} bytes")
    if st.frames == 0:
        raise BadFrame("nothing received")
    if expected_frames is not None and st.frames != expected_frames:
        raise BadFrame(f"received {st.frames} frames; the writer wrote {expected_frames}")
    if bytes(st.last) != expected_last:
        raise BadFrame("the last payload differs from the one written")


# --- resources -----------------------------------------------------------------


def raise_nofile(need: int) -> None:
    """Make room for `need` open descriptors (as root, the hard limit is
    raised too); Unsupported if the system will not allow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
    except (ValueError, OSError) as e:
        raise Unsupported(f"cannot raise RLIMIT_NOFILE to {need} (hard limit {hard}): {e}") from e


_HOLDER = """
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
ctl = socket.socket(fileno=int(sys.argv[1]))
kept = []
while True:
    msg, fds, _, _ = socket.recv_fds(ctl, 16, 253)
    if not msg:
        break
    kept.extend(fds)
    ctl.send(b"k")
"""


class IdleSockets:
    """`n` connected socketpairs, idle, of which this process keeps one end
    each (`socks`); a helper process holds the other ends, passed to it over
    SCM_RIGHTS as they are made. Keeping both ends here would need 2n
    descriptors, and where the hard RLIMIT_NOFILE is 20,000 (as on the
    development VM, even for root) 10,000 connections would not fit."""

    BATCH = 250  # fds per message (the kernel's SCM_MAX_FD is 253)

    def __init__(self, n: int) -> None:
        raise_nofile(n + 512)
        ctl, theirs = socket.socketpair()
        self._ctl = ctl
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.socks: list[socket.socket] = []
        try:
            for start in range(0, n, self.BATCH):
                batch = [socket.socketpair() for _ in range(min(self.BATCH, n - start))]
                socket.send_fds(ctl, [b"f"], [b.fileno() for _, b in batch])
                if ctl.recv(1) != b"k":
                    raise ChildFailed("the socket holder went away")
                for ours, other in batch:
                    other.close()  # the holder has its own reference now
                    self.socks.append(ours)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self._ctl.close()  # the holder's EOF
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


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
