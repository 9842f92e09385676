# bench/evlbench/aio_frames.py
#
# Frames over an asyncio transport, for the "protocol" flavour of the asyncio
# and uvloop peers. A Handler is the application side (it gets
# frame_received(chan, payload) and writes replies on its transport); one of
# two protocol classes parses the byte stream for it:
#
#   ChunkProtocol     a plain asyncio.Protocol: whole frames are sliced out of
#                     each data_received() chunk, one copy each.
#   BufferedFrames    an asyncio.BufferedProtocol: the transport recv_into()s a
#                     fixed scratch buffer; a payload of BIG bytes or more is
#                     received straight into a bytearray of its own.
#
# Measured on the benchmark machine, ChunkProtocol is as fast or a few percent
# faster for small frames (one Python call per read instead of two), while
# BufferedFrames is 1.3-1.5x faster at 1 MiB (one copy fewer); see
# `protocol_for`. Every payload delivered is an object the application may
# keep (bytes, or a bytearray of its own), never a view of a reused buffer.
from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from .common import HEADER, HEADER_SIZE


class Handler:
    """The application end of one framed connection. `done` is the future
    its driver awaits; fail() and finish() settle it."""

    transport: asyncio.Transport

    def __init__(self, done: asyncio.Future[Any]) -> None:
        self.done = done

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def frame_received(self, chan: int, payload: bytes | bytearray) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("connection closed early"))

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        if not self.transport.is_closing():
            self.transport.abort()

    def finish(self, value: Any = None) -> None:
        if not self.done.done():
            self.done.set_result(value)


class _Adapter:
    """What both parsers share: passing connection events to the handler,
    and the time the first bytes arrived."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.deliver = handler.frame_received
        self.first_data = 0.0  # perf_counter() at the first read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.handler.connection_made(cast(asyncio.Transport, transport))

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost() follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.handler.connection_lost(exc)

    def incomplete(self) -> bool:
        """Whether part of a frame is still waiting for the rest."""
        raise NotImplementedError


class ChunkProtocol(_Adapter, asyncio.Protocol):
    """Frames out of data_received() chunks. A frame cut by the end of a
    chunk gets a bytearray of its exact size, filled from the chunks that
    follow and then delivered itself, so its bytes too are copied once."""

    def __init__(self, handler: Handler) -> None:
        super().__init__(handler)
        self._head = bytearray()  # part of a header
        self._body: bytearray | None = None  # the payload being assembled
        self._filled = 0
        self._chan = 0

    def incomplete(self) -> bool:
        return bool(self._head) or self._body is not None

    def data_received(self, data: bytes) -> None:
        if not self.first_data:
            self.first_data = time.perf_counter()
        off = 0
        if self._head or self._body is not None:
            off = self._resume(data)
            if off < 0:
                return
        unpack = HEADER.unpack_from
        deliver = self.deliver
        end = len(data)
        while end - off >= HEADER_SIZE:
            chan, length = unpack(data, off)
            stop = off + HEADER_SIZE + length
            if stop > end:
                break
            deliver(chan, data[off + HEADER_SIZE : stop])
            off = stop
        if off == end:
            return
        if end - off < HEADER_SIZE:
            self._head = bytearray(data[off:])
            return
        self._start(*unpack(data, off))
        self._fill(data, off + HEADER_SIZE)

    def _start(self, chan: int, length: int) -> None:
        self._body = bytearray(length)
        self._filled = 0
        self._chan = chan

    def _fill(self, data: bytes, off: int) -> int:
        """Copy what the pending payload still needs from data[off:] and
        deliver it if that completes it. Returns the offset after the bytes
        taken, or -1 when the chunk ran out first."""
        body = self._body
        assert body is not None
        filled = self._filled
        take = min(len(body) - filled, len(data) - off)
        body[filled : filled + take] = memoryview(data)[off : off + take]
        self._filled = filled = filled + take
        if filled < len(body):
            return -1
        self._body = None
        self.deliver(self._chan, body)
        return off + take

    def _resume(self, data: bytes) -> int:
        head = self._head
        off = 0
        if head:
            off = min(HEADER_SIZE - len(head), len(data))
            head += data[:off]
            if len(head) < HEADER_SIZE:
                return -1
            self._head = bytearray()
            self._start(*HEADER.unpack(head))
        return self._fill(data, off)


class BufferedFrames(_Adapter, asyncio.BufferedProtocol):
    """Frames out of recv_into(). The transport reads into a fixed scratch
    buffer; complete frames are copied out as bytes and the unparsed tail is
    moved to the front. A payload of BIG bytes or more gets a bytearray of its
    own that the transport fills directly, and after it only the next header
    is read, so that a following large payload lands in place as well."""

    SCRATCH = 256 * 1024
    BIG = 128 * 1024  # at most SCRATCH - HEADER_SIZE, so a small frame always fits

    def __init__(self, handler: Handler) -> None:
        super().__init__(handler)
        self._scratch = bytearray(self.SCRATCH)
        self._view = memoryview(self._scratch)
        self._filled = 0
        self._header_only = False
        self._big: bytearray | None = None
        self._big_view = self._view
        self._big_filled = 0
        self._big_chan = 0

    def incomplete(self) -> bool:
        return bool(self._filled) or self._big is not None

    def get_buffer(self, sizehint: int) -> memoryview:
        if not self.first_data:
            self.first_data = time.perf_counter()
        if self._big is not None:
            return self._big_view[self._big_filled :]
        if self._header_only:
            return self._view[self._filled : HEADER_SIZE]
        return self._view[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        big = self._big
        if big is not None:
            self._big_filled += nbytes
            if self._big_filled == len(big):
                self._big = None
                self._big_view.release()
                self._header_only = True
                self.deliver(self._big_chan, big)
            return
        self._header_only = False
        view = self._view
        filled = self._filled + nbytes
        unpack = HEADER.unpack_from
        deliver = self.deliver
        off = 0
        while filled - off >= HEADER_SIZE:
            chan, length = unpack(view, off)
            start = off + HEADER_SIZE
            stop = start + length
            if stop > filled:
                if length >= self.BIG:
                    self._start_big(chan, length, view[start:filled])
                    off = filled
                break
            deliver(chan, bytes(view[start:stop]))
            off = stop
        rest = filled - off
        if rest and off:
            view[:rest] = view[off:filled]
        self._filled = rest

    def _start_big(self, chan: int, length: int, head: memoryview) -> None:
        big = bytearray(length)
        big[: len(head)] = head
        self._big = big
        self._big_view = memoryview(big)
        self._big_filled = len(head)
        self._big_chan = chan


def protocol_for(
    handler: Handler, size: int, buffered: bool | None = None
) -> ChunkProtocol | BufferedFrames:
    """The parser for frames of `size` payload bytes: the caller's choice
    (buffered=True/False), or by default the one measured faster for that
    size. An application knows its message sizes; this is that knowledge."""
    if buffered is None:
        buffered = size >= BufferedFrames.BIG
    return BufferedFrames(handler) if buffered else ChunkProtocol(handler)
