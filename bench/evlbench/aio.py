# bench/evlbench/aio.py
#
# The asyncio peers, each on the default selector loop or on uvloop (opts
# loop="asyncio" | "uvloop"):
#
#   api="streams"   StreamReader.readexactly() for header then payload,
#                   StreamWriter.write() + await drain() per frame: the code
#                   asyncio's documentation tells an application to write.
#   api="protocol"  callbacks on a transport. Receivers are a plain
#                   asyncio.Protocol that slices whole frames out of each
#                   data_received() chunk (aio_frames.ChunkProtocol; for
#                   throughput at 1 MiB the BufferedProtocol parser, which is
#                   faster there) and calls one callback per frame. Writers
#                   call transport.write() once per frame and honour
#                   pause_writing()/resume_writing().
#   batched=True    (protocol) the writer appends each frame to a bytearray
#                   and one call_soon() callback per loop iteration hands it
#                   to transport.write(): what evloop's end-of-turn flush
#                   does, so the tables show what is the loop and what is
#                   the batching.
#
# Every frame a peer writes is encoded when it is written (a header packed
# with struct, then the payload), as evloop's write_frame() does and as a
# real sender of varying frames must; only the payload bytes are made once.
#
# throughput: both ends run the same system (the child is a fresh
#   interpreter, common.spawn_child). recv, many: a C writer (cpeer) feeds
#   this process's Protocols. send: this process writes, a C reader drains.
# memory: N idle transports with a ChunkProtocol each, made with
#   create_unix_connection(sock=...) on one end of each socketpair.
# rtt: each system echoes on its own loop in the child.
# pool: the strongest lean dispatcher we could write: one connection per
#   worker, a dict from request id to worker, one callback per reply, and
#   (batched) one write per worker per loop iteration. The workers are the
#   same for every asyncio/uvloop row: floor.serve_blocking, a blocking
#   Python loop with one handler call per request and one sendall() per read
#   (evloop's workers run evloop.serve, which does the same work per
#   request on an evloop Loop).
from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import cpeer
from .aio_frames import ChunkProtocol, Handler, protocol_for
from .common import (
    CHANNEL,
    HEADER,
    HEADER_SIZE,
    REQUEST_ID,
    REQUEST_SIZE,
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
    check_header,
    check_sink,
    clock_batch,
    frame,
    frame_sink,
    payload,
    raise_nofile,
    request_filler,
    rss_bytes,
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


def _label(loop: str, api: str, batched: bool = False) -> str:
    return f"{loop}-{api}" + ("-batched" if batched else "")


class _Sink(Handler):
    """The application end shared by every connection of a receive-side
    workload: common.frame_sink's callback for each frame, and the time and
    CPU time at which the last of `expected` connections ended."""

    def __init__(
        self, done: asyncio.Future[Any], on_frame: Callable[[int, Any], None], expected: int
    ) -> None:
        super().__init__(done)
        self.frame_received = on_frame  # type: ignore[method-assign,assignment]
        self.expected = expected
        self.closed = 0
        self.end = 0.0
        self.cpu_end = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:
        pass  # shared by many connections: it writes on none

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed += 1
        self.end = time.perf_counter()
        self.cpu_end = time.process_time()
        if exc is not None:
            self.fail(exc)
        elif self.closed == self.expected:
            self.finish()


async def _receive(
    socks: list[socket.socket], on_frame: Callable[[int, Any], None], size: int, buffered: bool
) -> _Sink:
    """Receive on every socket with a Protocol each until all have ended."""
    ev = asyncio.get_running_loop()
    sink = _Sink(ev.create_future(), on_frame, len(socks))
    protos = []
    for sock in socks:
        _, proto = await ev.create_unix_connection(
            lambda: protocol_for(sink, size, buffered), sock=sock
        )
        protos.append(proto)
    await sink.done
    if any(p.incomplete() for p in protos):
        raise BadFrame("stream ended inside a frame")
    return sink


# --- throughput ------------------------------------------------------------------


def throughput(
    size: int,
    duration: float,
    *,
    loop: str = "asyncio",
    api: str = "streams",
    buffered: bool | None = None,
    batched: bool = False,
) -> Throughput:
    ours, theirs = socket.socketpair()  # default kernel buffer sizes
    with Children() as kids:
        kids.spawn(
            MODULE,
            "send",
            theirs.fileno(),
            size=size,
            duration=duration,
            loop=loop,
            api=api,
            batched=batched,
        )
        theirs.close()
        with ours:
            if api == "streams":
                frames, nbytes, seconds = _run(loop, _receive_streams, ours, size)
                return Throughput(_label(loop, api), size, frames, nbytes, seconds)
            on_frame, state = frame_sink(size)
            big = size >= 128 * 1024 if buffered is None else buffered
            sink = _run(loop, _receive, [ours], on_frame, size, big)
    st = state()
    check_sink(st, None, payload(size))
    return Throughput(
        _label(loop, api, batched), size, st.frames, st.frames * size, sink.end - st.t0
    )


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


async def _send_streams(sock: socket.socket, size: int, duration: float) -> None:
    _, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        data = payload(size)
        pack = HEADER.pack
        batch = range(clock_batch(size))
        write, drain = writer.write, writer.drain
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            for _ in batch:
                write(pack(CHANNEL, size) + data)
                await drain()
    finally:
        writer.close()
        await writer.wait_closed()


class _Sender(asyncio.Protocol):
    """Writes frames until the deadline, one transport.write() per frame,
    stopping whenever the transport says pause_writing() and carrying on at
    resume_writing(); counts the frames it wrote."""

    transport: asyncio.Transport

    def __init__(self, done: asyncio.Future[int], size: int, duration: float) -> None:
        self.done = done
        self.data = payload(size)
        self.size = size
        self.batch = range(clock_batch(size))
        self.duration = duration
        self.paused = False
        self.deadline = 0.0
        self.sent = 0
        self.closing = False

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
        write, data, n = self.transport.write, self.data, len(self.batch)
        pack, size = HEADER.pack, self.size
        while time.perf_counter() < self.deadline:
            for i in self.batch:
                write(pack(CHANNEL, size) + data)
                if self.paused:
                    self.sent += i + 1
                    return
            self.sent += n
        self.close()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        # Close from a callback of its own: closing inside resume_writing()
        # makes CPython 3.11's transport call connection_lost() twice.
        # close() sends what is still buffered first.
        asyncio.get_running_loop().call_soon(self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(self.sent)
        else:
            self.done.set_exception(exc)


class _BatchedSender(_Sender):
    """The same writer with its frames appended to a bytearray, which one
    call_soon() callback per loop iteration hands to transport.write()."""

    def __init__(self, done: asyncio.Future[int], size: int, duration: float) -> None:
        super().__init__(done, size, duration)
        self.out = bytearray()
        self.flush_scheduled = False
        self.pump_scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.loop = asyncio.get_running_loop()
        super().connection_made(transport)

    def send_frame(self, data: bytes) -> None:
        out = self.out
        out += HEADER.pack(CHANNEL, len(data))
        out += data
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out:
            # A new buffer each time: the transport may keep the old one.
            out, self.out = self.out, bytearray()
            self.transport.write(out)

    def resume_writing(self) -> None:
        self.paused = False
        self.schedule_pump()

    def schedule_pump(self) -> None:
        if not self.pump_scheduled:
            self.pump_scheduled = True
            self.loop.call_soon(self.pump)

    def pump(self) -> None:
        # One clock_batch of frames per loop iteration, so the flush (queued
        # first) runs between them and pause_writing() can stop us.
        self.pump_scheduled = False
        if self.paused or self.closing:
            return
        if time.perf_counter() >= self.deadline:
            self.flush()
            self.close()
            return
        send_frame, data = self.send_frame, self.data
        for _ in self.batch:
            send_frame(data)
        self.sent += len(self.batch)
        self.schedule_pump()


async def _send_protocol(sock: socket.socket, size: int, duration: float, batched: bool) -> int:
    ev = asyncio.get_running_loop()
    done: asyncio.Future[int] = ev.create_future()
    cls = _BatchedSender if batched else _Sender
    await ev.create_unix_connection(lambda: cls(done, size, duration), sock=sock)
    return await done


# --- recv, send, many, memory ------------------------------------------------------


def _protocol_only(api: str, workload: str) -> None:
    if api != "protocol":
        raise Unsupported(f"n/a (the {workload} workload has a Protocol peer only)")


def recv(
    size: int,
    duration: float,
    batch: int,
    *,
    loop: str = "asyncio",
    api: str = "protocol",
    **unused: Any,
) -> Throughput:
    _protocol_only(api, "recv")
    ours, theirs = socket.socketpair()
    on_frame, state = frame_sink(size)
    with ours, cpeer.writer([theirs], size, duration, batch) as writer:
        sink = _run(loop, _receive, [ours], on_frame, size, False)
        wrote = writer.result()
    st = state()
    check_sink(st, wrote["frames"], c_payload(size))
    return Throughput(_label(loop, api), size, st.frames, st.frames * size, sink.end - st.t0)


def send(
    size: int,
    duration: float,
    *,
    loop: str = "asyncio",
    api: str = "protocol",
    batched: bool = False,
    **unused: Any,
) -> Throughput:
    _protocol_only(api, "send")
    ours, theirs = socket.socketpair()
    with cpeer.reader(theirs, size) as reader:
        with ours:
            sent = _run(loop, _send_protocol, ours, size, duration, batched)
        got = reader.result()
    if got["frames"] != sent:
        raise BadFrame(f"the reader got {got['frames']} frames; {sent} were written")
    return Throughput(_label(loop, api, batched), size, got["frames"], got["bytes"], got["seconds"])


def many(
    conns: int,
    mode: str,
    duration: float,
    frames: int,
    size: int,
    batch: int,
    trickle: int,
    pause_us: int,
    *,
    loop: str = "asyncio",
    api: str = "protocol",
    **unused: Any,
) -> ManyResult:
    _protocol_only(api, "many")
    raise_nofile(3 * conns + 256)
    pairs = [socket.socketpair() for _ in range(conns)]
    on_frame, state = frame_sink(size)
    ev = _new_loop(loop)
    try:
        ours = [a for a, _ in pairs]

        async def main() -> _Sink:
            sink = _Sink(ev.create_future(), on_frame, conns)
            protos = []
            for sock in ours:
                _, proto = await ev.create_unix_connection(lambda: ChunkProtocol(sink), sock=sock)
                protos.append(proto)
            # Every Protocol is in place before the writer starts.
            theirs = [b for _, b in pairs]
            with cpeer.many_writer(
                theirs, mode, duration, frames, size, batch, trickle, pause_us
            ) as w:
                await sink.done
                sink.wrote = w.result()  # type: ignore[attr-defined]
            if any(p.incomplete() for p in protos):
                raise BadFrame("stream ended inside a frame")
            return sink

        sink = ev.run_until_complete(main())
        ev.run_until_complete(asyncio.sleep(0))
    finally:
        ev.close()
    st = state()
    check_sink(st, sink.wrote["frames"], c_payload(size))  # type: ignore[attr-defined]
    return ManyResult(
        _label(loop, api), conns, mode, st.frames, sink.end - st.t0, sink.cpu_end - st.cpu0
    )


def memory(
    conns: int, *, loop: str = "asyncio", api: str = "protocol", **unused: Any
) -> MemoryResult:
    _protocol_only(api, "memory")
    ev = _new_loop(loop)
    try:
        gc.collect()
        base = rss_bytes()
        idle = IdleSockets(conns)
        try:
            gc.collect()
            with_sockets = rss_bytes()
            on_frame, _ = frame_sink(64)
            sink = _Sink(ev.create_future(), on_frame, conns)

            async def wrap() -> list[Any]:
                made = await asyncio.gather(
                    *(
                        ev.create_unix_connection(lambda: ChunkProtocol(sink), sock=sock)
                        for sock in idle.socks
                    )
                )
                await asyncio.sleep(0)  # one whole iteration with every reader registered
                return [t for t, _ in made]

            transports = ev.run_until_complete(wrap())
            gc.collect()
            wrapped = rss_bytes()
            for t in transports:
                t.abort()
            ev.run_until_complete(asyncio.sleep(0))
        finally:
            idle.close()
    finally:
        ev.close()
    return MemoryResult(_label(loop, api), conns, with_sockets - base, wrapped - with_sockets)


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
    batched: bool = False,
    **unused: Any,
) -> PoolResult:
    with Children() as kids:
        socks = []
        try:
            for _ in range(workers):
                ours, theirs = socket.socketpair()
                socks.append(ours)
                kids.spawn("evlbench.floor", "pool-worker", theirs.fileno())
                theirs.close()
            if api == "streams":
                seconds = _run(loop, _pool_streams, socks, requests, window)
            else:
                seconds = _run(loop, _pool_protocol, socks, requests, window, batched)
        finally:
            for sock in socks:
                sock.close()
    return PoolResult(_label(loop, api, batched), workers, requests, seconds)


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


_WARM = 0x80000000  # request ids with this bit are warm-up requests


class _Dispatcher:
    """The lean dispatcher: the next request id, a dict from each
    outstanding id to the worker it went to, and one on_reply() call per
    reply, which refills that worker's window."""

    def __init__(self, ev: asyncio.AbstractEventLoop, requests: int, window: int) -> None:
        self.requests = requests
        self.window = window
        self.head = HEADER.pack(CHANNEL, REQUEST_SIZE)
        self.filler = request_filler()
        self.next_id = 0
        self.completed = 0
        self.owner: dict[int, int] = {}
        self.conns: list[_WorkerConn] = []
        self.warming = 0
        self.done: asyncio.Future[float] = ev.create_future()
        self.start = 0.0

    def issue(self, index: int) -> None:
        rid = self.next_id
        self.next_id = rid + 1
        self.owner[rid] = index
        self.conns[index].send(self.head + REQUEST_ID.pack(rid) + self.filler)

    def begin(self) -> None:
        """Warm up: one round trip per worker before the clock starts."""
        self.warming = len(self.conns)
        for index, conn in enumerate(self.conns):
            self.owner[_WARM | index] = index
            conn.send(self.head + REQUEST_ID.pack(_WARM | index) + self.filler)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def on_reply(self, index: int, chan: int, data: bytes) -> None:
        (rid,) = REQUEST_ID.unpack_from(data)
        if (
            self.owner.pop(rid, -1) != index
            or chan != CHANNEL
            or len(data) != REQUEST_SIZE
            or data[4:] != self.filler
        ):
            self.fail(BadFrame(f"reply {rid} on channel {chan} is not a request's echo"))
            return
        if rid & _WARM:
            self.warming -= 1
            if not self.warming:
                self.start = time.perf_counter()
                for i in range(len(self.conns)):
                    for _ in range(self.window):
                        if self.next_id < self.requests:
                            self.issue(i)
            return
        self.completed += 1
        if self.next_id < self.requests:
            self.issue(index)
        elif self.completed == self.requests and not self.done.done():
            self.done.set_result(time.perf_counter() - self.start)


class _WorkerConn(asyncio.Protocol):
    """One worker's connection: replies sliced out of each data_received()
    chunk straight into the dispatcher; requests written at once, or (batched)
    collected and written once per loop iteration."""

    transport: asyncio.Transport

    def __init__(self, disp: _Dispatcher, index: int, batched: bool) -> None:
        self.disp = disp
        self.index = index
        self.rest = b""
        self.out = bytearray()
        self.flush_scheduled = False
        if batched:
            self.send = self._send_batched  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.write = self.transport.write
        self.loop = asyncio.get_running_loop()

    def send(self, request: bytes) -> None:
        self.write(request)

    def _send_batched(self, request: bytes) -> None:
        self.out += request
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        out, self.out = self.out, bytearray()
        self.write(out)

    def data_received(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
            self.rest = b""
        unpack = HEADER.unpack_from
        on_reply, index = self.disp.on_reply, self.index
        off, end = 0, len(data)
        while end - off >= HEADER_SIZE:
            chan, length = unpack(data, off)
            stop = off + HEADER_SIZE + length
            if stop > end:
                break
            on_reply(index, chan, data[off + HEADER_SIZE : stop])
            off = stop
        if off < end:
            self.rest = data[off:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.disp.fail(exc or ConnectionError(f"worker {self.index} closed its end"))


async def _pool_protocol(
    socks: list[socket.socket], requests: int, window: int, batched: bool
) -> float:
    ev = asyncio.get_running_loop()
    disp = _Dispatcher(ev, requests, window)
    transports = []
    try:
        for index, sock in enumerate(socks):
            transport, conn = await ev.create_unix_connection(
                lambda i=index: _WorkerConn(disp, i, batched),  # type: ignore[misc]
                sock=sock,
            )
            transports.append(transport)
            disp.conns.append(conn)
        disp.begin()
        return await disp.done
    finally:
        for transport in transports:
            transport.close()


# --- the child's side --------------------------------------------------------------


def child(
    role: str,
    fd: int,
    *,
    loop: str = "asyncio",
    api: str = "streams",
    batched: bool = False,
    **params: Any,
) -> None:
    with socket.socket(fileno=fd) as sock:
        if role == "send" and api == "streams":
            _run(loop, _send_streams, sock, params["size"], params["duration"])
        elif role == "send":
            _run(loop, _send_protocol, sock, params["size"], params["duration"], batched)
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
