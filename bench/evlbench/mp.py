# bench/evlbench/mp.py
#
# The multiprocessing peer: multiprocessing.connection.Connection wrapped
# around each end of the socketpair, one frame (header + payload) per
# send_bytes()/recv_bytes() call. Connection adds its own 4-byte length prefix
# in front of our frame; that is what an application using it pays. The pool
# waits on its Connections with multiprocessing.connection.wait(). Children are
# fresh interpreters (common.spawn_child) like every other peer's, not
# multiprocessing.Process, so start-up is the same for all. In the send
# workload the C reader checks that prefix too (cpeer read mp).
from __future__ import annotations

import socket
import time
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from . import cpeer
from .common import (
    CHANNEL,
    HEADER,
    HEADER_SIZE,
    REQUEST_ID,
    REQUEST_SIZE,
    RTT_SIZE,
    BadFrame,
    Children,
    Latency,
    PoolResult,
    Throughput,
    check_header,
    clock_batch,
    frame,
    payload,
    request_filler,
    rtt_warmup,
)

MODULE = "evlbench.mp"


def _connection(sock: socket.socket) -> Connection:
    return Connection(sock.detach())


def throughput(size: int, duration: float, **opts: Any) -> Throughput:
    ours, theirs = socket.socketpair()  # default kernel buffer sizes
    with Children() as kids:
        kids.spawn(MODULE, "send", theirs.fileno(), size=size, duration=duration)
        theirs.close()
        conn = _connection(ours)
        try:
            frames = nbytes = 0
            recv = conn.recv_bytes
            try:
                msg = recv()
            except EOFError:
                raise BadFrame("sender closed without sending") from None
            t0 = time.perf_counter()
            while True:
                chan, length = HEADER.unpack_from(msg)
                check_header(chan, length, size)
                body = memoryview(msg)[HEADER_SIZE:]
                if len(body) != length:
                    raise BadFrame(f"message of {len(msg)} bytes for a {length}-byte frame")
                frames += 1
                nbytes += len(body)
                try:
                    msg = recv()
                except EOFError:
                    break
            seconds = time.perf_counter() - t0
        finally:
            conn.close()
    return Throughput("multiprocessing", size, frames, nbytes, seconds)


def send(size: int, duration: float, **opts: Any) -> Throughput:
    ours, theirs = socket.socketpair()
    with cpeer.reader(theirs, size, framing="mp") as reader:
        conn = _connection(ours)
        try:
            sent = _send(conn, size, duration)
        finally:
            conn.close()
        got = reader.result()
    if got["frames"] != sent:
        raise BadFrame(f"the reader got {got['frames']} frames; {sent} were written")
    return Throughput("multiprocessing", size, got["frames"], got["bytes"], got["seconds"])


def rtt(count: int, **opts: Any) -> Latency:
    ours, theirs = socket.socketpair()
    with Children() as kids:
        kids.spawn(MODULE, "echo", theirs.fileno())
        theirs.close()
        conn = _connection(ours)
        try:
            request = frame(RTT_SIZE)
            send, recv = conn.send_bytes, conn.recv_bytes
            now = time.perf_counter_ns
            for _ in range(rtt_warmup(count)):
                send(request)
                if recv() != request:
                    raise BadFrame("echo differs from request")
            samples = []
            start = now()
            for _ in range(count):
                t = now()
                send(request)
                reply = recv()
                samples.append(now() - t)
                if reply != request:
                    raise BadFrame("echo differs from request")
            seconds = (now() - start) / 1e9
        finally:
            conn.close()
    return Latency.from_samples("multiprocessing", samples, seconds)


def pool(workers: int, requests: int, window: int, **opts: Any) -> PoolResult:
    head = HEADER.pack(CHANNEL, REQUEST_SIZE)
    filler = request_filler()
    pack_id, unpack_id = REQUEST_ID.pack, REQUEST_ID.unpack_from
    with Children() as kids:
        conns: list[Connection] = []
        try:
            for _ in range(workers):
                ours, theirs = socket.socketpair()
                conns.append(_connection(ours))
                kids.spawn(MODULE, "echo", theirs.fileno())
                theirs.close()
            # One round trip each before the clock starts: every worker is up.
            for index, conn in enumerate(conns):
                conn.send_bytes(head + pack_id(0x80000000 | index) + filler)
                conn.recv_bytes()
            owner: dict[int, Connection] = {}
            next_id = 0
            start = time.perf_counter()
            # Fill each window round-robin; after that a reply frees a slot on
            # its own worker, which gets the next request.
            for _ in range(window):
                for conn in conns:
                    if next_id < requests:
                        conn.send_bytes(head + pack_id(next_id) + filler)
                        owner[next_id] = conn
                        next_id += 1
            done = 0
            while done < requests:
                for ready in wait(conns):
                    conn = cast(Connection, ready)
                    reply = conn.recv_bytes()
                    chan, length = HEADER.unpack_from(reply)
                    check_header(chan, length, REQUEST_SIZE)
                    (rid,) = unpack_id(reply, HEADER_SIZE)
                    if owner.pop(rid, None) is not conn:
                        raise BadFrame(f"reply {rid} was not outstanding on this worker")
                    done += 1
                    if next_id < requests:
                        conn.send_bytes(head + pack_id(next_id) + filler)
                        owner[next_id] = conn
                        next_id += 1
            seconds = time.perf_counter() - start
        finally:
            for conn in conns:
                conn.close()
    return PoolResult("multiprocessing", workers, requests, seconds)


def child(role: str, fd: int, **params: Any) -> None:
    conn = Connection(fd)
    try:
        if role == "send":
            _send(conn, params["size"], params["duration"])
        elif role == "echo":
            _echo(conn)
        else:
            raise ValueError(f"unknown role {role!r}")
    finally:
        conn.close()


def _send(conn: Connection, size: int, duration: float) -> int:
    data = payload(size)
    pack = HEADER.pack
    batch = range(clock_batch(size))
    send = conn.send_bytes
    sent = 0
    deadline = time.perf_counter() + duration
    while time.perf_counter() < deadline:
        for _ in batch:
            send(pack(CHANNEL, size) + data)
        sent += len(batch)
    return sent


def _echo(conn: Connection) -> None:
    send, recv = conn.send_bytes, conn.recv_bytes
    while True:
        try:
            msg = recv()
        except EOFError:
            return
        send(msg)
