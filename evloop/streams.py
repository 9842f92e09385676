# evloop/streams.py
#
# Awaitable I/O on what exists, written against the public APIs only: frames
# from any FrameEndpoint (a Pipe, a mempipe end), bytes from a Conn, a
# Worker's exit, and anything with add_done_callback (a pool Request).
#
# FrameStream(endpoint) takes the endpoint's on_frame (frames on the control
# channel 65535 still go to the handler it replaced, so a Worker's
# supervision and a Pool's replies keep working; on an endpoint whose frames
# a ChannelMux routes, it becomes the mux's default) and queues frames in a
# bounded deque; while the deque holds `maxsize` frames the endpoint is
# paused (pause_reading), so a peer that sends faster than the coroutine
# receives is held back by the kernel (or, for a mempipe, by its high
# watermark), never buffered without bound. send() waits (when_writable)
# while the endpoint is above its high watermark, then writes the frame.
#
# ConnReader(conn) takes a Conn's on_data/on_eof for read_until() and
# read_exactly(): bytes stay in the Conn's own buffer until a complete
# answer is there, so nothing is copied twice.
#
# The module-level functions (recv, send, read_until, read_exactly, exited)
# find or make the adapter for an object and are what the one-line methods
# Pipe.recv/Pipe.send/Conn.read_until_async/... call: an object has at most
# one adapter, kept in a WeakKeyDictionary so it dies with the object.
#
# Invariants: one waiter per operation kind at a time (a second concurrent
# recv() on the same stream is a RuntimeError, not a silent interleaving); a
# close or error on the endpoint wakes every waiter; the endpoint's previous
# on_close is still called.
from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from .conn import Conn
from .endpoint import Buffer, ChannelMux, FrameEndpoint, Payload
from .errors import (
    CancelledError,
    ChannelFailed,
    EndOfChannel,
    IncompleteReadError,
)
from .future import Future
from .loop import Loop
from .tasks import wait

_CONTROL = 0xFFFF  # evloop's own channel (spawn.CONTROL_CHANNEL)

__all__ = [
    "FrameStream",
    "ConnReader",
    "recv",
    "send",
    "read_until",
    "read_exactly",
    "exited",
    "wait",
    "frame_stream",
]


@dataclass(frozen=True)
class FrameStreamStatistics:
    queued: int  # frames received, not yet taken by recv()
    paused: bool  # the endpoint's reading is paused (the queue was full)


def _wake(fut: Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class _Private(Future[None]):
    """A wake-up only its one waiter awaits: a cancelled wait cancels it."""

    __slots__ = ()

    def _evloop_abandon(self) -> None:
        self.cancel()


async def _suspend(fut: Future[None]) -> None:
    try:
        await fut
    except CancelledError:
        if not fut.done():
            fut.cancel()
        raise


class FrameStream:
    """Coroutine access to a FrameEndpoint: `await recv()` -> (chan,
    payload); `await send(chan, data, *more)`. Takes the endpoint's on_frame
    (and chains its on_close). `maxsize` frames are queued before reading is
    paused."""

    def __init__(self, endpoint: FrameEndpoint, *, maxsize: int = 64):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.endpoint = endpoint
        self.loop: Loop = endpoint.loop
        self.maxsize = maxsize
        self._queue: deque[tuple[int, Payload]] = deque()
        self._paused = False
        self._recv_waiter: Future[None] | None = None
        self._closed = False
        self._close_exc: BaseException | None = None
        self._prev_on_close = endpoint.on_close
        endpoint.on_close = self._on_close
        prev = endpoint.on_frame
        mux = getattr(prev, "__self__", None)
        if isinstance(mux, ChannelMux):
            # Pattern links (or others) route channels on this endpoint:
            # take what they leave, not their frames.
            self._control = None
            mux.default = self._on_frame
        else:
            # A Worker's or serve()'s own handler keeps the control channel.
            self._control = prev
            endpoint.on_frame = self._on_frame

    # -- receiving --------------------------------------------------------------

    def _on_frame(self, chan: int, payload: Payload) -> None:
        if chan == _CONTROL and self._control is not None:
            self._control(chan, payload)
            return
        self._queue.append((chan, payload))
        if len(self._queue) >= self.maxsize and not self._paused:
            self._paused = True
            self.endpoint.pause_reading()
        _wake(self._recv_waiter)

    def _on_close(self, exc: BaseException | None) -> None:
        self._closed = True
        self._close_exc = exc
        _wake(self._recv_waiter)
        prev = self._prev_on_close
        if prev is not None:
            prev(exc)

    def recv_nowait(self) -> tuple[int, Payload] | None:
        """The next frame if one is queued, else None (EndOfChannel /
        ChannelFailed once the endpoint closed and the queue is empty)."""
        q = self._queue
        if q:
            frame = q.popleft()
            if self._paused and len(q) <= self.maxsize // 2:
                self._paused = False
                if not self._closed:
                    self.endpoint.resume_reading()
            return frame
        if self._closed:
            self._raise_closed()
        return None

    def _raise_closed(self) -> None:
        exc = self._close_exc
        if exc is None:
            raise EndOfChannel("the endpoint closed")
        raise ChannelFailed(f"the endpoint failed: {exc!r}", exc)

    async def recv(self) -> tuple[int, Payload]:
        """The next frame. EndOfChannel once the endpoint closed in order
        and every frame was received; ChannelFailed (cause: the error) if it
        closed with an error."""
        q = self._queue
        while True:
            if q and not self._paused:
                return q.popleft()  # the common case, inline
            frame = self.recv_nowait()
            if frame is not None:
                return frame
            if self._recv_waiter is not None:
                raise RuntimeError("another task is already receiving on this stream")
            fut: _Private = _Private(self.loop)
            self._recv_waiter = fut
            try:
                await fut
            finally:
                self._recv_waiter = None

    def __aiter__(self) -> FrameStream:
        return self

    async def __anext__(self) -> tuple[int, Payload]:
        try:
            return await self.recv()
        except EndOfChannel:
            raise StopAsyncIteration from None

    # -- sending ----------------------------------------------------------------

    async def send(self, chan: int, data: Buffer, *more: Buffer) -> None:
        """Write one frame, first waiting while the endpoint is above its
        high watermark. Errors of write_frame (ConnClosedError, ValueError)
        pass through."""
        await wait_writable(self.endpoint)
        self.endpoint.write_frame(chan, data, *more)

    async def aclose(self) -> None:
        """Close the endpoint (queued frames are flushed first) and wait
        until it is closed."""
        ep = self.endpoint
        ep.close()
        while not self._closed:
            fut: Future[None] = Future(self.loop)
            self._recv_waiter = fut
            try:
                await _suspend(fut)
            finally:
                self._recv_waiter = None

    def statistics(self) -> FrameStreamStatistics:
        return FrameStreamStatistics(queued=len(self._queue), paused=self._paused)


async def wait_writable(endpoint: Any) -> None:
    """Wait while `endpoint` (a Pipe, mempipe end or Conn) is above its high
    watermark; return at once when it is writable or closing (the write
    then raises)."""
    while not endpoint.writable and not endpoint.closed:
        fut: Future[None] = Future(endpoint.loop)
        handle = endpoint.when_writable(functools.partial(_wake, fut))
        try:
            await _suspend(fut)
        finally:
            handle.cancel()


class ConnReader:
    """Awaitable reads on a Conn: `await read_until(delim)`,
    `await read_exactly(n)`. Takes the Conn's on_data and on_eof (at EOF the
    Conn is closed after its writes flush, as by default; buffered bytes can
    still be read)."""

    def __init__(self, conn: Conn):
        self.conn = conn
        self._waiter: Future[None] | None = None
        self._prev_on_close = conn.on_close
        conn.on_data = self._on_data
        conn.on_eof = self._on_eof
        conn.on_close = self._on_close

    def _on_data(self, conn: Conn) -> None:
        _wake(self._waiter)

    def _on_eof(self, conn: Conn) -> bool:
        _wake(self._waiter)
        return False

    def _on_close(self, exc: BaseException | None) -> None:
        _wake(self._waiter)
        if self._prev_on_close is not None:
            self._prev_on_close(exc)

    def _ended(self) -> bool:
        return self.conn.at_eof or self.conn.closed

    async def _wait(self) -> None:
        if self._waiter is not None:
            raise RuntimeError("another task is already reading from this Conn")
        fut: Future[None] = Future(self.conn.loop)
        self._waiter = fut
        try:
            await _suspend(fut)
        finally:
            self._waiter = None

    async def read_until(self, delimiter: bytes = b"\n", limit: int = 64 * 1024) -> bytes:
        """The bytes up to and including `delimiter`. ReadLimitError when
        `limit` bytes arrived without it; IncompleteReadError if the stream
        ends first."""
        if not delimiter:
            raise ValueError("the delimiter must not be empty")
        conn = self.conn
        while True:
            line = conn.read_until(delimiter, limit)
            if line is not None:
                return line
            if self._ended():
                partial = bytes(conn.read())
                raise IncompleteReadError(
                    f"stream ended after {len(partial)} bytes without {delimiter!r}",
                    partial=partial,
                    expected=delimiter,
                )
            await self._wait()

    async def read_exactly(self, n: int) -> bytes:
        """Exactly n bytes. IncompleteReadError if the stream ends first."""
        if n < 0:
            raise ValueError(f"cannot read {n} bytes")
        conn = self.conn
        if n > conn.read_limit:
            conn.read_limit = n  # reading must not pause before n bytes fit
        while True:
            if conn.read_buffered >= n:
                return conn.take(0, n)
            if self._ended():
                partial = bytes(conn.read())
                raise IncompleteReadError(
                    f"stream ended after {len(partial)} of {n} bytes", partial=partial, expected=n
                )
            await self._wait()


# -- one adapter per object --------------------------------------------------------

_streams: WeakKeyDictionary[Any, FrameStream] = WeakKeyDictionary()
_readers: WeakKeyDictionary[Conn, ConnReader] = WeakKeyDictionary()
_exits: WeakKeyDictionary[Any, Future[int]] = WeakKeyDictionary()


def frame_stream(endpoint: FrameEndpoint, *, maxsize: int = 64) -> FrameStream:
    """The FrameStream of `endpoint`, made on first use."""
    s = _streams.get(endpoint)
    if s is None:
        s = _streams[endpoint] = FrameStream(endpoint, maxsize=maxsize)
    return s


def recv(endpoint: FrameEndpoint) -> Coroutine[Any, Any, tuple[int, Payload]]:
    """`await pipe.recv()`: the next (chan, payload) of a Pipe or mempipe
    (returns the FrameStream's coroutine: one frame less per call)."""
    s = _streams.get(endpoint)
    if s is None:
        s = frame_stream(endpoint)
    return s.recv()


async def send(endpoint: FrameEndpoint, chan: int, data: Buffer, *more: Buffer) -> None:
    """`await pipe.send(chan, data)`: write a frame, waiting while the
    endpoint is above its high watermark. Needs no FrameStream."""
    if not endpoint.writable and not endpoint.closed:
        await wait_writable(endpoint)
    endpoint.write_frame(chan, data, *more)


def _reader(conn: Conn) -> ConnReader:
    r = _readers.get(conn)
    if r is None:
        r = _readers[conn] = ConnReader(conn)
    return r


async def read_until(conn: Conn, delimiter: bytes = b"\n", limit: int = 64 * 1024) -> bytes:
    """`await conn.read_until(...)` in a coroutine."""
    return await _reader(conn).read_until(delimiter, limit)


async def read_exactly(conn: Conn, n: int) -> bytes:
    """`await conn.read_exactly(n)` in a coroutine."""
    return await _reader(conn).read_exactly(n)


def exited(worker: Any) -> Future[int]:
    """A Future of the worker's exit status (Worker.returncode), completed
    when its on_exit would fire: reaped, and every frame it sent delivered.
    Chains the Worker's on_exit; `await exited(worker)`."""
    fut = _exits.get(worker)
    if fut is not None:
        return fut
    fut = Future(worker.loop)
    _exits[worker] = fut
    if worker.done:
        fut.set_result(worker.returncode)
        return fut
    prev: Callable[[Any], Any] | None = worker.on_exit

    def on_exit(w: Any) -> None:
        if not fut.done():
            fut.set_result(w.returncode)
        if prev is not None:
            prev(w)

    worker.on_exit = on_exit
    return fut
