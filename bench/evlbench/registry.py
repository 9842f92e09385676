# bench/evlbench/registry.py
#
# What the benchmark measures: the workloads (each a list of cases built from
# the command line) and the systems (each a module, the opts passed to its
# functions, and the workloads it takes part in).
#
# Adding a system is one entry in SYSTEMS: a module implementing the
# functions named after its workloads (the contract is in common.py), the
# opts they get, the workloads it runs, and a line saying what it is. A
# system that needs something that may be missing (a library, a server)
# gives its module an `unavailable(**opts)` that says why, and its rows are
# skipped rather than failed. Adding a workload is one entry in WORKLOADS
# (its result type in common.py, its cases and timeout here), a function of
# that name in each module that runs it, and, if it has targets, a line in
# report.TARGETS.
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .common import (
    Latency,
    ManyResult,
    MemoryResult,
    PoolResult,
    ResultType,
    Throughput,
    size_label,
)

EVLOOP = "evloop"  # the system whose ratios the tables show


@dataclass(frozen=True)
class Case:
    """One column of a workload's plan: a label and the parameters every
    system's function gets."""

    label: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Workload:
    name: str
    result: ResultType
    about: str  # what one measurement does, for the table title and the README
    cases: Callable[[argparse.Namespace], list[Case]]
    timeout: Callable[[dict[str, Any]], float]  # hard limit for one measurement, seconds


def _sized(sizes_attr: str, extra: Callable[[argparse.Namespace], dict[str, Any]]) -> Any:
    def cases(args: argparse.Namespace) -> list[Case]:
        return [
            Case(size_label(s), {"size": s, "duration": args.duration, **extra(args)})
            for s in getattr(args, sizes_attr)
        ]

    return cases


def _many_cases(args: argparse.Namespace) -> list[Case]:
    return [
        Case(
            f"{mode} N={n}",
            {
                "conns": n,
                "mode": mode,
                "duration": args.many_duration,
                "frames": args.many_frames,
                "size": 64,
                "batch": args.batch,
                "trickle": args.trickle,
                "pause_us": args.pause_us,
            },
        )
        for mode in args.many_modes
        for n in args.many_conns
    ]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "throughput",
            Throughput,
            "one way between two processes, each end the same system; the sender writes "
            "one frame per call under its flow control, the receiver checks and counts each",
            _sized("sizes", lambda a: {}),
            lambda p: 30.0 + 4 * p["duration"],
        ),
        Workload(
            "recv",
            Throughput,
            "receive only: a C writer floods one socketpair ({batch} frames per write); "
            "one callback per frame with its own bytes payload",
            _sized("recv_sizes", lambda a: {"batch": a.batch}),
            lambda p: 30.0 + 4 * p["duration"],
        ),
        Workload(
            "send",
            Throughput,
            "send only: one frame per call under the system's flow control; a C reader "
            "drains the socket and checks every header",
            _sized("send_sizes", lambda a: {}),
            lambda p: 30.0 + 4 * p["duration"],
        ),
        Workload(
            "many",
            ManyResult,
            "N socketpairs on one loop, one C writer round-robin: flood (about {many_frames:,} "
            "frames in all, {batch} per write per connection) or trickle ({trickle} frames "
            "per connection, then a {pause_us} µs pause, for {many_duration:g} s); "
            "receiver CPU ns per frame, lower is better",
            _many_cases,
            lambda p: 40.0 + 4 * p["duration"] + 2e-5 * p["frames"] + 0.02 * p["conns"],
        ),
        Workload(
            "memory",
            MemoryResult,
            "RSS added per idle connection (Conn+Pipe, or transport+Protocol) on top of "
            "the bare sockets, in a fresh process; lower is better",
            lambda a: [Case(f"{a.memory_conns:,} idle", {"conns": a.memory_conns})],
            lambda p: 60.0 + 0.005 * p["conns"],
        ),
        Workload(
            "rtt",
            Latency,
            "sequential round trips of one 64 B frame, parent to echoing child and back",
            lambda a: [Case("64 B", {"count": a.count})],
            lambda p: 30.0 + 1e-3 * p["count"],
        ),
        Workload(
            "pool",
            PoolResult,
            "requests of 64 B with correlation ids spread over worker processes, "
            "a window of requests in flight per worker",
            lambda a: [
                Case(
                    f"{a.workers} workers, window {a.window}",
                    {"workers": a.workers, "requests": a.requests, "window": a.window},
                )
            ],
            lambda p: 30.0 + 1e-3 * p["requests"] + 2.0 * p["workers"],
        ),
    )
}


@dataclass(frozen=True)
class System:
    module: str
    opts: dict[str, Any]
    workloads: tuple[str, ...]
    about: str
    tags: frozenset[str] = field(default_factory=frozenset)


ALL = tuple(WORKLOADS)
_AIO = "evlbench.aio"
SYSTEMS: dict[str, System] = {
    "evloop": System(
        "evlbench.evl", {}, ALL, "evloop defaults: Conn + Pipe, spawn, Pool", frozenset({"evloop"})
    ),
    "evloop-budget1": System(
        "evlbench.evl",
        {"budget": 1},
        ("throughput", "recv"),
        "evloop with Loop(budget=1), the design's one frame per readiness",
        frozenset({"evloop"}),
    ),
    "evloop-socketpair": System(
        "evlbench.evl",
        {"child": "socketpair"},
        ("rtt",),
        "evloop with a plain Conn+Pipe echo child instead of spawn(): the busy-poll row's baseline",
        frozenset({"evloop"}),
    ),
    "evloop-busypoll": System(
        "evlbench.evl",
        {"busy_poll": 0.0001},
        ("rtt",),
        "evloop with Loop(busy_poll=0.0001) on both ends (opt-in; burns CPU)",
        frozenset({"evloop"}),
    ),
    "asyncio-streams": System(
        _AIO,
        {"loop": "asyncio", "api": "streams"},
        ("throughput", "rtt", "pool"),
        "asyncio StreamReader.readexactly / StreamWriter.write + drain",
        frozenset({"asyncio"}),
    ),
    "asyncio-protocol": System(
        _AIO,
        {"loop": "asyncio", "api": "protocol"},
        ALL,
        "asyncio Protocol slicing frames out of data_received, transport.write per frame",
        frozenset({"asyncio"}),
    ),
    "asyncio-protocol-batched": System(
        _AIO,
        {"loop": "asyncio", "api": "protocol", "batched": True},
        ("throughput", "send", "pool"),
        "the same, frames appended to a bytearray, one transport.write per loop iteration",
        frozenset({"asyncio"}),
    ),
    "uvloop-streams": System(
        _AIO,
        {"loop": "uvloop", "api": "streams"},
        ("throughput", "rtt", "pool"),
        "asyncio streams on uvloop",
        frozenset({"uvloop"}),
    ),
    "uvloop-protocol": System(
        _AIO,
        {"loop": "uvloop", "api": "protocol"},
        ALL,
        "the asyncio Protocol peer on uvloop",
        frozenset({"uvloop"}),
    ),
    "uvloop-protocol-batched": System(
        _AIO,
        {"loop": "uvloop", "api": "protocol", "batched": True},
        ("throughput", "send", "pool"),
        "the batching Protocol peer on uvloop",
        frozenset({"uvloop"}),
    ),
    "multiprocessing": System(
        "evlbench.mp",
        {},
        ("throughput", "send", "rtt", "pool"),
        "multiprocessing.connection.Connection send_bytes/recv_bytes",
    ),
    "python-floor": System(
        "evlbench.floor",
        {},
        ("recv",),
        "no framework: blocking recv_into a 1 MiB bytearray, evloop.codec.scan_frames, "
        "one bytes copy and one callback per frame",
        frozenset({"floor"}),
    ),
    "blocking-socket": System(
        "evlbench.floor",
        {},
        ("rtt",),
        "no framework: blocking recv_into/sendall echo in both processes",
        frozenset({"floor"}),
    ),
    "c": System(
        "evlbench.ceiling",
        {},
        ("throughput", "rtt"),
        "the C ceiling (bench/ceiling.c): blocking read/write, no interpreter",
    ),
}


def systems_for(workload: str, names: list[str]) -> list[str]:
    """The selected systems that take part in `workload`, in order."""
    return [n for n in names if workload in SYSTEMS[n].workloads]
