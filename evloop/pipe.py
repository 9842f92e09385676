# evloop/pipe.py
#
# Frames on a Conn: chan (u16 BE) | length (u32 BE) | payload, byte for byte
# the seed design's format. The Pipe owns no fd; the Conn does. A Pipe is a
# FrameEndpoint (evloop/endpoint.py).
#
# Reading. When bytes arrive (Conn.on_data) the Pipe scans the Conn's read
# buffer (codec.scan_batch: C, or its pure-Python twin) for a batch of
# complete frames below LARGE_PAYLOAD, copies the whole run out in one bytes
# object and consumes it from the Conn at once: the Conn's buffer is then
# empty but for a partial frame, so it never memmoves much and can go back
# to the pool. The Pipe puts itself on the Loop's ready-source list, and the
# Loop serves ready Pipes round-robin, `quantum` frames per Pipe per round,
# up to its per-turn budget: a quiet Pipe waits for at most a quantum from
# each flooding one. Each payload handed to on_frame is a slice of that
# bytes object: an independent `bytes` the receiver owns. Invariant: a Pipe
# holding undelivered frames stays on the ready list (epoll cannot see bytes
# already read out of the kernel), and takes no new batch until the current
# one is delivered, so what it holds is bounded by one batch plus the Conn's
# read_limit.
#
# The delivery loop (_deliver) is the per-frame hot path: a zip over the
# batch's channels and offsets calling on_frame with a slice, nothing else.
# What must stop it early (a close, a pause, a new on_frame) empties the
# list it iterates, so the loop needs no per-frame check; the frames handed
# out are counted from the last offset reached, so a callback that raises,
# even KeyboardInterrupt, never makes a frame go out twice.
#
# Large frames (LARGE_PAYLOAD and above) are received straight into their
# own bytearray with Conn.read_into (or copied once, if already buffered) and
# delivered as that bytearray, never assembled by concatenation.
#
# Writing. write_frame() appends header and payload straight to the Conn's
# WriteBuffer tail under the documented contract (see conn.py), so a small
# frame costs no call into the Conn; anything else (the first frame of a
# turn, a multi-part or large frame, past the watermark) goes through
# Conn.writev() in one piece: a frame is queued whole or not at all.
#
# Errors. A header with length 0 or above `max_len` is a ProtocolError naming
# the channel, length and stream offset. Frames before it are still delivered;
# then on_error(exc) is called and the Conn is aborted. A stream that ends
# inside a frame is a TruncatedFrameError, reported the same way.
"""Pipe: framed messages (chan u16 | length u32 | payload) on a Conn, delivered fairly by the Loop. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from . import codec
from .codec import STOP_BAD, STOP_END, STOP_LARGE
from .conn import LARGE_WRITE, Buffer, Conn, as_buffer
from .errors import ProtocolError, TruncatedFrameError
from .loop import Handle

__all__ = ["Pipe", "PipeStatistics", "HEADER_SIZE", "DEFAULT_MAX_LEN", "LARGE_PAYLOAD", "Payload"]

HEADER_SIZE = codec.HEADER_SIZE
DEFAULT_MAX_LEN = codec.DEFAULT_MAX_LEN
# Payloads at least this large are received straight into their own buffer.
LARGE_PAYLOAD = 64 * 1024
_pack_header = struct.Struct(">HI").pack
_unpack_header = struct.Struct(">HI").unpack_from
# A frame's header and payload are joined into one bytes object below this
# size rather than handed to writev() as two parts.
_JOIN_MAX = 2048
_scan_batch = codec.scan_batch
# The empty batch, shared by every idle Pipe: only ever replaced, never mutated.
_NONE: list[int] = []

Payload = bytes | bytearray
FrameCallback = Callable[[int, Payload], Any]


@dataclass(frozen=True)
class PipeStatistics:
    frames_in: int
    frames_out: int
    payload_in: int  # payload bytes delivered
    payload_out: int  # payload bytes queued
    frames_ready: int  # complete frames taken in, not yet delivered


class Pipe:
    """Framed messages over a Conn (a FrameEndpoint).

    on_frame(chan, payload) receives every frame, fairly scheduled by the
    Loop. Without on_frame the Pipe is in pull mode: read_frame() returns the
    next frame, and on_readable(pipe) (if set) says when one is complete.
    on_error(exc) receives ProtocolError/TruncatedFrameError; on_close(exc)
    is the Conn's close callback (exactly once). `batch` bounds how many
    frames one scan takes in.
    """

    __slots__ = (
        "conn", "loop", "_w", "_on_frame", "on_error", "on_close", "on_readable",
        "max_len", "batch", "_fast_max",
        "_data", "_chans", "_starts", "_ends", "_pos", "_gate",
        "_large", "_large_pending", "_large_at", "_error", "_queued", "_stopped", "_fresh",
        "frames_in", "frames_out", "payload_in", "payload_out", "__weakref__",
    )  # fmt: skip

    def __init__(
        self,
        conn: Conn,
        on_frame: FrameCallback | None = None,
        *,
        on_error: Callable[[BaseException], Any] | None = None,
        on_close: Callable[[BaseException | None], Any] | None = None,
        on_readable: Callable[[Pipe], Any] | None = None,
        max_len: int = DEFAULT_MAX_LEN,
        batch: int = 4096,
    ):
        if not 1 <= max_len <= 0xFFFFFFFF:
            raise ValueError(f"max_len must be in 1..{0xFFFFFFFF}, got {max_len}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.conn = conn
        self.loop = conn.loop
        self._w = conn.write_buffer
        self._on_frame = on_frame
        self.on_error = on_error
        self.on_close = on_close
        self.on_readable = on_readable
        self.max_len = max_len
        self.batch = batch
        self._fast_max = min(max_len, LARGE_WRITE - 1)
        # The batch taken in: a bytes copy of back-to-back frames, their
        # channels and payload offsets in it, and the next to deliver.
        self._data = b""
        self._chans: list[int] = _NONE
        self._starts: list[int] = _NONE
        self._ends: list[int] = _NONE
        self._pos = 0
        self._gate: list[int] | None = None  # the run being delivered
        self._large: tuple[int, bytearray] | None = None  # a large frame, received
        self._large_pending = False  # a large frame's payload is being received
        self._large_at = (-1, 0)  # (channel, stream offset) of that frame
        self._error: BaseException | None = None  # to report after the frames before it
        self._queued = False  # on the loop's ready-source list
        self._stopped = not conn.reading  # the Conn's reading is paused or over
        self._fresh = False  # the Conn got bytes since the last scan
        self.frames_in = 0
        self.frames_out = 0
        self.payload_in = 0
        self.payload_out = 0
        # Frames below LARGE_PAYLOAD are assembled in the Conn's buffer, so
        # reading must not stop before one fits; larger ones go direct.
        if conn.read_limit < HEADER_SIZE + LARGE_PAYLOAD:
            conn.read_limit = HEADER_SIZE + LARGE_PAYLOAD
        conn.on_data = self._on_data
        conn.on_eof = self._on_eof
        conn.on_close = self._on_conn_close
        # The Conn fills up while a batch waits to be delivered: that is
        # back-pressure, not a stalled reader.
        conn.on_read_limit = _ignore
        conn.on_stop_reading = self._on_stop
        conn.on_resume_reading = self._on_resume
        if conn.read_buffered:
            self._on_data(conn)

    @property
    def on_frame(self) -> FrameCallback | None:
        """The frame callback; None means pull mode (read_frame)."""
        return self._on_frame

    @on_frame.setter
    def on_frame(self, fn: FrameCallback | None) -> None:
        self._stop_delivery()  # a run in progress ends with the old callback
        self._on_frame = fn
        # Frames that arrived while nobody listened must not wait for more
        # bytes to come: queue them now.
        if fn is not None and not self._queued and not self.conn.closed:
            if self.frames_ready or self._take() or self._error is not None:
                self._ready()

    # -- writing --------------------------------------------------------------

    def write_frame(self, chan: int, data: Buffer, *more: Buffer) -> None:
        """Queue one frame; never blocks. The payload is `data` followed by
        any further parts in `more`, joined on the wire under one header with
        no concatenation here (a prefix such as a request id costs no copy of
        the payload). ValueError for a channel outside 0..65535, an empty
        payload or one over max_len, TypeError for a part that is not
        bytes-like, both before anything is written. Conn errors
        (ConnClosedError, BufferFullError) pass through."""
        if type(data) is bytes:
            n = len(data)
            if more:
                # Small bytes parts (a kind byte and id, then a payload) take
                # the same path as one payload.
                for part in more:
                    if type(part) is not bytes:
                        n = -1
                        break
                    n += len(part)
            if 0 < n <= self._fast_max:
                try:
                    header = _pack_header(chan, n)
                except struct.error:
                    raise self._bad_frame(chan, n) from None
                w = self._w
                tail = w.tail
                size = w.size + HEADER_SIZE + n
                if tail is not None and size <= w.limit:
                    # Fast path (see WriteBuffer): header and payload appended
                    # to the Conn's open tail, with no call and no new object.
                    tail += header
                    tail += data
                    if more:
                        for part in more:
                            tail += part
                    w.size = size
                elif n <= _JOIN_MAX:
                    # The first frame of a turn (it opens the tail), or past
                    # the watermark: one small join, one Conn call.
                    self.conn.write(b"".join((header, data, *more)) if more else header + data)
                else:
                    self.conn.writev((header, data, *more))
                self.frames_out += 1
                self.payload_out += n
                return
        bufs = [as_buffer(data)]
        for part in more:
            bufs.append(as_buffer(part))
        n = 0
        for b in bufs:
            n += len(b)
        if not 0 < n <= self.max_len or type(chan) is not int or not 0 <= chan <= 0xFFFF:
            raise self._bad_frame(chan, n)
        # One writev: the frame is queued whole or not at all, and no
        # watermark callback can run between its header and its payload.
        bufs.insert(0, _pack_header(chan, n))
        self.conn.writev(bufs)
        self.frames_out += 1
        self.payload_out += n

    def write_frames(self, frames: Iterable[tuple[int, Buffer]]) -> None:
        """Queue many frames in one call. Every frame is validated before any
        is written, so a bad one leaves the wire untouched."""
        parts: list[Buffer] = []
        count = total = 0
        max_len = self.max_len
        for chan, data in frames:
            data = as_buffer(data)
            n = len(data)
            if not 0 < n <= max_len or type(chan) is not int or not 0 <= chan <= 0xFFFF:
                raise self._bad_frame(chan, n)
            parts.append(_pack_header(chan, n))
            parts.append(data)
            count += 1
            total += n
        if not parts:
            return
        self.conn.writev(parts)  # all frames or none
        self.frames_out += count
        self.payload_out += total

    def _bad_frame(self, chan: Any, n: int) -> ValueError:
        if type(chan) is not int:
            return ValueError(f"channel must be an int in 0..65535, got {chan!r}")
        if not 0 <= chan <= 0xFFFF:
            return ValueError(f"channel {chan} is outside 0..65535")
        if n == 0:
            return ValueError(f"empty payload on channel {chan}: a frame must carry >= 1 byte")
        return ValueError(f"payload of {n} bytes on channel {chan} exceeds max_len {self.max_len}")

    # -- the coroutine layer's entry points (evloop/streams.py) -------------

    def recv(self) -> Coroutine[Any, Any, tuple[int, Payload]]:
        """`chan, payload = await pipe.recv()` in an evloop coroutine: the
        next frame (EndOfChannel once the Pipe closed). While frames go to
        recv(), on_frame belongs to the stream; see docs/coroutines.md."""
        from .streams import recv  # the layer above: imported when first used

        return recv(self)

    def send(self, chan: int, data: Buffer, *more: Buffer) -> Coroutine[Any, Any, None]:
        """`await pipe.send(chan, data)`: write_frame(), after waiting while
        the Pipe is above its high watermark."""
        from .streams import send

        return send(self, chan, data, *more)

    @property
    def writable(self) -> bool:
        """False while the Conn's write buffer is past its high watermark."""
        return self.conn.writable

    def when_writable(self, fn: Callable[[], Any]) -> Handle:
        """Conn.when_writable: fn() once, when writes are welcome again (or
        the Pipe closed)."""
        return self.conn.when_writable(fn)

    def flush(self) -> None:
        """Conn.flush: queued frames go to the kernel now."""
        self.conn.flush()

    # -- reading --------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop delivering frames and stop reading (frames wait in the
        kernel, which stops the peer when it is full) until resume."""
        self.conn.pause_reading()

    def resume_reading(self) -> None:
        self.conn.resume_reading()

    def _on_stop(self) -> None:
        self._stopped = True
        self._stop_delivery()

    def _on_resume(self) -> None:
        self._stopped = False
        if self.frames_ready and self._on_frame is not None and not self._queued:
            self._ready()

    def read_frame(self) -> tuple[int, Payload] | None:
        """Pull mode: the next complete frame, or None if none is buffered.
        A protocol error is raised here (and the Conn aborted). RuntimeError
        while on_frame is set: a Pipe in push mode hands every frame to
        on_frame, and a pull from inside it would take frames out from
        under the delivery in progress."""
        if self._on_frame is not None:
            raise RuntimeError(
                "read_frame() on a Pipe with on_frame set: push mode delivers every frame"
                " to on_frame; set on_frame = None for pull mode"
            )
        frame = self._pop()
        if frame is None and self._take():
            frame = self._pop()
        if frame is None:
            if self._error is not None:
                exc, self._error = self._error, None
                self._fail(exc, notify=False)
                raise exc
            if self.conn.at_eof:
                self._finish_eof()
        return frame

    @property
    def frames_ready(self) -> int:
        """Complete frames taken in and not delivered yet."""
        return len(self._chans) - self._pos + (self._large is not None)

    def _pop(self) -> tuple[int, Payload] | None:
        large = self._large
        if large is not None:
            self._large = None
            self.frames_in += 1
            self.payload_in += len(large[1])
            return large
        i = self._pos
        if i == len(self._chans):
            return None
        chan = self._chans[i]
        s = self._starts[i]
        e = self._ends[i]
        payload = self._data[s:e]
        self._advance(i, 1, e)
        return chan, payload

    def _advance(self, pos: int, n: int, end: int) -> None:
        """n frames from pos on were handed out, the last ending at `end`."""
        self.frames_in += n
        # They lie back to back: the payload bytes are the span less headers.
        self.payload_in += end - self._starts[pos] + HEADER_SIZE - HEADER_SIZE * n
        pos += n
        if pos == len(self._chans):
            self._data = b""
            self._chans = self._starts = self._ends = _NONE
            self._pos = 0
            self.conn.hold_reading(False)
        else:
            self._pos = pos

    def _take(self) -> bool:
        """Take the complete frames at the front of the Conn's buffer in as
        one batch (or one large frame). True if there is something to deliver
        (or an error to report). Called only when the last batch is done."""
        if self._pos < len(self._chans):
            return True  # the batch in hand comes first
        if self._large_pending or self._large is not None or self._error is not None:
            return False
        self._fresh = False
        conn = self.conn
        buf, start, end = conn.read_buffer()  # empty once the Conn is closed
        if end - start < HEADER_SIZE:
            return False
        chans, starts, ends, pos, need, stop = _scan_batch(
            buf, start, end, self.max_len, LARGE_PAYLOAD, self.batch
        )
        if chans:
            self._data = conn.take(0, pos - start)
            self._chans, self._starts, self._ends, self._pos = chans, starts, ends, 0
            # Stopped by the batch size (not by the end of the complete
            # frames): the next scan may find more without new bytes.
            self._fresh = stop != STOP_END
            return True
        if stop == STOP_LARGE:
            chan, n = codec.decode_header(buf, start)
            if end - start >= need:
                # Already buffered whole (a read brought it in with others).
                payload = bytearray(conn.read()[HEADER_SIZE:need])
                conn.consume(need)
                self._large = (chan, payload)
                self._fresh = True  # what follows it may be complete too
                return True
            self._start_large(chan, n)
            return False
        if stop == STOP_BAD:
            chan, length = codec.decode_header(buf, start)
            offset = conn.bytes_in - (end - start)
            self._error = ProtocolError(
                f"bad frame length {length} on channel {chan} at stream offset {offset}"
                f" (allowed 1..{self.max_len})",
                channel=chan,
                length=length,
                offset=offset,
            )
            # Nothing after a corrupt header can be trusted: no further batch
            # is taken (see above), so the Conn stops reading at read_limit
            # if the frames before it are slow to go.
            return True
        return False

    def _start_large(self, chan: int, n: int) -> None:
        target = bytearray(n)
        conn = self.conn
        # Where this frame began in the stream, for a TruncatedFrameError:
        # its header is consumed now, before its payload arrives.
        self._large_at = (chan, conn.bytes_in - conn.read_buffered)
        conn.consume(HEADER_SIZE)
        self._large_pending = True
        conn.read_into(memoryview(target), lambda: self._large_done(chan, target))

    def _large_done(self, chan: int, target: bytearray) -> None:
        self._large_pending = False
        self._large = (chan, target)
        self._ready()

    def _on_data(self, conn: Conn) -> None:
        self._fresh = True
        if self._queued or self._large_pending:
            return
        if self._pos < len(self._chans) or self._large is not None or self._error is not None:
            self._ready()  # not queued: paused, or in pull mode (a reminder)
            return
        cb = self._on_frame
        if cb is not None and not self._stopped:
            buf, start, end = conn.read_buffer()
            avail = end - start
            if avail > HEADER_SIZE:
                chan, n = _unpack_header(buf, start)
                if n == avail - HEADER_SIZE and n < LARGE_PAYLOAD and n <= self.max_len:
                    # Exactly one frame (every request/response hop): straight
                    # from the Conn's buffer to on_frame, no batch at all.
                    payload = conn.take(HEADER_SIZE, n)
                    self._fresh = False
                    self.frames_in += 1
                    self.payload_in += n
                    try:
                        cb(chan, payload)
                    except Exception as exc:
                        self.loop.call_exception_handler(exc, cb)
                    return
        if not self._take():
            return
        if self._on_frame is None or self._stopped:
            self._ready()
            return
        # Deliver the first run now, in the fd callback that brought it (one
        # quantum per readiness event); the Loop's fair stage serves the rest.
        loop = self.loop
        q = loop.quantum
        if q > loop.budget:
            q = loop.budget
        k = len(self._chans)
        if k:
            # Size the next reads to about two quanta of frames like these:
            # larger, and a backlog waits for the fair stage after the cache
            # has forgotten it; smaller, and reads cost more than frames.
            want = 2 * q * len(self._data) // k
            chunk = conn.read_chunk
            if want > 2 * chunk or 2 * want < chunk:
                conn.read_chunk = want
        if self._pos < len(self._chans):
            self._deliver(q)
        if self._pos < len(self._chans):
            # A backlog: the rest of the stream waits in the kernel until the
            # fair stage has delivered it (see _advance).
            conn.hold_reading(True)
            self._ready()
        elif self._large is not None or self._fresh:
            self._ready()
        else:
            self._after_delivery()

    def _ready(self) -> None:
        if self._on_frame is not None:
            if not self._queued and not self._stopped:
                self._queued = True
                self.loop.add_ready_source(self)
        elif self._error is not None and not self.frames_ready:
            exc, self._error = self._error, None
            self._fail(exc)
        elif self.on_readable is not None:
            self.on_readable(self)

    def serve(self, limit: int) -> tuple[int, bool]:
        """Deliver up to `limit` frames to on_frame (called by the Loop's fair
        stage). Returns (delivered, whether complete frames remain)."""
        done = 0
        try:
            while done < limit:
                if self._on_frame is None or self._stopped:
                    break
                if self._pos < len(self._chans):
                    done += self._deliver(limit - done)
                elif self._large is not None:
                    chan, data = self._large
                    self._large = None
                    self.frames_in += 1
                    self.payload_in += len(data)
                    done += 1
                    cb = self._on_frame
                    try:
                        cb(chan, data)
                    except Exception as exc:
                        self.loop.call_exception_handler(exc, cb)
                elif not self._fresh or not self._take():
                    break
        except BaseException:
            self._queued = False  # the Loop drops a source that raised
            raise
        if done == limit and self._on_frame is not None and not self._stopped:
            # The budget ran out: more is known, or may be one scan away.
            if self._pos < len(self._chans) or self._large is not None:
                return done, True
            if self._fresh and not self._large_pending:
                return done, True
        self._queued = False
        self._after_delivery()
        return done, False

    def _after_delivery(self) -> None:
        # Everything taken in is out: report an error found after it, or
        # finish an EOF that was waiting for it.
        if self._pos == len(self._chans) and self._large is None and not self._stopped:
            if self._error is not None:
                error, self._error = self._error, None
                self._fail(error)
            elif self._on_frame is not None and self.conn.at_eof:
                self._finish_eof()

    def _deliver(self, limit: int) -> int:
        """The per-frame hot path: hand out up to `limit` frames of the batch
        (see the module header). Returns how many were handed out."""
        pos = self._pos
        k = len(self._chans) - pos
        if k > limit:
            k = limit
        if k == 1:
            # One frame (every request/response hop): no iterator machinery.
            e = self._ends[pos]
            chan = self._chans[pos]
            payload = self._data[self._starts[pos] : e]
            cb1 = self._on_frame
            assert cb1 is not None
            self._advance(pos, 1, e)  # counted before the call: never twice
            try:
                cb1(chan, payload)
            except Exception as exc:
                self.loop.call_exception_handler(exc, cb1)
            return 1
        gate = self._chans[pos : pos + k]  # a copy: _stop_delivery() empties it
        starts: Any = iter(self._starts)
        ends: Any = iter(self._ends)
        if pos:
            # Start the offset iterators at pos without copying the lists.
            starts.__setstate__(pos)
            ends.__setstate__(pos)
        self._gate = gate
        data = self._data
        cb = self._on_frame
        assert cb is not None
        handler = self.loop.call_exception_handler
        frames = zip(gate, starts, ends)  # noqa: B905 - the gate is the shortest, on purpose
        e = -1
        try:
            while True:
                try:
                    for c, s, e in frames:
                        cb(c, data[s:e])
                    break
                except Exception as exc:
                    handler(exc, cb)
        finally:
            self._gate = None
            if e < 0:
                n = 0
            elif e == self._ends[pos + k - 1]:
                n = k
            else:  # stopped early: frames are counted by the last one out
                n = bisect_left(self._ends, e, pos, pos + k) + 1 - pos
            if n:
                self._advance(pos, n, e)
        return n

    def _stop_delivery(self) -> None:
        gate = self._gate
        if gate is not None:
            gate.clear()

    # -- end of stream and errors ---------------------------------------------

    def _on_eof(self, conn: Conn) -> bool:
        if self._queued or self.frames_ready or self._take():
            if self._on_frame is not None and not self._queued:
                self._ready()
            return True  # stay open until the buffered frames are delivered
        if self._error is not None:
            self._ready()
            return True
        self._finish_eof()
        return True

    def _finish_eof(self) -> None:
        conn = self.conn
        if conn.closing:
            return
        left = conn.read_buffered
        if left or self._large_pending:
            if self._large_pending:
                chan, offset = self._large_at
                where = "payload"
            elif left >= HEADER_SIZE:
                buf, start, _ = conn.read_buffer()
                chan, offset, where = (
                    codec.decode_header(buf, start)[0],
                    conn.bytes_in - left,
                    "payload",
                )
            else:
                chan, offset, where = -1, conn.bytes_in - left, "header"
            length = conn.bytes_in - offset  # every byte of the frame that arrived
            self._fail(
                TruncatedFrameError(
                    f"stream ended inside a frame {where}: {length} bytes of an incomplete"
                    f" frame at offset {offset}",
                    channel=chan,
                    length=length,
                    offset=offset,
                )
            )
            return
        conn.close()

    def _fail(self, exc: BaseException, notify: bool = True) -> None:
        if notify and self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception as inner:
                self.loop.call_exception_handler(inner, self.on_error)
        elif notify:
            self.loop.call_exception_handler(exc, self)
        self.conn.abort(exc)

    def _on_conn_close(self, exc: BaseException | None) -> None:
        self._data = b""
        self._chans = self._starts = self._ends = _NONE
        self._pos = 0
        self._large = None
        cb = self.on_close
        # Closed for good: forget the callbacks (see Conn._finish_close).
        self._on_frame = self.on_error = self.on_readable = self.on_close = None
        if cb is not None:
            cb(exc)

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Flush queued frames, then close the Conn."""
        self.conn.close()

    def abort(self) -> None:
        self.conn.abort()

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def __enter__(self) -> Pipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def statistics(self) -> PipeStatistics:
        return PipeStatistics(
            self.frames_in, self.frames_out, self.payload_in, self.payload_out, self.frames_ready
        )

    def __repr__(self) -> str:
        return f"<Pipe {self.conn!r} in={self.frames_in} out={self.frames_out}>"


def _ignore(conn: Conn) -> None:
    return None
