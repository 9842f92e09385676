# bench/evlbench/evl.py
#
# evloop's side of the benchmark: the three workloads written the way an
# application would use evloop, with its default settings (or a given
# per-turn `budget`; the registry runs budget=1 too, the design's literal
# one-frame-per-readiness rule).
#
# throughput: a child (started like every peer's, by common.Children) writes
#   one frame per write_frame() call until the deadline, pausing on the
#   Conn's high watermark; this process receives on a Pipe and checks and
#   counts every frame, timed from the first byte to EOF.
# rtt: a worker started with evloop.spawn() echoes each frame; this process
#   sends the next request from the reply's on_frame callback.
# pool: an evloop.Pool of workers answering with pool.serve(); this process
#   keeps `window` requests in flight per worker through Pool.request().
from __future__ import annotations

import socket
import time
from typing import Any

from evloop import Conn, Loop, Pipe

from .common import (
    CHANNEL,
    HEADER_SIZE,
    REQUEST_ID,
    RTT_SIZE,
    BadFrame,
    Children,
    Latency,
    PoolResult,
    Throughput,
    clock_batch,
    payload,
    request_filler,
    rtt_warmup,
)

MODULE = "evlbench.evl"
_LABEL = "evloop"


def _loop(budget: int | None) -> Loop:
    return Loop() if budget is None else Loop(budget=budget)


def _run(loop: Loop, done: Any, timeout: float, what: str) -> None:
    if not loop.run_until(done, timeout=timeout):
        raise TimeoutError(f"evloop {what} did not finish within {timeout:g} s")


# --- throughput -------------------------------------------------------------


def throughput(size: int, duration: float, *, budget: int | None = None) -> Throughput:
    ours, theirs = socket.socketpair()  # default kernel buffer sizes, as for every system
    with Children() as kids:
        kids.spawn(MODULE, "send", theirs.fileno(), size=size, duration=duration)
        theirs.close()
        with _loop(budget) as loop:
            state = {"frames": 0, "bytes": 0, "t0": 0.0, "end": 0.0}
            errors: list[BaseException] = []

            def on_frame(chan: int, data: Any) -> None:
                if chan != CHANNEL or len(data) != size:
                    errors.append(BadFrame(f"frame on channel {chan} with {len(data)} bytes"))
                    pipe.abort()
                    return
                state["frames"] += 1
                state["bytes"] += len(data)

            def on_close(exc: BaseException | None) -> None:
                state["end"] = time.perf_counter()
                if exc is not None:
                    errors.append(exc)

            conn = Conn(loop, ours)
            pipe = Pipe(conn, on_frame, on_close=on_close, on_error=errors.append)
            first_data = conn.on_data

            def on_first_data(c: Conn) -> None:
                state["t0"] = time.perf_counter()
                c.on_data = first_data
                assert first_data is not None
                first_data(c)

            conn.on_data = on_first_data
            _run(loop, lambda: state["end"] > 0, duration + 60, "throughput receiver")
    if errors:
        raise BadFrame(f"receiver failed: {errors[0]!r}") from errors[0]
    if not state["t0"]:
        raise BadFrame("sender closed without sending")
    return Throughput(
        _LABEL, size, int(state["frames"]), int(state["bytes"]), state["end"] - state["t0"]
    )


def _send(fd: int, size: int, duration: float) -> None:
    with Loop() as loop:
        pipe = Pipe(Conn(loop, socket.socket(fileno=fd)))
        conn = pipe.conn
        data = payload(size)
        batch = range(clock_batch(size))
        write_frame = pipe.write_frame
        deadline = time.perf_counter() + duration

        def pump() -> None:
            # One frame per call, as an application writes; stop at the high
            # watermark and carry on when the Conn says it drained.
            while conn.writable:
                if time.perf_counter() >= deadline:
                    conn.on_resume_writing = None
                    pipe.close()  # flushes every frame, then EOF
                    return
                for _ in batch:
                    write_frame(CHANNEL, data)
            conn.on_resume_writing = pump

        loop.call_soon(pump)
        _run(loop, lambda: conn.closed, duration + 60, "throughput sender")


# --- rtt ----------------------------------------------------------------------


def echo_worker(loop: Loop, pipe: Pipe) -> None:
    """The spawned worker of the rtt workload: every frame goes straight back."""
    pipe.on_frame = pipe.write_frame


def rtt(count: int, *, budget: int | None = None) -> Latency:
    from evloop import spawn

    request = payload(RTT_SIZE)
    warmup = rtt_warmup(count)
    total = warmup + count
    samples: list[int] = []
    state = {"sent": 0, "t": 0, "start": 0, "end": 0}
    errors: list[BaseException] = []
    now = time.perf_counter_ns
    with _loop(budget) as loop:

        def send() -> None:
            if state["sent"] == warmup:
                state["start"] = now()
            state["sent"] += 1
            state["t"] = now()
            worker.write_frame(CHANNEL, request)

        def on_frame(_worker: Any, chan: int, data: Any) -> None:
            t = now()
            if chan != CHANNEL or data != request:
                errors.append(BadFrame("echo differs from request"))
                return
            if state["sent"] > warmup:
                samples.append(t - state["t"])
            if state["sent"] < total:
                send()
            else:
                state["end"] = t

        worker = spawn(loop, f"{MODULE}:echo_worker", on_frame=on_frame)
        send()
        _run(loop, lambda: bool(state["end"] or errors), 120, "rtt")
        worker.close()
        _run(loop, lambda: worker.done, 20, "rtt worker exit")
    if errors:
        raise errors[0]
    return Latency.from_samples(_LABEL, samples, (state["end"] - state["start"]) / 1e9)


# --- pool ----------------------------------------------------------------------


def pool_worker(loop: Loop, pipe: Pipe) -> None:
    """A pool worker: each request's reply is the request itself."""
    from evloop import serve

    serve(loop, pipe, bytes)


def pool(workers: int, requests: int, window: int, *, budget: int | None = None) -> PoolResult:
    from evloop import Pool, Request

    filler = request_filler()
    state = {"sent": 0, "completed": 0, "start": 0.0, "seconds": 0.0}
    errors: list[BaseException] = []
    with _loop(budget) as loop:
        workers_pool = Pool(loop, f"{MODULE}:pool_worker", workers, strategy="least_outstanding")

        def issue() -> None:
            rid = state["sent"]
            state["sent"] = rid + 1
            data = REQUEST_ID.pack(rid) + filler
            workers_pool.request(data, lambda req: on_reply(req, data))

        def on_reply(req: Request, data: bytes) -> None:
            exc = req.exception()
            if exc is not None or req.result() != data:
                errors.append(exc or BadFrame("reply differs from request"))
                return
            state["completed"] += 1
            if state["sent"] < requests:
                issue()
            elif state["completed"] == requests:
                state["seconds"] = time.perf_counter() - state["start"]

        # Warm up: one round trip per worker, so every child is up and
        # imported before the clock starts (the peers do the same).
        warm = [workers_pool.request(b"warm-up" + bytes(57)) for _ in range(workers)]
        _run(loop, lambda: all(r.done() for r in warm) or bool(errors), 60, "pool warm-up")
        for r in warm:
            if r.exception() is not None:
                raise r.exception()  # type: ignore[misc]
        state["start"] = time.perf_counter()
        for _ in range(min(requests, workers * window)):
            issue()
        _run(loop, lambda: bool(state["seconds"] or errors), 120, "pool")
        workers_pool.shutdown(deadline=5.0)
        _run(loop, lambda: workers_pool.closed, 30, "pool shutdown")
    if errors:
        raise errors[0]
    return PoolResult(_LABEL, workers, requests, state["seconds"])


# --- children ---------------------------------------------------------------------


def child(role: str, fd: int, **params: Any) -> None:
    if role == "send":
        _send(fd, params["size"], params["duration"])
    else:
        raise ValueError(f"unknown role {role!r}")


__all__ = ["throughput", "rtt", "pool", "child", "echo_worker", "pool_worker", "HEADER_SIZE"]
