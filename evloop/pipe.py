# evloop/pipe.py
#
# Frames on a Conn: chan (u16 BE) | length (u32 BE) | payload, byte for byte
# the seed design's format. The Pipe owns no fd; the Conn does.
#
# Reading. When bytes arrive the Pipe scans the Conn's read buffer in place
# (codec.scan_frames: C, or its pure-Python twin) for up to `batch` complete
# frames, remembers their (channel, length) and puts itself on the Loop's
# ready-source list. The Loop then serves ready Pipes round-robin, one frame
# per Pipe per round, up to its per-turn budget: a flooding peer never gets
# more than one frame ahead of any other ready Pipe. Invariant: a Pipe that
# still holds a complete frame after its turn stays on the ready list, since
# epoll cannot see bytes that were already read out of the kernel.
#
# The per-frame path (_deliver_run) reads the Conn's buffer fields directly
# and consumes a run of frames in one step: the two classes are a pair.
#
# Payload lifetime: every payload handed out is an independent object the
# receiver owns: `bytes` below 64 KiB, `bytearray` at 64 KiB and above. A
# large frame is received straight into its own bytearray with recv_into
# (Conn.read_into), never assembled by concatenation.
#
# Errors. A header with length 0 or above `max_len` is a ProtocolError naming
# the channel, length and stream offset. Frames before it are still delivered;
# then on_error(exc) is called and the Conn is aborted. A stream that ends
# inside a frame is a TruncatedFrameError, reported the same way.
from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import codec
from .conn import LARGE_WRITE, Buffer, Conn
from .errors import ProtocolError, TruncatedFrameError

__all__ = ["Pipe", "PipeStatistics", "HEADER_SIZE", "DEFAULT_MAX_LEN", "LARGE_PAYLOAD"]

HEADER_SIZE = 6
DEFAULT_MAX_LEN = 64 << 20
# Payloads at least this large are received straight into their own buffer.
LARGE_PAYLOAD = 64 * 1024
_pack_header = struct.Struct(">HI").pack


def _bytes_like(data: Any) -> Buffer:
    """bytes, bytearray or memoryview as they are; any other buffer as a
    memoryview; anything else (str, int...) is a TypeError, raised before a
    header could reach the wire without its payload."""
    if type(data) is bytes or type(data) is bytearray or type(data) is memoryview:
        return data
    try:
        return memoryview(data).cast("B")
    except TypeError:
        raise TypeError(
            f"a frame payload must be bytes-like (bytes, bytearray, memoryview), "
            f"not {type(data).__name__}"
        ) from None


@dataclass(frozen=True)
class PipeStatistics:
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    queued: int


class Pipe:
    """Framed messages over a Conn.

    on_frame(chan, payload) receives every frame, fairly scheduled by the
    Loop. Without on_frame the Pipe is in pull mode: read_frame() returns the
    next frame, and on_readable(pipe) (if set) says when one is complete.
    on_error(exc) receives ProtocolError/TruncatedFrameError; on_close(exc)
    is the Conn's close callback (exactly once).
    """

    def __init__(
        self,
        conn: Conn,
        on_frame: Callable[[int, bytes | bytearray], Any] | None = None,
        *,
        on_error: Callable[[BaseException], Any] | None = None,
        on_close: Callable[[BaseException | None], Any] | None = None,
        on_readable: Callable[[Pipe], Any] | None = None,
        max_len: int = DEFAULT_MAX_LEN,
        batch: int = 64,
    ):
        if not 1 <= max_len <= 0xFFFFFFFF:
            raise ValueError(f"max_len must be in 1..{0xFFFFFFFF}, got {max_len}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.conn = conn
        self.loop = conn.loop
        self._on_frame = on_frame
        self.on_error = on_error
        self.on_close = on_close
        self.on_readable = on_readable
        self.max_len = max_len
        self.batch = batch
        # Complete frames found by the last scan, sitting at the front of the
        # Conn's buffer: parallel lists and a cursor.
        self._chans: list[int] = []
        self._offs: list[int] = []
        self._lens: list[int] = []
        self._idx = 0
        self._large: tuple[int, bytearray] | None = None  # received directly
        self._large_pending = False
        self._large_at = (-1, 0)  # (channel, stream offset) of the pending large frame
        self._error: BaseException | None = None  # to report after the frames before it
        self._queued = False
        self.frames_in = 0
        self.frames_out = 0
        self.payload_in = 0
        self.payload_out = 0
        # Frames below LARGE_PAYLOAD are assembled in the Conn's buffer, so
        # reading must not pause before one fits; larger ones go direct.
        if conn.read_limit < HEADER_SIZE + LARGE_PAYLOAD:
            conn.read_limit = HEADER_SIZE + LARGE_PAYLOAD
        conn.on_data = self._on_data
        conn.on_eof = self._on_eof
        conn.on_close = self._on_conn_close
        if conn.read_buffered:
            self._on_data(conn)

    @property
    def on_frame(self) -> Callable[[int, bytes | bytearray], Any] | None:
        """The frame callback; None means pull mode (read_frame)."""
        return self._on_frame

    @on_frame.setter
    def on_frame(self, fn: Callable[[int, bytes | bytearray], Any] | None) -> None:
        self._on_frame = fn
        # Frames that arrived while nobody listened must not wait for more
        # bytes to come: queue them now.
        if fn is not None and not self._queued and not self.conn.closed:
            if self.frames_ready or self._scan() or self._error is not None:
                self._ready()

    # -- writing --------------------------------------------------------------

    def write_frame(self, chan: int, data: Buffer) -> None:
        """Queue one frame; never blocks. ValueError for a channel outside
        0..65535, an empty payload or one over max_len, before anything is
        written. Conn errors (ConnClosedError, BufferFullError) pass through."""
        conn = self.conn
        tail = conn._wtail
        if tail is not None and type(data) is bytes:
            # Fast path (see Conn.write): header and payload appended to the
            # Conn's open tail, with no intermediate object.
            n = len(data)
            size = conn._wsize + HEADER_SIZE + n
            if (
                0 < n < LARGE_WRITE
                and n <= self.max_len
                and 0 <= chan <= 0xFFFF
                and size <= (conn.write_cap if conn._write_paused else conn.high_water)
            ):
                tail += _pack_header(chan, n)
                tail += data
                conn._wsize = size
                conn.writes += 1
                self.frames_out += 1
                self.payload_out += n
                return
        data = _bytes_like(data)
        n = data.nbytes if type(data) is memoryview else len(data)
        if not 0 < n <= self.max_len or not 0 <= chan <= 0xFFFF:
            raise self._bad_frame(chan, n)
        # One writev: the frame is queued whole or not at all, and no
        # watermark callback can run between its header and its payload.
        conn.writev((_pack_header(chan, n), data))
        self.frames_out += 1
        self.payload_out += n

    def write_frames(self, frames: Iterable[tuple[int, Buffer]]) -> None:
        """Queue many frames in one call. Every frame is validated before any
        is written, so a bad one leaves the wire untouched."""
        parts: list[Buffer] = []
        count = total = 0
        max_len = self.max_len
        for chan, data in frames:
            data = _bytes_like(data)
            n = data.nbytes if type(data) is memoryview else len(data)
            if not 0 < n <= max_len or not 0 <= chan <= 0xFFFF:
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

    def _bad_frame(self, chan: int, n: int) -> ValueError:
        if type(chan) is not int:
            return ValueError(f"channel must be an int in 0..65535, got {chan!r}")
        if not 0 <= chan <= 0xFFFF:
            return ValueError(f"channel {chan} is outside 0..65535")
        if n == 0:
            return ValueError(f"empty payload on channel {chan}: a frame must carry >= 1 byte")
        return ValueError(f"payload of {n} bytes on channel {chan} exceeds max_len {self.max_len}")

    # -- reading --------------------------------------------------------------

    def read_frame(self) -> tuple[int, bytes | bytearray] | None:
        """Pull mode: the next complete frame, or None if none is buffered.
        A protocol error is raised here (and the Conn aborted)."""
        if self._idx == len(self._lens) and self._large is None:
            self._scan()
        large = self._large is not None
        frame = self._pop()
        if large:
            self._scan()  # what follows a large frame was held back for it
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
        """Complete frames known to be buffered (found by the last scan)."""
        return len(self._lens) - self._idx + (self._large is not None)

    def _pop(self) -> tuple[int, bytes | bytearray] | None:
        large = self._large
        if large is not None:
            self._large = None
            self.frames_in += 1
            self.payload_in += len(large[1])
            return large
        i = self._idx
        if i == len(self._lens):
            return None
        self._idx = i + 1
        n = self._lens[i]
        chan = self._chans[i]
        conn = self.conn
        if n < LARGE_PAYLOAD:
            payload: bytes | bytearray = conn.take(HEADER_SIZE, n)
        else:
            buf, start, _ = conn.read_buffer()
            payload = buf[start + HEADER_SIZE : start + HEADER_SIZE + n]
            conn.consume(HEADER_SIZE + n)
        self.frames_in += 1
        self.payload_in += n
        return chan, payload

    def _scan(self) -> bool:
        """Find complete frames at the front of the buffer. True if any."""
        conn = self.conn
        start = conn._rstart
        end = conn._rend
        if (
            end - start < HEADER_SIZE
            or self._large_pending
            or self._large is not None  # frames after it wait until it is taken
            or self._error is not None
        ):
            # Nothing to find (the usual case after a run): no codec call.
            if self._lens:
                self._chans, self._offs, self._lens, self._idx = [], [], [], 0
            return False
        if conn._closed:
            return False
        buf = conn._rbuf
        chans, offs, lens, pos, need = codec.scan_frames(buf, start, end, self.batch, self.max_len)
        self._chans, self._offs, self._lens, self._idx = chans, offs, lens, 0
        if need < 0:
            chan, length = codec.decode_header(buf, pos)
            offset = conn.bytes_in - (end - pos)
            self._error = ProtocolError(
                f"bad frame length {length} on channel {chan} at stream offset {offset}"
                f" (allowed 1..{self.max_len})",
                channel=chan,
                length=length,
                offset=offset,
            )
            conn.pause_reading()  # nothing after a corrupt header can be trusted
        elif not chans and need >= HEADER_SIZE + LARGE_PAYLOAD:
            self._start_large(buf, start)
        return bool(chans)

    def _start_large(self, buf: bytearray, start: int) -> None:
        chan, n = codec.decode_header(buf, start)
        target = bytearray(n)
        conn = self.conn
        # Where this frame began in the stream, for a TruncatedFrameError:
        # its header is consumed now, before its payload arrives.
        self._large_at = (chan, conn.bytes_in - (conn.read_buffered))
        self.conn.consume(HEADER_SIZE)
        self._large_pending = True
        self.conn.read_into(memoryview(target), lambda: self._large_done(chan, target))

    def _large_done(self, chan: int, target: bytearray) -> None:
        self._large_pending = False
        self._large = (chan, target)
        self._ready()

    def _on_data(self, conn: Conn) -> None:
        if self._queued or self._large_pending:
            return
        if self._idx < len(self._lens) or self._scan() or self._error is not None:
            self._ready()

    def _ready(self) -> None:
        if self._on_frame is not None:
            if not self._queued:
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
        try:
            return self._serve(limit)
        except Exception:
            self._queued = False  # the Loop drops a source that raised
            raise

    def _serve(self, limit: int) -> tuple[int, bool]:
        conn = self.conn
        done = 0
        more = True
        while done < limit:
            if self._on_frame is None or conn._closing:
                more = False
                break
            i = self._idx
            run = len(self._lens) - i
            if run > 0 and self._large is None:
                done += self._deliver_run(i, run if run < limit - done else limit - done)
            elif self._large is not None:
                chan, data = self._large
                self._large = None
                self.frames_in += 1
                self.payload_in += len(data)
                done += 1
                self._deliver(chan, data)
            elif not self._scan():
                more = False
                break
        if more:
            # The budget ran out: is there more? (A scan made here is reused.)
            more = (
                self._on_frame is not None
                and not conn._closing
                and (self._idx < len(self._lens) or self._large is not None or self._scan())
            )
        if more:
            return done, True
        self._queued = False
        if self._error is not None:
            error, self._error = self._error, None
            self._fail(error)
        elif self.conn.at_eof:
            self._finish_eof()
        return done, False

    def _deliver(self, chan: int, payload: bytes | bytearray) -> None:
        cb = self._on_frame
        assert cb is not None
        try:
            cb(chan, payload)
        except Exception as exc:
            self.loop.call_exception_handler(exc, cb)

    def _deliver_run(self, i: int, k: int) -> int:
        """The per-frame hot path: hand out frames i..i+k-1 of the last scan
        straight from the Conn's buffer, then consume them in one step. The
        buffer cannot move during this call (only reads, in fd callbacks,
        compact or replace it), and frames sit back to back from the
        Conn's read position, so the scan's offsets need one shift."""
        conn = self.conn
        view = conn._rview
        chans, offs, lens = self._chans, self._offs, self._lens
        base = offs[i] - HEADER_SIZE  # where frame i's header was at scan time
        shift = conn._rstart - base
        j = i
        stop = i + k
        cb = self._on_frame
        handler = self.loop.call_exception_handler
        payload_bytes = 0
        try:
            while j < stop:
                o = offs[j] + shift
                n = lens[j]
                j += 1
                payload_bytes += n
                try:
                    if n < LARGE_PAYLOAD:
                        cb(chans[j - 1], view[o : o + n].tobytes())  # type: ignore[misc]
                    else:
                        cb(chans[j - 1], bytearray(view[o : o + n]))  # type: ignore[misc]
                except Exception as exc:
                    handler(exc, cb)
                if conn._closing or self._on_frame is not cb:
                    break
        finally:
            # Consume exactly what was handed out, even if a callback raised
            # KeyboardInterrupt: nothing is delivered twice.
            delivered = j - i
            self._idx = j
            self.frames_in += delivered
            self.payload_in += payload_bytes
            if not conn._closed:
                conn.consume(offs[j - 1] + lens[j - 1] - base)
        return delivered

    # -- end of stream and errors ---------------------------------------------

    def _on_eof(self, conn: Conn) -> bool:
        if self._queued or self.frames_ready or self._scan():
            return True  # stay open until the buffered frames are delivered
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
        self._chans, self._offs, self._lens, self._idx = [], [], [], 0
        if self.on_close is not None:
            self.on_close(exc)

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Flush queued frames, then close the Conn."""
        self.conn.close()

    def abort(self) -> None:
        self.conn.abort()

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def statistics(self) -> PipeStatistics:
        return PipeStatistics(
            self.frames_in, self.frames_out, self.payload_in, self.payload_out, self.frames_ready
        )

    def __repr__(self) -> str:
        return f"<Pipe {self.conn!r} in={self.frames_in} out={self.frames_out}>"
