#!/usr/bin/env python3
"""evloop's Dealer and Broadcast across processes, against pyzmq.

  dealer     one parent deals --messages 64-byte messages over 4 worker
             processes; each worker counts what it got. evloop: a Dealer
             with the workers attached (remote receivers, window 64, and
             the strict rendezvous, window 0); pyzmq: a DEALER socket bound
             on ipc://, each worker a DEALER connected to it.
  broadcast  one parent publishes --messages 64-byte messages to 8
             subscriber processes, as fast as it can. evloop: a Broadcast
             (every subscriber that is ready gets it; the others' misses
             are counted) and a Tee (lock-step: every subscriber gets every
             message, with window 64 of buffering each); pyzmq: PUB (drops
             silently at its high watermark) and XPUB with XPUB_NODROP
             (blocks instead of dropping), each subscriber a SUB.

Timing runs from the first send until every worker reported its count.
Each system runs --repeat times (interleaved); one JSON line gives per
system the median messages/s (delivered ones, summed over receivers) with
min-max, and for the lossy ones the delivered fraction. pyzmq is the
`bench` extra; without it those rows say "unsupported" and why.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

MODULE = os.path.splitext(os.path.basename(__file__))[0] if __name__ == "__main__" else __name__
PAYLOAD = b"m" * 64
END = b"\x00end"
CHAN = 5


# -- evloop workers (run by evloop.spawn in fresh interpreters) ------------------------


def ev_receiver(loop: Any, pipe: Any, window: int) -> None:
    from evloop import patterns, tasks

    end = patterns.remote(pipe, CHAN, window=window)

    async def main() -> None:
        n = 0
        async for _ in end:
            n += 1
        pipe.write_frame(1, b"%d" % n)

    tasks.create_task(loop, main())


def _evloop_run(kind: str, workers: int, messages: int, window: int) -> dict[str, float]:
    import evloop
    from evloop import patterns, streams, tasks

    loop = evloop.Loop()
    prim: Any = {"dealer": patterns.Dealer, "broadcast": patterns.Broadcast, "tee": patterns.Tee}[
        kind
    ](loop=loop)
    counts: list[int] = []
    procs = []
    for _ in range(workers):
        w = evloop.spawn(loop, f"{MODULE}:ev_receiver", window)
        w.on_frame = lambda w, chan, data: counts.append(int(data))
        prim.attach(w.pipe, CHAN, window=window) if kind == "dealer" else prim.attach(w.pipe, CHAN)
        procs.append(w)

    async def ready() -> None:
        # Every worker is up and has granted credit.
        while True:
            if kind == "dealer":
                if prim.statistics().receivers_waiting >= workers:
                    return
            elif (
                all(
                    s._ready_op() is not None  # noqa: SLF001 - the bench peeks
                    for s in prim.subs
                )
                and len(prim.subs) == workers
            ):
                return
            await tasks.sleep(0.005)

    async def main() -> float:
        await ready()
        t0 = time.perf_counter()
        send = prim.send
        if kind == "broadcast":
            for i in range(messages):
                await send(PAYLOAD)
                if i % 64 == 63:
                    await tasks.checkpoint()  # let credit come back, as zmq's I/O thread would
        else:
            for _ in range(messages):
                await send(PAYLOAD)
        prim.close_send()
        while len(counts) < workers:
            await tasks.sleep(0.001)
        dt = time.perf_counter() - t0
        for w in procs:
            w.close()
        for w in procs:
            await streams.exited(w)
        return dt

    dt = tasks.run_until_complete(loop, main(), timeout=600)
    loop.close()
    delivered = sum(counts)
    expect = messages * (1 if kind == "dealer" else workers)
    return {"msgs_per_s": delivered / dt, "delivered_fraction": delivered / expect, "seconds": dt}


# -- pyzmq peers ----------------------------------------------------------------------------


def zmq_worker(mode: str, addr: str, report: str) -> None:
    import zmq

    ctx = zmq.Context()
    if mode == "dealer":
        s = ctx.socket(zmq.DEALER)
        s.connect(addr)
    else:
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(addr)
    r = ctx.socket(zmq.PUSH)
    r.connect(report)
    r.send(b"up")
    n = 0
    while True:
        m = s.recv()
        if m == END:
            break
        n += 1
    r.send(b"%d" % n)
    r.close(linger=1000)
    s.close(linger=0)
    ctx.term()


def _zmq_run(kind: str, workers: int, messages: int) -> dict[str, float]:
    import zmq

    d = tempfile.mkdtemp()
    addr, report = f"ipc://{d}/data", f"ipc://{d}/report"
    ctx = zmq.Context()
    sock_type = {"dealer": zmq.DEALER, "pub": zmq.PUB, "xpub-nodrop": zmq.XPUB}[kind]
    out = ctx.socket(sock_type)
    if kind == "xpub-nodrop":
        out.setsockopt(zmq.XPUB_NODROP, 1)
        out.setsockopt(zmq.XPUB_VERBOSE, 1)  # one subscription message per SUB
    out.bind(addr)
    rep = ctx.socket(zmq.PULL)
    rep.bind(report)
    mode = "dealer" if kind == "dealer" else "sub"
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--zmq-worker", mode, addr, report]
        )
        for _ in range(workers)
    ]
    try:
        for _ in range(workers):
            assert rep.recv() == b"up"
        if kind != "dealer":
            # Subscriptions propagate after connect: wait until one message
            # reaches everybody before timing (a SUB joining late misses).
            if kind == "xpub-nodrop":
                for _ in range(workers):
                    out.recv()  # the subscription messages
            time.sleep(0.2)  # the peer needs its subscriptions in place (a bench, not a test)
        t0 = time.perf_counter()
        for _ in range(messages):
            out.send(PAYLOAD)
        counts: list[int] = []
        poller = zmq.Poller()
        poller.register(rep, zmq.POLLIN)
        while len(counts) < workers:
            # The end marker goes round until every worker has reported
            # (a DEALER deals it to one peer at a time; a PUB may drop it).
            try:
                out.send(END, zmq.NOBLOCK)
            except zmq.Again:
                pass
            for sock, _ in poller.poll(5):
                counts.append(int(sock.recv()))
        dt = time.perf_counter() - t0
    finally:
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        out.close(linger=0)
        rep.close(linger=0)
        ctx.term()
    delivered = sum(counts)
    expect = messages * (1 if kind == "dealer" else workers)
    return {"msgs_per_s": delivered / dt, "delivered_fraction": delivered / expect, "seconds": dt}


SYSTEMS = {
    "dealer": [
        ("evloop-dealer-window64", lambda m: _evloop_run("dealer", 4, m, 64)),
        ("evloop-dealer-strict", lambda m: _evloop_run("dealer", 4, max(m // 20, 100), 0)),
        ("zmq-dealer", lambda m: _zmq_run("dealer", 4, m)),
    ],
    "broadcast": [
        ("evloop-broadcast", lambda m: _evloop_run("broadcast", 8, m, 64)),
        ("evloop-tee", lambda m: _evloop_run("tee", 8, m, 64)),
        ("zmq-pub", lambda m: _zmq_run("pub", 8, m)),
        ("zmq-xpub-nodrop", lambda m: _zmq_run("xpub-nodrop", 8, m)),
    ],
}


def run_one(workload: str, system: str, messages: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", workload, system, str(messages)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"unsupported": last}
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--workloads", default="dealer,broadcast")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--zmq-worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.zmq_worker:
        zmq_worker(*args.zmq_worker)
        return
    if args.child:
        workload, system, m = args.child
        fn = dict(SYSTEMS[workload])[system]
        print(json.dumps(fn(int(m))))
        return
    if args.quick:
        args.repeat, args.messages = 1, 5000
    load_before = os.getloadavg()
    result: dict[str, Any] = {"bench": "patterns", "repeat": args.repeat, "messages": args.messages}
    for workload in args.workloads.split(","):
        runs: dict[str, list[dict[str, float]]] = {s: [] for s, _ in SYSTEMS[workload]}
        unsupported: dict[str, str] = {}
        for _ in range(args.repeat):
            for s, _ in SYSTEMS[workload]:
                r = run_one(workload, s, args.messages)
                if "unsupported" in r:
                    unsupported[s] = r["unsupported"]
                else:
                    runs[s].append(r)
        table: dict[str, Any] = {}
        for s, rs in runs.items():
            if not rs:
                table[s] = {"unsupported": unsupported.get(s, "?")}
                continue
            rates = [r["msgs_per_s"] for r in rs]
            table[s] = {
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "delivered_fraction": statistics.median(r["delivered_fraction"] for r in rs),
            }
        result[workload] = table
    ratios: dict[str, float] = {}

    def med(w: str, s: str) -> float | None:
        v = result.get(w, {}).get(s, {})
        return v.get("median") if isinstance(v, dict) else None

    for a, b, w in (
        ("evloop-dealer-window64", "zmq-dealer", "dealer"),
        ("evloop-broadcast", "zmq-pub", "broadcast"),
        ("evloop-tee", "zmq-xpub-nodrop", "broadcast"),
    ):
        x, y = med(w, a), med(w, b)
        if x and y:
            ratios[f"{a} / {b}"] = x / y
    result["ratios"] = ratios
    result["loadavg_before"] = load_before
    result["loadavg_after"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
