#!/usr/bin/env python3
"""What a lossless session costs, and how fast it recovers.

    .venv/bin/python bench/session_bench.py [--count 100000] [--sizes 64,1024] [--repeats 5]

Every cell is the same work: a sender process (this one) pushes `count`
messages of `size` bytes over TCP on 127.0.0.1 to a receiver process that
makes one Python callback per message, with an independent payload, and
answers "done" after the last one; throughput is count / (time from the
first send to the "done"). Systems, interleaved within each repeat so load
drifts hit them alike:

  pipe     a plain evloop Pipe on a Conn (write_frame, back-pressure by
           when_writable): the session's transport, without the session
  session  evloop.session Messengers, lossless_client -> stateful_server:
           priority out-queue, implicit sequence numbers, one cumulative ack
           per receiver turn, every message kept until acknowledged
  zmq      pyzmq DEALER -> ROUTER (at-most-once, no replay), if installed

Then recovery: on an open, settled session the sender drops its connection
and sends one message; the time until that message is acknowledged (the
reconnect, the handshake, the resume and one delivery) is the recovery
time. Reported as medians of the repeats with min-max, with the load
average before and after; one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

try:
    import evloop
except ImportError:  # run from a checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import evloop
from evloop.session import Messenger, Policy

try:
    import zmq
except ImportError as exc:  # pragma: no cover - depends on the bench extra
    zmq = None
    ZMQ_MISSING = f"pyzmq is not installed ({exc}); pip install -e '.[bench]'"
else:
    ZMQ_MISSING = ""

DATA, DONE = 1, 2
BATCH = 256  # messages between two back-pressure checks, for every system


# -- receivers (child processes) -------------------------------------------------


def rx_pipe(n: int) -> None:
    loop = evloop.Loop()
    state = {"count": 0, "done": False}

    def on_conn(conn: evloop.Conn) -> None:
        pipe = evloop.Pipe(conn)

        def on_frame(chan: int, payload: bytes | bytearray) -> None:
            state["count"] += 1
            if state["count"] == n:
                pipe.write_frame(DONE, b"done")

        pipe.on_frame = on_frame
        pipe.on_close = lambda exc: state.update(done=True)

    srv = evloop.listen_tcp(loop, "127.0.0.1", 0, on_conn)
    print(srv.port, flush=True)
    loop.run_until(lambda: state["done"], timeout=300)
    srv.close()
    loop.close()


def rx_session(n: int) -> None:
    loop = evloop.Loop()
    m = Messenger(loop, "tcp:127.0.0.1:0", policy=Policy.stateful_server())
    state = {"count": 0}

    def on_data(session: Any, chan: int, payload: bytes | bytearray) -> None:
        state["count"] += 1
        if state["count"] == n:
            session.send(DONE, b"done")

    m.route(DATA, on_data)
    m.on_fault = lambda s, exc: None
    print(m.address, flush=True)
    stdin_closed: list[bytes] = []
    fd = sys.stdin.fileno()
    loop.register(fd, evloop.EVENT_READ, lambda _m: stdin_closed.append(os.read(fd, 1)))
    loop.run_until(lambda: bool(stdin_closed), timeout=300)
    loop.unregister(fd)
    m.close()
    loop.close()


def rx_zmq(n: int) -> None:
    assert zmq is not None
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    port = r.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)
    count = 0
    ident = b""
    while count < n:
        ident, _payload = r.recv_multipart()
        count += 1
    r.send_multipart([ident, b"done"])
    r.recv_multipart()  # the sender's goodbye
    r.close(linger=0)
    ctx.term()


# -- senders ----------------------------------------------------------------------


class Child:
    def __init__(self, role: str, n: int):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--role", role, "--count", str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.line = self.proc.stdout.readline().strip()
        if not self.line:
            raise RuntimeError(f"receiver {role} did not start")

    def finish(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def tx_pipe(n: int, size: int) -> float:
    child = Child("rx-pipe", n)
    try:
        loop = evloop.Loop()
        got: list[tuple[evloop.Conn | None, BaseException | None]] = []
        evloop.connect_tcp(loop, "127.0.0.1", int(child.line), lambda c, e: got.append((c, e)))
        loop.run_until(lambda: bool(got), timeout=30)
        conn, exc = got[0]
        if conn is None:
            raise RuntimeError(f"connect failed: {exc}")
        done: list[bytes] = []
        pipe = evloop.Pipe(conn, lambda c, p: done.append(p))
        payload = b"x" * size
        sent = 0

        def produce() -> None:
            nonlocal sent
            write = pipe.write_frame
            while sent < n and pipe.writable:
                for _ in range(min(BATCH, n - sent)):
                    write(DATA, payload)
                sent += min(BATCH, n - sent)
            if sent < n:
                pipe.when_writable(produce)

        t0 = time.perf_counter()
        produce()
        if not loop.run_until(lambda: bool(done), timeout=300):
            raise RuntimeError("pipe run did not finish")
        t = time.perf_counter() - t0
        pipe.close()
        loop.run_until(lambda: conn.closed, timeout=10)
        loop.close()
        return n / t
    finally:
        child.finish()


SESSION_KWARGS: dict[str, Any] = {}


def _session_sender(child: Child) -> tuple[evloop.Loop, Messenger, Any, list[bytes]]:
    loop = evloop.Loop()
    m = Messenger(loop, None, policy=Policy.lossless_client(), **SESSION_KWARGS)
    done: list[bytes] = []
    m.route(DONE, lambda s, c, p: done.append(p))
    session = m.connect(child.line)
    if not loop.run_until(lambda: session.is_connected, timeout=30):
        raise RuntimeError("session did not open")
    return loop, m, session, done


def tx_session(n: int, size: int) -> tuple[float, dict[str, float]]:
    child = Child("rx-session", n)
    try:
        loop, m, session, done = _session_sender(child)
        payload = b"x" * size
        sent = 0

        def produce() -> None:
            nonlocal sent
            send = session.send
            while sent < n and session.writable:
                for _ in range(min(BATCH, n - sent)):
                    send(DATA, payload)
                sent += min(BATCH, n - sent)
            if sent < n:
                session.when_writable(produce)

        conn = session.conn
        in0, out0 = conn.bytes_in, conn.bytes_out
        t0 = time.perf_counter()
        produce()
        if not loop.run_until(lambda: bool(done), timeout=300):
            raise RuntimeError(f"session run did not finish: {session.statistics()}")
        t = time.perf_counter() - t0
        loop.run_until(lambda: session.statistics().pending_bytes == 0, timeout=30)
        st = session.statistics()
        data_bytes = n * (6 + size)
        wire = {
            "acks_per_1000": 1000 * st.acks_in / n,
            "control_bytes_per_frame": (conn.bytes_in - in0 - (6 + 4)) / n,
            "sender_extra_bytes_per_frame": (conn.bytes_out - out0 - data_bytes) / n,
        }
        m.close()
        loop.run_until(lambda: False, timeout=0.02)
        loop.close()
        return n / t, wire
    finally:
        child.finish()


def tx_zmq(n: int, size: int) -> float:
    assert zmq is not None
    child = Child("rx-zmq", n)
    try:
        ctx = zmq.Context()
        d = ctx.socket(zmq.DEALER)
        d.connect(f"tcp://127.0.0.1:{child.line}")
        payload = b"x" * size
        t0 = time.perf_counter()
        send = d.send
        for _ in range(n):
            send(payload)
        d.recv()
        t = time.perf_counter() - t0
        d.send(b"bye")
        d.close(linger=1000)
        ctx.term()
        return n / t
    finally:
        child.finish()


def recovery(faults: int) -> list[float]:
    child = Child("rx-session", 1 << 60)
    try:
        loop, m, session, _ = _session_sender(child)
        times = []
        for i in range(faults):
            session.send(DATA, b"warm %d" % i)
            loop.run_until(lambda: session.statistics().pending_bytes == 0, timeout=30)
            conn = session.conn
            t0 = time.perf_counter()
            conn.abort()
            session.send(DATA, b"probe")
            ok = loop.run_until(
                lambda: session.is_connected and session.statistics().pending_bytes == 0,
                timeout=30,
            )
            if not ok:
                raise RuntimeError(f"no recovery: {session.statistics()}")
            times.append(time.perf_counter() - t0)
        m.close()
        loop.run_until(lambda: False, timeout=0.02)
        loop.close()
        return times
    finally:
        child.finish()


# -- the run ----------------------------------------------------------------------


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000, help="messages per run")
    ap.add_argument("--sizes", default="64,1024", help="payload sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--faults", type=int, default=20, help="faults per recovery repeat")
    ap.add_argument("--no-zmq", action="store_true", help="skip the pyzmq peer")
    ap.add_argument("--quick", action="store_true", help="tiny counts, one repeat (smoke test)")
    ap.add_argument(
        "--session-high-water", type=int, default=None,
        help="the sender Messenger's high_water (default: the Messenger's default)",
    )  # fmt: skip
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "rx-pipe":
        rx_pipe(args.count)
        return 0
    if args.role == "rx-session":
        rx_session(args.count)
        return 0
    if args.role == "rx-zmq":
        rx_zmq(args.count)
        return 0
    if args.session_high_water is not None:
        SESSION_KWARGS["high_water"] = args.session_high_water
    if args.quick:
        args.count, args.repeats, args.faults = 3000, 1, 3
    sizes = [int(s) for s in args.sizes.split(",")]
    use_zmq = zmq is not None and not args.no_zmq
    load_before = os.getloadavg()
    rates: dict[int, dict[str, list[float]]] = {
        s: {"pipe": [], "session": [], "zmq": []} for s in sizes
    }
    wires: dict[int, list[dict[str, float]]] = {s: [] for s in sizes}
    rec: list[float] = []
    for _ in range(args.repeats):
        for size in sizes:
            rates[size]["pipe"].append(tx_pipe(args.count, size))
            rate, wire = tx_session(args.count, size)
            rates[size]["session"].append(rate)
            wires[size].append(wire)
            if use_zmq:
                rates[size]["zmq"].append(tx_zmq(args.count, size))
        rec.append(statistics.median(recovery(args.faults)))
    results: dict[str, Any] = {}
    for size in sizes:
        r = rates[size]
        cell: dict[str, Any] = {
            "pipe_msgs_per_s": summary(r["pipe"]),
            "session_msgs_per_s": summary(r["session"]),
        }
        pm, sm = statistics.median(r["pipe"]), statistics.median(r["session"])
        cell["session_vs_pipe"] = sm / pm  # ratio of the medians
        # The same ratio within each repeat (the two ran back to back), so
        # its spread shows the noise of the machine, not of the code.
        cell["session_vs_pipe_per_repeat"] = summary(
            [x / y for x, y in zip(r["session"], r["pipe"], strict=True)]
        )
        cell["session_overhead_pct"] = 100.0 * (pm / sm - 1.0)
        if use_zmq:
            cell["zmq_msgs_per_s"] = summary(r["zmq"])
            cell["session_vs_zmq"] = sm / statistics.median(r["zmq"])
        else:
            cell["zmq_msgs_per_s"] = "unsupported: " + (ZMQ_MISSING or "--no-zmq")
        w = wires[size]
        cell["wire"] = {k: statistics.median(x[k] for x in w) for k in w[0]}
        results[str(size)] = cell
    out = {
        "bench": "session",
        "transport": "tcp 127.0.0.1, two processes",
        "count": args.count,
        "repeats": args.repeats,
        "results": results,
        "recovery_ms": {k: (v * 1000 if k != "n" else v) for k, v in summary(rec).items()},
        "faults_per_recovery_repeat": args.faults,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "python": sys.version.split()[0],
        "codec": evloop.codec.IMPLEMENTATION,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
