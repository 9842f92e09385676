# bench/evlbench/aio.py
#
# The asyncio peers, each on the default selector loop or on uvloop (opts
# loop="asyncio" | "uvloop"):
#
#   api="streams"   StreamReader.readexactly() for header then payload,
#                   StreamWriter.write() + await drain() per frame: the code
#                   asyncio's documentation tells an application to write.
#   api="protocol"  callbacks on a transport: a Handler per connection and a
#                   frame parser from aio_frames (by default the faster one
#                   for the workload's frame size; buffered=True/False forces
#                   BufferedProtocol or plain Protocol). Writers call
#                   transport.write() per frame and honour pause_writing()
#                   and resume_writing().
#
# Both ends of every workload run the same system: the child is a fresh
# interpreter (common.spawn_child) that builds its own loop.
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .aio_frames import Handler, protocol_for
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
    Unsupported,
    check_header,
    clock_batch,
    frame,
    request_filler,
    rtt_warmup,
)

MODULE = "evlbench.aio"
T = TypeVar("T")


def unavailable(loop: str = "asyncio", **opts: Any) -> str | None:
    if loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "uvloop not installed — skipped"
    return None


def _new_loop(loop: str) -> asyncio.AbstractEventLoop:
    if loop == "asyncio":
        return asyncio.new_event_loop()
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError as e:
            raise Unsupported("uvloop not installed — skipped") from e
        return uvloop.new_event_loop()
    raise ValueError(f"unknown loop {loop!r}")


def _run(loop: str, main: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run main(*args) to completion on a new loop of the given kind. The
    coroutine is created only once the loop exists, so a missing uvloop
    leaves no never-awaited coroutine behind."""
    ev = _new_loop(loop)
    try:
        return ev.run_until_complete(main(*args))
    finally:
        # One more turn runs the connection_lost() callbacks that closing
        # transports scheduled, which close their sockets.
        ev.run_until_complete(asyncio.sleep(0))
        ev.close()


def _label(loop: str, api: str) -> str:
    return f"{loop}-{api}"


# --- throughput ------------------------------------------------------------------


def throughput(
    size: int,
    duration: float,
    *,
    loop: str = "asyncio",
    api: str = "streams",
    buffered: bool | None = None,
) -> Throughput:
    ours, theirs = socket.socketpair()  # default kernel buffer sizes
    with Children() as kids:
        kids.spawn(
            MODULE, "send", theirs.fileno(), size=size, duration=duration, loop=loop, api=api
        )
        theirs.close()
        with ours:
            if api == "streams":
                frames, nbytes, seconds = _run(loop, _receive_streams, ours, size)
            else:
                frames, nbytes, seconds = _run(loop, _receive_protocol, ours, size, buffered)
    return Throughput(_label(loop, api), size, frames, nbytes, seconds)


async def _receive_streams(sock: socket.socket, size: int) -> tuple[int, int, float]:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        readexactly = reader.readexactly
        unpack = HEADER.unpack
        frames = nbytes = 0
        try:
            header = await readexactly(HEADER_SIZE)
        except asyncio.IncompleteReadError:
            raise BadFrame("sender closed without sending") from None
        t0 = time.perf_counter()
        while True:
            chan, length = unpack(header)
            check_header(chan, length, size)
            payload = await readexactly(length)
            frames += 1
            nbytes += len(payload)
            try:
                header = await readexactly(HEADER_SIZE)
            except asyncio.IncompleteReadError as e:
                if e.partial:
                    raise BadFrame("stream ended inside a header") from None
                break
        return frames, nbytes, time.perf_counter() - t0
    finally:
        writer.close()
        await writer.wait_closed()


class _Counter(Handler):
    """Checks and counts every frame until EOF."""

    def __init__(self, done: asyncio.Future[Any], size: int) -> None:
        super().__init__(done)
        self.size = size
        self.frames = self.nbytes = 0

    def frame_received(self, chan: int, payload: bytes | bytearray) -> None:
        if chan != CHANNEL or len(payload) != self.size:
            self.fail(BadFrame(f"frame on channel {chan} with {len(payload)} bytes"))
            return
        self.frames += 1
        self.nbytes += len(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.finish(time.perf_counter())
        else:
            super().connection_lost(exc)


async def _receive_protocol(
    sock: socket.socket, size: int, buffered: bool | None
) -> tuple[int, int, float]:
    ev = asyncio.get_running_loop()
    counter = _Counter(ev.create_future(), size)
    _, proto = await ev.create_unix_connection(
        lambda: protocol_for(counter, size, buffered), sock=sock
    )
    end = await counter.done
    if proto.incomplete():
        raise BadFrame("stream ended inside a frame")
    if not proto.first_data:
        raise BadFrame("sender closed without sending")
    return counter.frames, counter.nbytes, end - proto.first_data


async def _send_streams(sock: socket.socket, size: int, duration: float) -> None:
    _, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        data = frame(size)
        batch = range(clock_batch(size))
        write, drain = writer.write, writer.drain
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            for _ in batch:
                write(data)
                await drain()
    finally:
        writer.close()
        await writer.wait_closed()


class _Sender(asyncio.Protocol):
    """Writes frames until the deadline, stopping whenever the transport
    says pause_writing() and carrying on at resume_writing()."""

    transport: asyncio.Transport

    def __init__(self, done: asyncio.Future[None], size: int, duration: float) -> None:
        self.done = done
        self.data = frame(size)
        self.batch = range(clock_batch(size))
        self.duration = duration
        self.paused = False
        self.deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.deadline = time.perf_counter() + self.duration
        self.pump()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()

    def pump(self) -> None:
        write, data = self.transport.write, self.data
        while time.perf_counter() < self.deadline:
            for _ in self.batch:
                write(data)
                if self.paused:
                    return
        # Close from a callback of its own: closing inside resume_writing()
        # makes CPython 3.11's transport call connection_lost() twice.
        # close() sends what is still buffered first.
        asyncio.get_running_loop().call_soon(self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)


async def _send_protocol(sock: socket.socket, size: int, duration: float) -> None:
    ev = asyncio.get_running_loop()
    done: asyncio.Future[None] = ev.create_future()
    await ev.create_unix_connection(lambda: _Sender(done, size, duration), sock=sock)
    await done


# --- rtt ---------------------------------------------------------------------------


def rtt(
    count: int, *, loop: str = "asyncio", api: str = "streams", buffered: bool | None = None
) -> Latency:
    ours, theirs = socket.socketpair()
    with Children() as kids:
        kids.spawn(MODULE, "echo", theirs.fileno(), loop=loop, api=api, buffered=buffered)
        theirs.close()
        with ours:
            if api == "streams":
                samples, seconds = _run(loop, _ping_streams, ours, count)
            else:
                samples, seconds = _run(loop, _ping_protocol, ours, count, buffered)
    return Latency.from_samples(_label(loop, api), samples, seconds)


async def _ping_streams(sock: socket.socket, count: int) -> tuple[list[int], float]:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        request = frame(RTT_SIZE)
        readexactly = reader.readexactly
        write, drain = writer.write, writer.drain
        now = time.perf_counter_ns
        warmup = rtt_warmup(count)
        samples = []
        start = 0
        for i in range(warmup + count):
            if i == warmup:
                start = now()
            t = now()
            write(request)
            await drain()
            header = await readexactly(HEADER_SIZE)
            chan, length = HEADER.unpack(header)
            check_header(chan, length, RTT_SIZE)
            reply = await readexactly(length)
            if i >= warmup:
                samples.append(now() - t)
            if header + reply != request:
                raise BadFrame("echo differs from request")
        return samples, (now() - start) / 1e9
    finally:
        writer.close()
        await writer.wait_closed()


class _Pinger(Handler):
    """Callback-driven ping-pong: each reply sends the next request."""

    def __init__(self, done: asyncio.Future[Any], count: int) -> None:
        super().__init__(done)
        self.request = frame(RTT_SIZE)
        self.expect = self.request[HEADER_SIZE:]
        self.warmup = rtt_warmup(count)
        self.total = self.warmup + count
        self.sent = 0
        self.samples: list[int] = []
        self.start = self.t = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self.send()

    def send(self) -> None:
        if self.sent == self.warmup:
            self.start = time.perf_counter_ns()
        self.sent += 1
        self.t = time.perf_counter_ns()
        self.transport.write(self.request)

    def frame_received(self, chan: int, payload: bytes | bytearray) -> None:
        t = time.perf_counter_ns()
        if chan != CHANNEL or payload != self.expect:
            self.fail(BadFrame("echo differs from request"))
            return
        if self.sent > self.warmup:
            self.samples.append(t - self.t)
        if self.sent < self.total:
            self.send()
        else:
            self.finish((self.samples, (t - self.start) / 1e9))


async def _ping_protocol(
    sock: socket.socket, count: int, buffered: bool | None
) -> tuple[list[int], float]:
    ev = asyncio.get_running_loop()
    pinger = _Pinger(ev.create_future(), count)
    transport, _ = await ev.create_unix_connection(
        lambda: protocol_for(pinger, RTT_SIZE, buffered), sock=sock
    )
    try:
        result: tuple[list[int], float] = await pinger.done
        return result
    finally:
        transport.close()


# --- pool --------------------------------------------------------------------------


class _PoolState:
    """What the pool's clients share: the next id to send, the worker each
    outstanding id went to, and the futures for "all warmed up" and "all
    answered" (whose result is the elapsed time)."""

    def __init__(
        self, ev: asyncio.AbstractEventLoop, workers: int, requests: int, window: int
    ) -> None:
        self.workers = workers
        self.requests = requests
        self.window = window
        self.head = HEADER.pack(CHANNEL, REQUEST_SIZE)
        self.filler = request_filler()
        self.next_id = 0
        self.completed = 0
        self.owner: dict[int, int] = {}
        self.ready = 0
        self.all_ready: asyncio.Future[None] = ev.create_future()
        self.done: asyncio.Future[float] = ev.create_future()
        self.start = 0.0

    def warmup_request(self, index: int) -> bytes:
        return self.head + REQUEST_ID.pack(0x80000000 | index) + self.filler

    def warmed_up(self) -> None:
        self.ready += 1
        if self.ready == self.workers:
            self.start = time.perf_counter()
            self.all_ready.set_result(None)

    def take(self, index: int) -> bytes | None:
        """The next request, now outstanding on worker `index`; None when
        every request has been sent."""
        rid = self.next_id
        if rid >= self.requests:
            return None
        self.next_id = rid + 1
        self.owner[rid] = index
        return self.head + REQUEST_ID.pack(rid) + self.filler

    def answered(self, index: int, payload: bytes | bytearray) -> None:
        if len(payload) != REQUEST_SIZE:
            raise BadFrame(f"reply of {len(payload)} bytes")
        (rid,) = REQUEST_ID.unpack_from(payload)
        if self.owner.pop(rid, None) != index:
            raise BadFrame(f"reply {rid} was not outstanding on worker {index}")
        self.completed += 1
        if self.completed == self.requests and not self.done.done():
            self.done.set_result(time.perf_counter() - self.start)


def pool(
    workers: int,
    requests: int,
    window: int,
    *,
    loop: str = "asyncio",
    api: str = "streams",
    buffered: bool | None = None,
) -> PoolResult:
    with Children() as kids:
        socks = []
        try:
            for _ in range(workers):
                ours, theirs = socket.socketpair()
                socks.append(ours)
                kids.spawn(MODULE, "echo", theirs.fileno(), loop=loop, api=api, buffered=buffered)
                theirs.close()
            if api == "streams":
                seconds = _run(loop, _pool_streams, socks, requests, window)
            else:
                seconds = _run(loop, _pool_protocol, socks, requests, window, buffered)
        finally:
            for sock in socks:
                sock.close()
    return PoolResult(_label(loop, api), workers, requests, seconds)


async def _pool_streams(socks: list[socket.socket], requests: int, window: int) -> float:
    state = _PoolState(asyncio.get_running_loop(), len(socks), requests, window)
    tasks = [asyncio.ensure_future(_pool_client_streams(state, i, s)) for i, s in enumerate(socks)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return await state.done


async def _pool_client_streams(state: _PoolState, index: int, sock: socket.socket) -> None:
    """One worker's connection: a warm-up round trip, then keep `window`
    requests outstanding until every request has been sent and answered."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        readexactly = reader.readexactly
        write, drain = writer.write, writer.drain

        async def reply() -> bytes:
            chan, length = HEADER.unpack(await readexactly(HEADER_SIZE))
            check_header(chan, length, REQUEST_SIZE)
            return await readexactly(length)

        write(state.warmup_request(index))
        await drain()
        await reply()
        state.warmed_up()
        await state.all_ready
        outstanding = 0
        for _ in range(state.window):
            request = state.take(index)
            if request is None:
                break
            write(request)
            outstanding += 1
        await drain()
        while outstanding:
            state.answered(index, await reply())
            outstanding -= 1
            request = state.take(index)
            if request is not None:
                write(request)
                outstanding += 1
                await drain()
    finally:
        writer.close()
        await writer.wait_closed()


class _PoolClient(Handler):
    """One worker's connection, callback-driven: each reply frees a slot in
    this worker's window, which the next request takes."""

    def __init__(self, state: _PoolState, index: int) -> None:
        super().__init__(state.done)
        self.state = state
        self.index = index
        self.warming = True

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        transport.write(self.state.warmup_request(self.index))

    def fill(self) -> None:
        write, take, index = self.transport.write, self.state.take, self.index
        for _ in range(self.state.window):
            request = take(index)
            if request is None:
                return
            write(request)

    def frame_received(self, chan: int, payload: bytes | bytearray) -> None:
        if self.warming:
            self.warming = False
            self.state.warmed_up()
            return
        try:
            if chan != CHANNEL:
                raise BadFrame(f"reply on channel {chan}")
            self.state.answered(self.index, payload)
        except BadFrame as e:
            self.fail(e)
            return
        request = self.state.take(self.index)
        if request is not None:
            self.transport.write(request)


async def _pool_protocol(
    socks: list[socket.socket], requests: int, window: int, buffered: bool | None
) -> float:
    ev = asyncio.get_running_loop()
    state = _PoolState(ev, len(socks), requests, window)
    clients = [_PoolClient(state, index) for index in range(len(socks))]
    transports = []
    try:
        for client, sock in zip(clients, socks, strict=True):
            transport, _ = await ev.create_unix_connection(
                lambda c=client: protocol_for(c, REQUEST_SIZE, buffered),  # type: ignore[misc]
                sock=sock,
            )
            transports.append(transport)
        await state.all_ready
        for client in clients:
            client.fill()
        return await state.done
    finally:
        for transport in transports:
            transport.close()


# --- the child's side --------------------------------------------------------------


def child(
    role: str, fd: int, *, loop: str = "asyncio", api: str = "streams", **params: Any
) -> None:
    with socket.socket(fileno=fd) as sock:
        if role == "send" and api == "streams":
            _run(loop, _send_streams, sock, params["size"], params["duration"])
        elif role == "send":
            _run(loop, _send_protocol, sock, params["size"], params["duration"])
        elif role == "echo" and api == "streams":
            _run(loop, _echo_streams, sock)
        elif role == "echo":
            _run(loop, _echo_protocol, sock, params.get("buffered"))
        else:
            raise ValueError(f"unknown role {role!r}")


async def _echo_streams(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        readexactly = reader.readexactly
        write, drain = writer.write, writer.drain
        unpack = HEADER.unpack
        while True:
            try:
                header = await readexactly(HEADER_SIZE)
            except asyncio.IncompleteReadError as e:
                if e.partial:
                    raise BadFrame("stream ended inside a header") from None
                return
            _, length = unpack(header)
            write(header + await readexactly(length))
            await drain()
    finally:
        writer.close()
        await writer.wait_closed()


class _Echoer(Handler):
    def frame_received(self, chan: int, payload: bytes | bytearray) -> None:
        self.transport.write(HEADER.pack(chan, len(payload)) + payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.finish()
        else:
            super().connection_lost(exc)


async def _echo_protocol(sock: socket.socket, buffered: bool | None) -> None:
    ev = asyncio.get_running_loop()
    echoer = _Echoer(ev.create_future())
    # Echo workers answer 64-byte requests (rtt and pool), hence that size.
    await ev.create_unix_connection(lambda: protocol_for(echoer, RTT_SIZE, buffered), sock=sock)
    await echoer.done
