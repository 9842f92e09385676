"""How the Loop's quantum (frames per ready Pipe per round) trades throughput
against a quiet Pipe's latency under flood.

    .venv/bin/python bench/fairness_sweep.py [--quanta 1,16,64,256,1024,4096] [--seconds 2]

For each quantum it measures, in one run:
  * the receive cost of 64-byte frames on ten Pipes flooded by a writer
    process (blocking sendall of pre-built frames, so the receiver is the
    bottleneck): receiver CPU ns per frame, and frames/s;
  * fairness latency: a quiet Pipe gets one frame every 2 ms from this
    process (a plain send(), no loop involved); the time from that send() to
    the frame's delivery (median and p99, microseconds) and the frames
    delivered to flooders in between (median).
This is the measurement behind the default quantum (README, Fairness).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import time

import evloop


def _flood(pairs: list[tuple[socket.socket, socket.socket]]) -> int:
    blob = (struct.pack(">HI", 1, 64) + b"f" * 64) * 1024
    pid = os.fork()
    if pid == 0:  # the flooder: round-robin over its sockets, until they close
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
    return pid


def measure(quantum: int, seconds: float, samples: int, read_size: int) -> dict[str, float]:
    pairs = [socket.socketpair() for _ in range(10)]
    pid = _flood(pairs)
    qa, qb = socket.socketpair()
    quiet_frame = struct.pack(">HI", 9, 5) + b"quiet"
    waits_us: list[float] = []
    between: list[int] = []
    with evloop.Loop(quantum=quantum) as loop:
        delivered = [0]

        def count(chan: int, payload: bytes | bytearray) -> None:
            delivered[0] += 1

        pipes = [
            evloop.Pipe(evloop.Conn(loop, ours, read_size=read_size), count) for ours, _ in pairs
        ]
        mark = {"t": 0, "d": 0}

        def on_quiet(chan: int, payload: bytes | bytearray) -> None:
            waits_us.append((time.perf_counter_ns() - mark["t"]) / 1e3)
            between.append(delivered[0] - mark["d"])
            loop.call_later(0.002, send_quiet)

        def send_quiet() -> None:
            mark["t"], mark["d"] = time.perf_counter_ns(), delivered[0]
            qa.send(quiet_frame)

        evloop.Pipe(evloop.Conn(loop, qb), on_quiet)
        loop.run_until(lambda: delivered[0] > 100_000, timeout=30)  # warmed up
        n0, t0, c0 = delivered[0], time.perf_counter(), time.process_time()
        loop.call_soon(send_quiet)
        loop.run_until(lambda: len(waits_us) >= samples, timeout=seconds * 10)
        loop.run_until(lambda: time.perf_counter() - t0 >= seconds, timeout=seconds * 10)
        frames = delivered[0] - n0
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        for p in pipes:
            p.abort()
    qa.close()
    qb.close()
    os.waitpid(pid, 0)
    waits_us.sort()
    return {
        "cpu_ns": cpu / frames * 1e9,
        "frames_per_s": frames / wall,
        "quiet_median_us": statistics.median(waits_us),
        "quiet_p99_us": waits_us[max(0, int(len(waits_us) * 0.99) - 1)],
        "between": statistics.median(between),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quanta", default="1,16,64,256,1024,4096")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--read-sizes", default="65536,262144", help="Conn read_size values")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    print(
        f"{'read_size':>9} {'quantum':>7} {'CPU ns/frame':>13} {'frames/s':>11} {'quiet median µs':>16}"
        f" {'quiet p99 µs':>13} {'flood frames between':>21}"
    )
    for rs in (int(x) for x in args.read_sizes.split(",")):
        for q in (int(x) for x in args.quanta.split(",")):
            r = measure(q, args.seconds, args.samples, rs)
            print(
                f"{rs:>9} {q:>7} {r['cpu_ns']:>13,.0f} {r['frames_per_s']:>11,.0f} {r['quiet_median_us']:>16,.0f}"
                f" {r['quiet_p99_us']:>13,.0f} {r['between']:>21,.0f}",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
