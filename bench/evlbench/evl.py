# bench/evlbench/evl.py
#
# evloop's side of the benchmark: every workload written the way an
# application would use evloop, through its public API only (Loop, Conn,
# Pipe, spawn, Pool, serve), with default settings or the registry's opts
# (`budget`, `busy_poll`). Receivers give the Pipe common.frame_sink's
# callback, the same one every peer calls.
#
# throughput: a child (common.Children) writes one frame per write_frame()
#   call until the deadline, pausing on the Conn's high watermark; this
#   process receives on a Pipe, timed from the first frame to EOF.
# recv / many: the C writer (cpeer) floods or trickles; this process holds
#   one Pipe per socketpair on one Loop.
# send: this process writes as the throughput child does; the C reader
#   drains and counts.
# memory: N idle Conn+Pipe on one Loop, in this fresh process.
# rtt: a worker started with evloop.spawn() echoes each frame; this process
#   sends the next request from the reply's on_frame callback. With
#   child="socketpair" the echo child is a plain Conn + Pipe on a socketpair,
#   started like a peer's child; with busy_poll, both ends build
#   Loop(busy_poll=...), which needs that child too (spawn() builds the
#   worker's Loop itself).
# pool: an evloop.Pool of workers answering with evloop.serve(); this
#   process keeps `window` requests in flight per worker through
#   Pool.request().
from __future__ import annotations

import gc
import inspect
import socket
import time
from typing import Any

from evloop import Conn, Loop, Pipe, Pool, Request, serve, spawn_worker

from . import cpeer
from .common import (
    CHANNEL,
    REQUEST_ID,
    RTT_SIZE,
    BadFrame,
    Children,
    IdleSockets,
    Latency,
    ManyResult,
    MemoryResult,
    PoolResult,
    Throughput,
    Unsupported,
    c_payload,
    check_sink,
    clock_batch,
    frame_sink,
    payload,
    raise_nofile,
    request_filler,
    rss_bytes,
    rtt_warmup,
)

MODULE = "evlbench.evl"
_LABEL = "evloop"


def unavailable(busy_poll: float | None = None, **opts: Any) -> str | None:
    if busy_poll is not None and "busy_poll" not in inspect.signature(Loop).parameters:
        return "Loop(busy_poll=...) is not in this evloop yet — skipped"
    return None


def _loop(budget: int | None = None, busy_poll: float | None = None) -> Loop:
    kwargs: dict[str, Any] = {}
    if budget is not None:
        kwargs["budget"] = budget
    if busy_poll is not None:
        reason = unavailable(busy_poll)
        if reason:
            raise Unsupported(reason)
        kwargs["busy_poll"] = busy_poll
    return Loop(**kwargs)


def _run(loop: Loop, done: Any, timeout: float, what: str) -> None:
    if not loop.run_until(done, timeout=timeout):
        raise TimeoutError(f"evloop {what} did not finish within {timeout:g} s")


class _Ends:
    """on_close/on_error for a set of Pipes: when each ended, and how."""

    def __init__(self) -> None:
        self.closed = 0
        self.end = 0.0
        self.cpu_end = 0.0
        self.errors: list[BaseException] = []

    def on_close(self, exc: BaseException | None) -> None:
        self.closed += 1
        self.end = time.perf_counter()
        self.cpu_end = time.process_time()
        if exc is not None:
            self.errors.append(exc)

    def check(self) -> None:
        if self.errors:
            raise BadFrame(f"receiver failed: {self.errors[0]!r}") from self.errors[0]


# --- throughput and recv ----------------------------------------------------------


def throughput(size: int, duration: float, **opts: Any) -> Throughput:
    ours, theirs = socket.socketpair()  # default kernel buffer sizes, as for every system
    on_frame, state = frame_sink(size)
    ends = _Ends()
    with Children() as kids:
        kids.spawn(MODULE, "send", theirs.fileno(), size=size, duration=duration)
        theirs.close()
        with _loop(**opts) as loop:
            Pipe(Conn(loop, ours), on_frame, on_close=ends.on_close, on_error=ends.errors.append)
            _run(loop, lambda: ends.closed > 0, duration + 60, "throughput receiver")
    ends.check()
    st = state()
    check_sink(st, None, payload(size))
    return Throughput(_LABEL, size, st.frames, st.frames * size, ends.end - st.t0)


def recv(size: int, duration: float, batch: int, **opts: Any) -> Throughput:
    ours, theirs = socket.socketpair()
    on_frame, state = frame_sink(size)
    ends = _Ends()
    with _loop(**opts) as loop:
        Pipe(Conn(loop, ours), on_frame, on_close=ends.on_close, on_error=ends.errors.append)
        with cpeer.writer([theirs], size, duration, batch) as writer:
            _run(loop, lambda: ends.closed > 0, duration + 60, "recv")
            wrote = writer.result()
    ends.check()
    st = state()
    check_sink(st, wrote["frames"], c_payload(size))
    return Throughput(_LABEL, size, st.frames, st.frames * size, ends.end - st.t0)


# --- send --------------------------------------------------------------------------


def _pump(loop: Loop, sock: socket.socket, size: int, duration: float) -> list[int]:
    """Write frames of `size` on a Pipe over `sock` for `duration`, one
    write_frame() per frame, stopping at the high watermark and carrying on
    when the Conn drains; then close (flushing everything). Returns a
    one-item list that counts the frames written as it goes."""
    pipe = Pipe(Conn(loop, sock))
    conn = pipe.conn
    data = payload(size)
    batch = range(clock_batch(size))
    write_frame = pipe.write_frame
    deadline = time.perf_counter() + duration
    sent = [0]

    def pump() -> None:
        while conn.writable:
            if time.perf_counter() >= deadline:
                conn.on_resume_writing = None
                pipe.close()  # flushes every frame, then EOF
                return
            for _ in batch:
                write_frame(CHANNEL, data)
            sent[0] += len(batch)
        conn.on_resume_writing = pump

    loop.call_soon(pump)
    _run(loop, lambda: conn.closed, duration + 60, "sender")
    return sent


def send(size: int, duration: float, **opts: Any) -> Throughput:
    ours, theirs = socket.socketpair()
    with cpeer.reader(theirs, size) as reader:
        with _loop(**opts) as loop:
            sent = _pump(loop, ours, size, duration)[0]
        got = reader.result()
    if got["frames"] != sent:
        raise BadFrame(f"the reader got {got['frames']} frames; {sent} were written")
    return Throughput(_LABEL, size, got["frames"], got["bytes"], got["seconds"])


# --- many --------------------------------------------------------------------------


def many(
    conns: int,
    mode: str,
    duration: float,
    frames: int,
    size: int,
    batch: int,
    trickle: int,
    pause_us: int,
    **opts: Any,
) -> ManyResult:
    raise_nofile(2 * conns + 256)
    pairs = [socket.socketpair() for _ in range(conns)]
    on_frame, state = frame_sink(size)
    ends = _Ends()
    with _loop(**opts) as loop:
        for ours, _ in pairs:
            Pipe(Conn(loop, ours), on_frame, on_close=ends.on_close, on_error=ends.errors.append)
        theirs = [t for _, t in pairs]
        with cpeer.many_writer(
            theirs, mode, duration, frames, size, batch, trickle, pause_us
        ) as writer:
            _run(loop, lambda: ends.closed == conns, cpeer.FLOOD_CAP, f"many ({conns} Pipes)")
            wrote = writer.result()
    ends.check()
    st = state()
    check_sink(st, wrote["frames"], c_payload(size))
    return ManyResult(_LABEL, conns, mode, st.frames, ends.end - st.t0, ends.cpu_end - st.cpu0)


# --- memory ------------------------------------------------------------------------


def memory(conns: int, **opts: Any) -> MemoryResult:
    gc.collect()
    base = rss_bytes()
    idle = IdleSockets(conns)
    try:
        gc.collect()
        with_sockets = rss_bytes()
        on_frame, _ = frame_sink(64)
        with _loop(**opts) as loop:
            pipes = [Pipe(Conn(loop, sock), on_frame) for sock in idle.socks]
            turned: list[bool] = []
            loop.call_soon(turned.append, True)
            _run(loop, lambda: bool(turned), 30, "memory")  # a whole turn, every fd registered
            gc.collect()
            wrapped = rss_bytes()
            assert len(pipes) == conns
    finally:
        idle.close()
    return MemoryResult(_LABEL, conns, with_sockets - base, wrapped - with_sockets)


# --- rtt ---------------------------------------------------------------------------


def echo_worker(loop: Loop, pipe: Pipe) -> None:
    """The spawned worker of the rtt workload: every frame goes straight back."""
    pipe.on_frame = pipe.write_frame


def rtt(count: int, busy_poll: float | None = None, child: str = "spawn", **opts: Any) -> Latency:
    request = payload(RTT_SIZE)
    warmup = rtt_warmup(count)
    total = warmup + count
    samples: list[int] = []
    state = {"sent": 0, "t": 0, "start": 0, "end": 0}
    errors: list[BaseException] = []
    now = time.perf_counter_ns

    def on_frame(chan: int, data: Any) -> None:
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

    def send() -> None:
        if state["sent"] == warmup:
            state["start"] = now()
        state["sent"] += 1
        state["t"] = now()
        write_frame(CHANNEL, request)

    with _loop(busy_poll=busy_poll, **opts) as loop:
        if busy_poll is None and child == "spawn":
            worker = spawn_worker(
                loop, f"{MODULE}:echo_worker", on_frame=lambda _w, c, d: on_frame(c, d)
            )
            write_frame = worker.write_frame
            send()
            _run(loop, lambda: bool(state["end"] or errors), 120, "rtt")
            worker.close()
            _run(loop, lambda: worker.done, 20, "rtt worker exit")
        else:
            ours, theirs = socket.socketpair()
            with Children() as kids:
                kids.spawn(MODULE, "echo", theirs.fileno(), busy_poll=busy_poll)
                theirs.close()
                pipe = Pipe(Conn(loop, ours), on_frame)
                write_frame = pipe.write_frame
                send()
                _run(loop, lambda: bool(state["end"] or errors), 120, "rtt")
                pipe.close()
                _run(loop, lambda: pipe.closed, 20, "rtt close")
    if errors:
        raise errors[0]
    return Latency.from_samples(_LABEL, samples, (state["end"] - state["start"]) / 1e9)


# --- pool --------------------------------------------------------------------------


def pool_worker(loop: Loop, pipe: Pipe) -> None:
    """A pool worker: each request's reply is the request itself."""
    serve(loop, pipe, bytes)


def pool(workers: int, requests: int, window: int, **opts: Any) -> PoolResult:
    filler = request_filler()
    state = {"sent": 0, "completed": 0, "start": 0.0, "seconds": 0.0}
    errors: list[BaseException] = []
    with _loop(**opts) as loop:
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


# --- children ----------------------------------------------------------------------


def child(role: str, fd: int, **params: Any) -> None:
    sock = socket.socket(fileno=fd)
    if role == "send":
        with _loop() as loop:
            _pump(loop, sock, params["size"], params["duration"])
    elif role == "echo":
        with _loop(busy_poll=params.get("busy_poll")) as loop:
            pipe = Pipe(Conn(loop, sock))
            pipe.on_frame = pipe.write_frame
            loop.run_until(lambda: pipe.closed)
    else:
        raise ValueError(f"unknown role {role!r}")
