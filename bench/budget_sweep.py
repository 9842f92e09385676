"""How the Loop's per-turn frame budget trades throughput against latency.

    .venv/bin/python bench/budget_sweep.py [--budgets 1,4,16,64,256,1024] [--seconds 2]

For each budget it measures, in one run:
  * receive throughput of 64-byte frames on one Pipe, against a writer
    process that pushes pre-built frames with blocking sendall() (so the
    receiver is the bottleneck), frames/s;
  * fairness latency: a writer process floods ten Pipes while this process
    sends a quiet Pipe one frame every 2 ms; the time from that send() to
    the frame's delivery (mean and p99, microseconds) and the frames
    delivered to flooders in between.
This is the measurement behind the default budget (see README, Fairness).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import time

import evloop


def receive_rate(budget: int, seconds: float) -> float:
    a, b = socket.socketpair()
    blob = (struct.pack(">HI", 1, 64) + b"p" * 64) * 4096
    pid = os.fork()
    if pid == 0:  # the writer: C-speed sendall until the reader goes away
        a.close()
        try:
            while True:
                b.sendall(blob)
        except OSError:
            pass
        os._exit(0)
    b.close()
    count = [0]
    with evloop.Loop(budget=budget) as loop:
        pipe = evloop.Pipe(evloop.Conn(loop, a), lambda c, p: count.__setitem__(0, count[0] + 1))
        loop.run_until(lambda: count[0] > 0, timeout=10)
        n0, t0 = count[0], time.perf_counter()
        loop.run_until(lambda: False, timeout=seconds)
        rate = (count[0] - n0) / (time.perf_counter() - t0)
        pipe.abort()
    os.waitpid(pid, 0)
    return rate


def quiet_latency(budget: int, samples: int = 200) -> tuple[float, float, float]:
    """Ten Pipes flooded by a writer process; a quiet Pipe gets one frame
    every 2 ms from this process (a plain send(), no loop involved)."""
    waits_us: list[float] = []
    between: list[int] = []
    pairs = [socket.socketpair() for _ in range(10)]
    blob = (struct.pack(">HI", 1, 64) + b"f" * 64) * 1024
    pid = os.fork()
    if pid == 0:  # the flooder: round-robin over its ten sockets, forever
        for ours, _ in pairs:
            ours.close()
        try:
            while True:
                for _, theirs in pairs:
                    theirs.sendall(blob)
        except OSError:
            pass
        os._exit(0)
    for _, theirs in pairs:
        theirs.close()
    qa, qb = socket.socketpair()
    quiet_frame = struct.pack(">HI", 9, 5) + b"quiet"
    with evloop.Loop(budget=budget) as loop:
        delivered = [0]
        pipes = [
            evloop.Pipe(
                evloop.Conn(loop, ours), lambda c, p: delivered.__setitem__(0, delivered[0] + 1)
            )
            for ours, _ in pairs
        ]
        mark = {"t": 0, "d": 0}

        def on_quiet(chan: int, payload: bytes) -> None:
            waits_us.append((time.perf_counter_ns() - mark["t"]) / 1e3)
            between.append(delivered[0] - mark["d"])
            if len(waits_us) < samples:
                loop.call_later(0.002, send_quiet)

        def send_quiet() -> None:
            mark["t"], mark["d"] = time.perf_counter_ns(), delivered[0]
            qa.send(quiet_frame)

        evloop.Pipe(evloop.Conn(loop, qb), on_quiet)
        loop.call_later(0.05, send_quiet)
        loop.run_until(lambda: len(waits_us) >= samples, timeout=60)
        for p in pipes:
            p.abort()
    qa.close()
    os.waitpid(pid, 0)
    waits_us.sort()
    return (
        statistics.mean(waits_us),
        waits_us[int(len(waits_us) * 0.99) - 1],
        statistics.mean(between),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", default="1,4,16,64,256,1024")
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    print(
        f"{'budget':>6} {'64 B frames/s':>14} {'quiet mean µs':>14} {'quiet p99 µs':>13} {'flood frames between':>21}"
    )
    for budget in (int(b) for b in args.budgets.split(",")):
        rate = receive_rate(budget, args.seconds)
        mean_us, max_us, mean_between = quiet_latency(budget)
        print(
            f"{budget:>6} {rate:>14,.0f} {mean_us:>14,.0f} {max_us:>13,.0f} {mean_between:>21,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
