#!/usr/bin/env python3
"""The coroutine layer's cost, against the callback API and asyncio.

Two workloads, each run in a fresh process per system and repeat:

  rtt    one 64-byte frame in flight between two endpoints of one process
         over a socketpair (chan u16 | len u32 | payload), echoed back:
           evloop-tasks      two evloop tasks, streams.send/streams.recv on Pipes
           evloop-callbacks  on_frame -> write_frame on both Pipes (no coroutines)
           asyncio           two coroutines, StreamReader.readexactly + write, on asyncio's loop
           uvloop            the same coroutines on uvloop
  await  the cost of one await of a future completed by a callback on the
         next turn, and of one bare yield to the scheduler (sleep(0) /
         evloop.tasks.checkpoint), per loop

Prints one JSON line: for each workload and system the median of --repeat
runs and its min-max, in round trips/s (rtt) or ns per await (await), and
the ratios the issue asks for (evloop tasks per await vs asyncio on its own
loop). Loopback only; nothing here touches the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

HDR = struct.Struct(">HI")
PAYLOAD = b"x" * 64


# -- rtt ----------------------------------------------------------------------------


def rtt_evloop_tasks(n: int) -> float:
    import evloop
    from evloop import streams, tasks

    loop = evloop.Loop()
    ca, cb = evloop.conn_pair(loop)
    pa, pb = evloop.Pipe(ca), evloop.Pipe(cb)

    async def echo() -> None:
        while True:
            chan, payload = await streams.recv(pb)
            await streams.send(pb, chan, payload)

    async def ping() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await streams.send(pa, 1, PAYLOAD)
            await streams.recv(pa)
        return time.perf_counter() - t0

    async def main() -> float:
        async with tasks.TaskGroup() as tg:
            e = tg.create_task(echo())
            dt = await ping()
            e.cancel()
        return dt

    dt = tasks.run_until_complete(loop, main())
    loop.close()
    return n / dt


def rtt_evloop_callbacks(n: int) -> float:
    import evloop

    loop = evloop.Loop()
    ca, cb = evloop.conn_pair(loop)
    pa, pb = evloop.Pipe(ca), evloop.Pipe(cb)
    pb.on_frame = pb.write_frame
    left = [n]

    def back(chan: int, payload: bytes) -> None:
        left[0] -= 1
        if left[0]:
            pa.write_frame(1, PAYLOAD)

    pa.on_frame = back
    t0 = time.perf_counter()
    pa.write_frame(1, PAYLOAD)
    loop.run_until(lambda: left[0] == 0)
    dt = time.perf_counter() - t0
    loop.close()
    return n / dt


async def _rtt_asyncio(n: int) -> float:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)

    async def echo() -> None:
        while True:
            hdr = await rb.readexactly(6)
            _, length = HDR.unpack(hdr)
            wb.write(hdr + await rb.readexactly(length))

    e = asyncio.ensure_future(echo())
    frame = HDR.pack(1, len(PAYLOAD)) + PAYLOAD
    t0 = time.perf_counter()
    for _ in range(n):
        wa.write(frame)
        hdr = await ra.readexactly(6)
        await ra.readexactly(HDR.unpack(hdr)[1])
    dt = time.perf_counter() - t0
    e.cancel()
    wa.close()
    wb.close()
    return n / dt


def rtt_asyncio(n: int) -> float:
    return asyncio.run(_rtt_asyncio(n))


def rtt_uvloop(n: int) -> float:
    import uvloop

    return uvloop.run(_rtt_asyncio(n))  # type: ignore[no-any-return]


# -- await ---------------------------------------------------------------------------


def await_evloop(n: int) -> tuple[float, float]:
    import evloop
    from evloop import tasks

    async def futures() -> None:
        loop = tasks.current_loop()
        for _ in range(n):
            f: evloop.Future[None] = evloop.Future(loop)
            loop.call_soon(f.set_result, None)
            await f

    async def yields() -> None:
        for _ in range(n):
            await tasks.checkpoint()

    t0 = time.perf_counter()
    tasks.run(futures())
    t1 = time.perf_counter()
    tasks.run(yields())
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e9, (t2 - t1) / n * 1e9


async def _aio_futures(n: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(n):
        f = loop.create_future()
        loop.call_soon(f.set_result, None)
        await f


async def _aio_yields(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _await_with(runner: object, n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    runner(_aio_futures(n))  # type: ignore[operator]
    t1 = time.perf_counter()
    runner(_aio_yields(n))  # type: ignore[operator]
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e9, (t2 - t1) / n * 1e9


def await_asyncio(n: int) -> tuple[float, float]:
    return _await_with(asyncio.run, n)


def await_uvloop(n: int) -> tuple[float, float]:
    import uvloop

    return _await_with(uvloop.run, n)


RTT = {
    "evloop-tasks": rtt_evloop_tasks,
    "evloop-callbacks": rtt_evloop_callbacks,
    "asyncio": rtt_asyncio,
    "uvloop": rtt_uvloop,
}
AWAIT = {"evloop": await_evloop, "asyncio": await_asyncio, "uvloop": await_uvloop}


def child(workload: str, system: str, n: int) -> None:
    fn = (RTT if workload == "rtt" else AWAIT)[system]
    print(json.dumps(fn(n)))  # type: ignore[operator]


def run_one(workload: str, system: str, n: int) -> object:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", workload, system, str(n)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"unsupported": last}
    return json.loads(out.stdout)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per system (median reported)")
    ap.add_argument("--rtt", type=int, default=20000, help="round trips per run")
    ap.add_argument("--awaits", type=int, default=200000, help="awaits per run")
    ap.add_argument("--quick", action="store_true", help="a smoke run")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    if args.quick:
        args.repeat, args.rtt, args.awaits = 1, 2000, 20000
    load_before = os.getloadavg()
    result: dict[str, object] = {"bench": "coro", "repeat": args.repeat}
    rtt: dict[str, object] = {}
    runs: dict[str, list[float]] = {s: [] for s in RTT}
    aw: dict[str, list[tuple[float, float]]] = {s: [] for s in AWAIT}
    unsupported: dict[str, str] = {}
    for _ in range(args.repeat):  # interleaved, so drift hits every system alike
        for s in RTT:
            v = run_one("rtt", s, args.rtt)
            if isinstance(v, dict):
                unsupported[s] = v["unsupported"]
            else:
                runs[s].append(float(v))  # type: ignore[arg-type]
        for s in AWAIT:
            v = run_one("await", s, args.awaits)
            if isinstance(v, dict):
                unsupported["await-" + s] = v["unsupported"]
            else:
                aw[s].append(tuple(v))  # type: ignore[arg-type]
    for s, vals in runs.items():
        if vals:
            rtt[s] = summary(vals)
    result["rtt_round_trips_per_s"] = rtt
    result["await_future_ns"] = {s: summary([v[0] for v in vals]) for s, vals in aw.items() if vals}
    result["await_yield_ns"] = {s: summary([v[1] for v in vals]) for s, vals in aw.items() if vals}
    ratios: dict[str, float] = {}
    med = {s: v["median"] for s, v in rtt.items()}  # type: ignore[index]
    if "evloop-tasks" in med:
        for peer in ("evloop-callbacks", "asyncio", "uvloop"):
            if peer in med:
                ratios[f"rtt evloop-tasks / {peer}"] = med["evloop-tasks"] / med[peer]
    af = result["await_future_ns"]
    ay = result["await_yield_ns"]
    for peer in ("asyncio", "uvloop"):
        if "evloop" in af and peer in af:  # type: ignore[operator]
            ratios[f"await-future cost evloop / {peer}"] = (
                af["evloop"]["median"] / af[peer]["median"]  # type: ignore[index]
            )
            ratios[f"await-yield cost evloop / {peer}"] = (
                ay["evloop"]["median"] / ay[peer]["median"]  # type: ignore[index]
            )
    result["ratios"] = ratios
    if unsupported:
        result["unsupported"] = unsupported
    result["loadavg_before"] = load_before
    result["loadavg_after"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
