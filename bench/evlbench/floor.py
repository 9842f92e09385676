# bench/evlbench/floor.py
#
# The rows with no framework at all: the least Python can do for the work,
# so that a reader sees how far the frameworks are from it.
#
# python-floor (recv): a blocking recv_into() a 1 MiB bytearray, evloop's C
#   batch scan through the public codec module (evloop.codec.scan_frames),
#   one bytes copy and one call of common.frame_sink's callback per frame.
# blocking-socket (rtt): plain blocking sockets in both processes; the
#   parent sendall()s a frame and recv_into()s the echo, the child echoes
#   every complete frame it has with one sendall().
#
# It also holds the lean worker the asyncio and uvloop pool dispatchers talk
# to (role "pool-worker"): blocking recv_into, frames parsed in Python, one
# handler call per request (reply = bytes(request), the same work
# evloop.serve(loop, pipe, bytes) does), and the replies to everything one
# read brought back in one sendall().
from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from evloop import codec

from . import cpeer
from .common import (
    CHANNEL,
    HEADER,
    HEADER_SIZE,
    RTT_SIZE,
    BadFrame,
    Children,
    Latency,
    Throughput,
    c_payload,
    check_sink,
    frame,
    frame_sink,
    rtt_warmup,
)

MODULE = "evlbench.floor"
BUFFER = 1 << 20
MAX_LEN = 1 << 20


def _compact(mv: memoryview, start: int, end: int) -> tuple[int, int]:
    """Move the unconsumed bytes to the front of the buffer."""
    rest = end - start
    mv[:rest] = mv[start:end]
    return 0, rest


# --- recv: the Python floor ----------------------------------------------------------


def recv(size: int, duration: float, batch: int, **opts: Any) -> Throughput:
    ours, theirs = socket.socketpair()
    on_frame, state = frame_sink(size)
    with ours, cpeer.writer([theirs], size, duration, batch) as writer:
        buf = bytearray(BUFFER)
        mv = memoryview(buf)
        start = end = 0
        recv_into = ours.recv_into
        scan = codec.scan_frames
        while True:
            if end == BUFFER:
                start, end = _compact(mv, start, end)
            n = recv_into(mv[end:])
            if not n:
                break
            end += n
            chans, offs, lens, start, need = scan(buf, start, end, BUFFER, MAX_LEN)
            for chan, off, length in zip(chans, offs, lens, strict=True):
                on_frame(chan, mv[off : off + length].tobytes())
            if need < 0:
                raise BadFrame(f"bad frame header at offset {start}")
            if start == end:
                start = end = 0
        t_end = time.perf_counter()
        if start != end:
            raise BadFrame("stream ended inside a frame")
        wrote = writer.result()
    st = state()
    check_sink(st, wrote["frames"], c_payload(size))
    return Throughput("python-floor", size, st.frames, st.frames * size, t_end - st.t0)


# --- rtt: the blocking socket --------------------------------------------------------


def _recv_exactly(sock: socket.socket, view: memoryview) -> bool:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            if got:
                raise BadFrame("stream ended inside a frame")
            return False
        got += n
    return True


def rtt(count: int, **opts: Any) -> Latency:
    ours, theirs = socket.socketpair()
    with ours, Children() as kids:
        kids.spawn(MODULE, "echo", theirs.fileno())
        theirs.close()
        request = frame(RTT_SIZE)
        reply = bytearray(len(request))
        view = memoryview(reply)
        sendall = ours.sendall
        now = time.perf_counter_ns
        warmup = rtt_warmup(count)
        samples = []
        start = 0
        for i in range(warmup + count):
            if i == warmup:
                start = now()
            t = now()
            sendall(request)
            if not _recv_exactly(ours, view):
                raise BadFrame("the echo closed early")
            if i >= warmup:
                samples.append(now() - t)
            if reply != request:
                raise BadFrame("echo differs from request")
        seconds = (now() - start) / 1e9
        ours.shutdown(socket.SHUT_WR)  # the child's EOF: it exits
    return Latency.from_samples("blocking-socket", samples, seconds)


# --- the children ------------------------------------------------------------------------


def _frames_loop(
    sock: socket.socket, answer: Callable[[memoryview, int, int, list[Any]], None]
) -> None:
    """Read into a 1 MiB buffer until EOF; for every complete frame call
    answer(buffer view, frame start, frame end, out) and sendall() what the
    calls appended to `out` once per read."""
    buf = bytearray(BUFFER)
    mv = memoryview(buf)
    start = end = 0
    unpack = HEADER.unpack_from
    while True:
        if end == BUFFER:
            start, end = _compact(mv, start, end)
        n = sock.recv_into(mv[end:])
        if not n:
            if start != end:
                raise BadFrame("stream ended inside a frame")
            return
        end += n
        out: list[Any] = []
        while end - start >= HEADER_SIZE:
            _, length = unpack(buf, start)
            stop = start + HEADER_SIZE + length
            if stop > end:
                break
            answer(mv, start, stop, out)
            start = stop
        if out:
            sock.sendall(b"".join(out))
        if start == end:
            start = end = 0


def _echo(mv: memoryview, start: int, stop: int, out: list[Any]) -> None:
    out.append(mv[start:stop])


def serve_blocking(sock: socket.socket, handler: Callable[[memoryview], bytes]) -> None:
    """The lean pool worker: one handler call per request, the reply framed
    on the request's channel, the replies to one read sent together."""
    pack = HEADER.pack

    def answer(mv: memoryview, start: int, stop: int, out: list[Any]) -> None:
        chan = (mv[start] << 8) | mv[start + 1]
        reply = handler(mv[start + HEADER_SIZE : stop])
        out.append(pack(chan, len(reply)))
        out.append(reply)

    _frames_loop(sock, answer)


def child(role: str, fd: int, **params: Any) -> None:
    with socket.socket(fileno=fd) as sock:
        if role == "echo":
            _frames_loop(sock, _echo)
        elif role == "pool-worker":
            serve_blocking(sock, bytes)
        else:
            raise ValueError(f"unknown role {role!r}")


__all__ = ["recv", "rtt", "child", "serve_blocking", "CHANNEL"]
