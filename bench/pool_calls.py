# bench/pool_calls.py
#
# Python calls per Pool request, parent and worker, counted with cProfile
# (every function call, Python or builtin, the way the issue counted them),
# and the throughput of the same run without the profiler. Call counts are
# repeatable on a noisy machine where timings are not; use them to judge a
# change to the request path, and the throughput only as a rough check.
#
#     python bench/pool_calls.py [--workers 4] [--window 32] [--requests 20000]
#
# The workers answer with serve(loop, pipe, echo): the reply is the request.
from __future__ import annotations

import argparse
import atexit
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from typing import Any

from evloop import Loop
from evloop.pool import Pool, serve

MODULE = "bench.pool_calls"
SIZE = 64


def echo(data: bytes) -> bytes:
    return data


def plain_worker(loop: Loop, pipe: Any) -> None:
    serve(loop, pipe, echo)


def profiled_worker(loop: Loop, pipe: Any, out: str) -> None:
    """serve() under cProfile; at exit, write (calls, requests) to `out`."""
    prof = cProfile.Profile()

    def dump() -> None:
        prof.disable()
        st = pstats.Stats(prof)
        total = sum(v[1] for v in st.stats.values())  # type: ignore[attr-defined]
        handled = sum(v[1] for k, v in st.stats.items() if k[2] == "echo")  # type: ignore[attr-defined]
        with open(out, "w") as f:
            json.dump({"calls": total, "requests": handled}, f)

    atexit.register(dump)
    serve(loop, pipe, echo)
    prof.enable()


def run(workers: int, window: int, requests: int, profile: bool, tmp: str) -> dict[str, float]:
    loop = Loop()
    outs = [os.path.join(tmp, f"w{i}.json") for i in range(workers)]
    if profile:
        # One Pool per worker file would change the dispatch; instead every
        # worker gets its own file through its index in the args.
        pool = Pool(loop, f"{MODULE}:profiled_worker", workers, os.path.join(tmp, "w.json"),
                    strategy="least_outstanding")  # fmt: skip
    else:
        pool = Pool(loop, f"{MODULE}:plain_worker", workers, strategy="least_outstanding")
    warm = [pool.request(bytes(SIZE)) for _ in range(workers * 2)]
    assert loop.run_until(lambda: all(r.done() for r in warm), timeout=60)
    payload = bytes(range(SIZE))
    state = {"sent": 0, "done": 0}

    def on_reply(req: Any) -> None:
        state["done"] += 1
        if state["sent"] < requests:
            state["sent"] += 1
            pool.request(payload, on_reply)

    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    for _ in range(min(requests, workers * window)):
        state["sent"] += 1
        pool.request(payload, on_reply)
    loop.run_until(lambda: state["done"] == requests, timeout=300)
    if prof is not None:
        prof.disable()
    seconds = time.perf_counter() - t0
    result = {"per_s": requests / seconds}
    if prof is not None:
        st = pstats.Stats(prof)
        result["parent_calls"] = sum(v[1] for v in st.stats.values()) / requests  # type: ignore[attr-defined]
    done: list[Any] = []
    pool.shutdown(10, done.append)
    loop.run_until(lambda: bool(done), timeout=30)
    loop.close()
    del outs
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prof = run(a.workers, a.window, a.requests, True, tmp)
        with open(os.path.join(tmp, "w.json")) as f:
            w = json.load(f)  # the last worker to exit wrote it
        print(f"parent: {prof['parent_calls']:.1f} calls/request")
        if w["requests"]:
            print(f"worker: {w['calls'] / w['requests']:.1f} calls/request")
        rates = [run(a.workers, a.window, a.requests, False, tmp)["per_s"] for _ in range(a.repeat)]
        print(
            f"throughput: median {statistics.median(rates):,.0f} req/s"
            f" (min {min(rates):,.0f}, max {max(rates):,.0f}, {a.repeat} runs;"
            f" load {os.getloadavg()[0]:.2f})"
        )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
