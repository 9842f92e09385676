# evloop/conn.py
#
# Conn: one non-blocking stream fd (a socket, a socketpair end, or a pipe fd)
# with a read buffer and a write buffer, driven by the Loop.
#
# Read side. Bytes are received with recv_into into a bytearray; `read()`
# shows the unconsumed bytes as a memoryview (no copy) and `consume(n)` drops
# them. An idle Conn holds no read buffer at all: a read borrows a buffer of
# `read_size` bytes from a process-wide pool and gives it back once the
# consumer has taken everything (see the pool below), receiving at most
# `read_chunk` bytes per read, which a consumer may tune (the Pipe aims at
# a read of about two quanta of frames). A buffer is never resized in place
# (a view may be alive); it is compacted by memmove or replaced. While
# `read_limit` bytes or more are unconsumed the Conn stops reading, so a
# fast producer cannot grow a slow consumer's memory; a consumer that wants
# to hold input back calls pause_reading(). One that lets the buffer reach
# read_limit without consuming anything is stalled (a parser waiting for a
# message larger than the limit): on_read_limit(conn) is called if set, else
# the Conn fails with ReadLimitError. `read_into(view,
# cb)` lets a consumer (the Pipe, for large frames) have the kernel copy
# straight into a buffer of its own.
#
# Write side. `write()` never blocks and never makes a syscall: small writes
# are appended to an open bytearray (the tail), immutable large ones
# (>= 64 KiB) are queued by reference and mutable large ones copied once; the
# first write of a turn asks the Loop to flush this Conn before it next
# polls, so everything written during a turn leaves in one send()/sendmsg()
# gather (flush() sends at once). EPOLLOUT is held only while bytes are still
# waiting for the kernel. Watermarks tell a producer to pause; a hard cap
# refuses a write outright rather than grow without bound.
#
# The write queue is a WriteBuffer object that a framing layer may append to
# directly (the Pipe's write_frame fast path does, so a frame costs no call
# here): the contract is in WriteBuffer's docstring, and it is the only part
# of a Conn's insides anything else touches.
#
# Faults. A failed send (EPIPE, ECONNRESET) does not end the Conn: the peer
# is gone, so the write queue is dropped and later writes are discarded
# (counted in statistics().writes_dropped), but input the peer sent before it
# went keeps being delivered, to the end, before on_close reports the error.
# The same holds for a reset seen on the read side.
#
# State, as three small machines (libuv's handle flags are the model):
#   reading   wanted (_reading) | paused | at EOF (_eof) | direct (_read_target)
#   writing   open | paused (_write_paused) | failed (_write_failed) |
#             shut requested (_shut_wr_requested) -> shut (_write_shut)
#   life      open -> closing (_closing: flush, then close) -> closed (_closed)
# EPOLLIN is wanted iff open, not at EOF, and (direct read pending, or reading
# and below read_limit); EPOLLOUT iff bytes are queued and the write side is
# not shut.
#
# Invariants: the fd is set to -1 the moment it is closed; `on_close` fires
# exactly once, with None for an orderly close or the exception that ended
# the Conn, always from a fresh loop callback (never re-entrantly from inside
# write()/close()); no OSError from the socket escapes into the Loop; an
# exception raised by a user callback goes to the loop's exception handler
# and leaves the Conn open (on_data, watermark callbacks) or closing
# (on_eof); an error the Conn stores carries no traceback, so a Conn ended by
# a socket error is freed as soon as nothing refers to it (no cycle through
# the traceback's frames).
"""Conn: a non-blocking stream on a Loop, with a read buffer and a write buffer that never blocks. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import array
import errno
import os
import socket
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import (
    BufferFullError,
    ConnClosedError,
    FdPassingError,
    IdleTimeoutError,
    ReadLimitError,
)
from .loop import EVENT_ERR, EVENT_HUP, EVENT_READ, EVENT_WRITE, Handle, Loop, TimerHandle

__all__ = ["Conn", "ConnStatistics", "Buffer", "WriteBuffer", "LARGE_WRITE", "as_buffer"]

Buffer = bytes | bytearray | memoryview

# Writes at least this large are queued by reference instead of copied.
LARGE_WRITE = 64 * 1024
# sendmsg() takes at most IOV_MAX (1024 on Linux) buffers per call.
_IOV_MAX = 1024
# Room for this many fds per received message when receive_fds is on.
_MAX_FDS_PER_MSG = 64
_ANC_BUFSIZE = socket.CMSG_SPACE(_MAX_FDS_PER_MSG * array.array("i").itemsize)

# Read buffers. A read goes into a buffer of read_size bytes on loan from a
# pool shared by every Conn of the process (keyed by size, most recently
# returned first, so under load every Conn reads into the same cache-hot
# memory, as a loop-wide buffer would). Once the consumer has had its say,
# the buffer goes back if it is empty; a few leftover bytes (a frame cut by
# the read) move to a small exact-size "carry" first; only a consumer that
# leaves more than that keeps the buffer. list.pop/append are atomic, and a
# buffer is only ever used by the thread that borrowed it. A read needs at
# least _MIN_ROOM bytes of free room, else the buffer is compacted or grown.
_POOL_MAX = 8
_CARRY_MAX = 4096
# Bytes per read unless the consumer says otherwise (Conn.read_chunk).
_DEFAULT_CHUNK = 64 * 1024
_MIN_CHUNK = 4096
_MIN_ROOM = 4096
_pools: dict[int, list[tuple[bytearray, memoryview]]] = {}
_EMPTY = bytearray()
# A send failing with one of these means the peer went away; what it sent
# before may still be unread here. Any other error breaks the stream.
_PEER_GONE = frozenset((errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ESHUTDOWN))
_EMPTY_VIEW = memoryview(_EMPTY)


def _borrow(size: int) -> tuple[bytearray, memoryview]:
    pool = _pools.get(size)
    if pool:
        try:
            return pool.pop()
        except IndexError:
            pass  # another thread took the last one
    buf = bytearray(size)
    return buf, memoryview(buf)


def _give_back(buf: bytearray, view: memoryview) -> None:
    pool = _pools.get(len(buf))
    if pool is not None and len(pool) < _POOL_MAX:
        pool.append((buf, view))


def as_buffer(data: Any) -> bytes | bytearray | memoryview:
    """bytes and bytearray as they are; any other buffer as a flat
    memoryview of bytes (so len() counts bytes, not items), or as a copy of
    its bytes when it is not contiguous (a strided view); a TypeError for
    anything that is not a buffer (str, int, None...). Every write path uses
    this, so a frame's header can never be queued without its payload."""
    if type(data) is bytes or type(data) is bytearray:
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"data must be bytes-like (bytes, bytearray, memoryview), not {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        return view.tobytes()  # its bytes in logical order: one copy, now
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _bare(exc: BaseException) -> BaseException:
    # A stored error keeps no traceback: its frames would reference the Conn
    # (self) and make a cycle only a full collection frees.
    exc.__traceback__ = None
    return exc


class _FdChunk:
    """Queued bytes whose first byte carries fds as SCM_RIGHTS."""

    __slots__ = ("data", "fds")

    def __init__(self, data: bytes, fds: list[int]):
        self.data = data
        self.fds = fds

    def __len__(self) -> int:
        return len(self.data)


class WriteBuffer:
    """A Conn's outgoing bytes: `chunks` (bytearray, bytes, memoryview or fd
    chunks, oldest first) holding `size` bytes in all.

    The contract with a framing layer (Pipe.write_frame) that appends to it
    directly, without a call into the Conn:
      * while `tail` is not None it is chunks[-1], the Conn accepts writes,
        and a flush is already scheduled or EPOLLOUT armed, so bytes
        appended to it cannot be stranded;
      * such a layer may append n bytes to `tail` and add n to `size` only if
        the new size is <= `limit` (the high watermark, or the hard cap once
        the pause was announced) and n < LARGE_WRITE;
      * everything else goes through Conn.write()/writev(), which also open
        a new tail when there is none (the first write of every turn).
    """

    __slots__ = ("chunks", "tail", "size", "limit")

    def __init__(self, limit: int):
        self.chunks: list[Any] = []
        self.tail: bytearray | None = None
        self.size = 0
        self.limit = limit


@dataclass(frozen=True)
class ConnStatistics:
    bytes_in: int
    bytes_out: int
    reads: int  # recv calls that returned data
    writes: int  # write()/writev() calls (frames a Pipe appends are the Pipe's)
    sends: int  # send/sendmsg syscalls that moved data
    read_buffered: int
    write_buffered: int
    writes_dropped: int  # bytes discarded because a send had failed


class Conn:
    """A non-blocking stream on a Loop. See the module header.

    Callbacks (attributes, settable at any time, or keyword arguments):
      on_data(conn)          bytes arrived; look at conn.read(), conn.consume(n)
      on_eof(conn) -> bool   the peer shut its write side; return True to keep
                             the Conn open (half-close), else it is closed
                             after flushing. Default: close.
      on_close(exc)          the Conn is closed: exc is None for an orderly
                             close, else the error that ended it. Exactly once;
                             the Conn forgets every callback once closed.
      on_pause_writing()     the write buffer went above high_water
      on_resume_writing()    it drained to low_water or below
      on_read_limit(conn)    read_limit bytes are buffered and the last
                             on_data consumed none: reading has stopped until
                             something is consumed. Default (None): the Conn
                             fails with ReadLimitError.
      on_stop_reading()      for a consumer that delivers buffered input in a
                             loop (the Pipe): called synchronously when
                             reading stops at someone's request (pause_reading,
                             close, abort), so it can stop at once;
      on_resume_reading()    and when resume_reading() restarts it, so it can
                             go on delivering what it holds.

    `idle_timeout` (seconds, None for none): close with IdleTimeoutError when
    no byte was received or sent for that long.
    """

    __slots__ = (
        "loop", "_sock", "_fd", "_recv_into", "_receive_fds",
        "on_data", "on_close", "on_eof", "on_pause_writing", "on_resume_writing",
        "on_read_limit", "on_stop_reading", "on_resume_reading",
        "read_size", "_chunk", "read_limit", "high_water", "low_water", "write_cap",
        "_pool", "_rbuf", "_rview", "_rstart", "_rend", "_reading", "_held", "_eof", "_error",
        "_read_target", "_read_target_fill", "_read_target_cb",
        "_scan_delim", "_scanned",
        "_w", "_flush_scheduled", "_write_paused", "_write_failed", "_shut_wr_requested",
        "_write_shut", "_writable_waiters", "_close_waiters", "_fds_in", "_wfd_chunks",
        "_closing", "_closed", "_close_reason", "_events",
        "_idle", "_idle_timer", "_last_io",
        "bytes_in", "bytes_out", "reads", "writes", "sends", "writes_dropped",
        "__weakref__",
    )  # fmt: skip

    # seam: needed by evloop/tls.py. A subclass that transforms the bytes it
    # reads (TLS decrypts) replaces `self._recv_into` after __init__ with a
    # function of the same contract (fill the view, return n > 0; 0 at EOF;
    # raise BlockingIOError when nothing is ready, OSError on failure) and
    # sets this False, so read_into() does not scatter-read around it.
    _scatter_read = True

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket | int,
        *,
        on_data: Callable[[Conn], Any] | None = None,
        on_close: Callable[[BaseException | None], Any] | None = None,
        on_eof: Callable[[Conn], bool | None] | None = None,
        on_pause_writing: Callable[[], Any] | None = None,
        on_resume_writing: Callable[[], Any] | None = None,
        on_read_limit: Callable[[Conn], Any] | None = None,
        read_size: int = 256 * 1024,
        read_limit: int = 1024 * 1024,
        high_water: int = 1024 * 1024,
        low_water: int | None = None,
        write_cap: int = 128 * 1024 * 1024,
        start_reading: bool = True,
        receive_fds: bool = False,
        idle_timeout: float | None = None,
    ):
        if read_size < 1024:
            raise ValueError(f"read_size must be >= 1024, got {read_size}")
        if read_limit < 1:
            raise ValueError(f"read_limit must be >= 1, got {read_limit}")
        if low_water is None:
            low_water = high_water // 4
        if not 0 <= low_water <= high_water <= write_cap:
            raise ValueError(
                f"need 0 <= low_water ({low_water}) <= high_water ({high_water})"
                f" <= write_cap ({write_cap})"
            )
        self.loop = loop
        fileno = sock.fileno() if isinstance(sock, socket.socket) else sock
        if fileno < 0:
            raise ValueError(f"cannot make a Conn of a closed socket or fd ({fileno})")
        self._sock: socket.socket | None
        if isinstance(sock, socket.socket):
            sock.setblocking(False)
            self._sock = sock
            self._fd = fileno
            self._recv_into: Callable[[memoryview], int] = (
                self._recvmsg_into if receive_fds else sock.recv_into
            )
            self._receive_fds = receive_fds
        else:
            if receive_fds:
                raise ValueError("receive_fds needs a Unix socket, not a bare fd")
            os.set_blocking(sock, False)
            self._receive_fds = False
            self._sock = None
            self._fd = sock
            self._recv_into = self._readv_into
        self.on_data = on_data
        self.on_close = on_close
        self.on_eof = on_eof
        self.on_pause_writing = on_pause_writing
        self.on_resume_writing = on_resume_writing
        self.on_read_limit = on_read_limit
        self.on_stop_reading: Callable[[], Any] | None = None
        self.on_resume_reading: Callable[[], Any] | None = None
        self.read_size = read_size
        self._chunk = min(read_size, _DEFAULT_CHUNK)
        self.read_limit = read_limit
        self.high_water = high_water
        self.low_water = low_water
        self.write_cap = write_cap
        # Read buffer: data lives in _rbuf[_rstart:_rend]; None while idle.
        self._pool = _pools.setdefault(read_size, [])  # loaned buffers of read_size
        self._rbuf: bytearray | None = None
        self._rview: memoryview | None = None
        self._rstart = 0
        self._rend = 0
        self._reading = start_reading  # wanted by the user (pause/resume)
        self._held = False  # held back by the consumer (hold_reading)
        self._eof = False
        self._error: BaseException | None = None  # a reset or failed send, reported at close
        self._read_target: memoryview | None = None
        self._read_target_fill = 0
        self._read_target_cb: Callable[[], Any] | None = None
        # read_until(): how many unconsumed bytes are known not to hold the
        # start of _scan_delim, so a trickled line is not rescanned.
        self._scan_delim: bytes | None = None
        self._scanned = 0
        self._w = WriteBuffer(high_water)
        self._flush_scheduled = False
        self._write_paused = False
        self._write_failed = False
        self._shut_wr_requested = False
        self._write_shut = False
        self._writable_waiters: list[Handle] | None = None
        self._close_waiters: list[Callable[[], Any]] | None = None
        self._fds_in: deque[int] | None = None
        self._wfd_chunks = 0  # _FdChunk items in the write queue
        self._closing = False
        self._closed = False
        self._close_reason: BaseException | None = None
        self._events = 0
        self._idle: float | None = None
        self._idle_timer: TimerHandle | None = None
        self._last_io = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.reads = 0
        self.writes = 0
        self.sends = 0
        self.writes_dropped = 0
        self._update_events()
        loop.adopt(self)
        if idle_timeout is not None:
            self.set_idle_timeout(idle_timeout)

    # -- introspection --------------------------------------------------------

    @property
    def fd(self) -> int:
        """The fd, or -1 once closed."""
        return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def closing(self) -> bool:
        return self._closing or self._closed

    @property
    def at_eof(self) -> bool:
        return self._eof

    @property
    def reading(self) -> bool:
        """Whether reading is wanted (not paused, not closing)."""
        return self._reading and not self._closing

    @property
    def writable(self) -> bool:
        """False while the write buffer is above the high watermark (until it
        drains to the low watermark), once a send failed, and once closing."""
        return not (self._write_paused or self._write_failed or self._closing)

    @property
    def write_failed(self) -> bool:
        """A send failed: the peer is gone and writes are discarded."""
        return self._write_failed

    @property
    def write_buffered(self) -> int:
        return self._w.size

    @property
    def write_buffer(self) -> WriteBuffer:
        """The write queue, for a framing layer's fast path (see WriteBuffer)."""
        return self._w

    @property
    def read_buffered(self) -> int:
        return self._rend - self._rstart

    @property
    def socket(self) -> socket.socket | None:
        return self._sock

    def statistics(self) -> ConnStatistics:
        return ConnStatistics(
            self.bytes_in, self.bytes_out, self.reads, self.writes, self.sends,
            self._rend - self._rstart, self._w.size, self.writes_dropped,
        )  # fmt: skip

    # -- read side ------------------------------------------------------------

    def read(self) -> memoryview:
        """The unconsumed bytes, without copying. The view is valid until the
        next consume() or read_into(), and at most until the callback that
        got it returns: the buffer behind it is reused, by this Conn or
        another, so copy what you keep."""
        view = self._rview
        if view is None:
            return _EMPTY_VIEW
        return view[self._rstart : self._rend]

    def consume(self, n: int) -> None:
        """Drop the first n unconsumed bytes."""
        avail = self._rend - self._rstart
        if not 0 <= n <= avail:
            raise ValueError(f"cannot consume {n} bytes, {avail} buffered")
        self._rstart += n
        if self._rstart == self._rend:
            self._rstart = self._rend = 0
        if self._scanned:
            self._scanned = self._scanned - n if self._scanned > n else 0
        if not self._eof and avail >= self.read_limit > avail - n:
            self._update_events()

    def read_buffer(self) -> tuple[bytearray, int, int]:
        """(buffer, start, end): the raw read buffer and the unconsumed range,
        for codecs that scan in place. Valid until the next consume() or
        return to the loop."""
        buf = self._rbuf
        if buf is None:
            return _EMPTY, 0, 0
        return buf, self._rstart, self._rend

    def take(self, skip: int, n: int) -> bytes:
        """Copy out bytes [skip, skip+n) of the unconsumed data as an
        independent bytes object and consume everything up to skip+n (a
        length-prefixed body, a RESP bulk string, a run of frames)."""
        s = self._rstart
        end = self._rend
        e = s + skip + n
        if skip < 0 or n < 0 or e > end:
            raise ValueError(f"cannot take {skip}+{n} bytes, {end - s} buffered")
        view = self._rview
        data = view[s + skip : e].tobytes() if view is not None else b""
        if e == end and not self._scanned and end - s < self.read_limit:
            self._rstart = self._rend = 0  # all of it: consume() in short
        else:
            self.consume(e - s)
        return data

    def read_until(self, delimiter: bytes = b"\n", limit: int = 64 * 1024) -> bytes | None:
        """Return and consume the bytes up to and including the first
        `delimiter`, or None if it has not arrived yet. A call remembers how
        far it looked, so a line trickling in byte by byte is scanned once,
        not once per byte. Raises ReadLimitError when `limit` bytes are
        buffered without a delimiter among them (the bytes stay buffered; the
        caller decides whether to close), ValueError if `limit` exceeds
        read_limit (the Conn would stop reading before the limit is hit)."""
        if limit > self.read_limit:
            raise ValueError(
                f"limit {limit} exceeds this Conn's read_limit {self.read_limit}: raise read_limit"
            )
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        avail = self._rend - self._rstart
        if self._scan_delim != delimiter:
            self._scan_delim = delimiter
            self._scanned = 0
        scanned = self._scanned
        dlen = len(delimiter)
        window = avail if avail < limit else limit
        if window - scanned < dlen:
            i = -1
        else:
            assert self._rbuf is not None
            start = self._rstart
            i = codec.find_delim(self._rbuf, start + scanned, start + window, delimiter)
        if i < 0:
            # Everything but a delimiter's worth of tail (it may be cut) is
            # known not to start a delimiter.
            self._scanned = max(scanned, window - dlen + 1)
            if avail >= limit:
                raise ReadLimitError(f"no {delimiter!r} within {limit} bytes ({avail} buffered)")
            return None
        stop = i + dlen - self._rstart
        return self.take(0, stop)

    def readline(self, limit: int = 64 * 1024) -> bytes | None:
        """read_until(b"\\n", limit)."""
        return self.read_until(b"\n", limit)

    # The coroutine layer's entry points (evloop/streams.py), named as
    # asyncio's StreamReader names them: readuntil() waits for the line
    # read_until() only looks for.

    def readuntil(
        self, delimiter: bytes = b"\n", limit: int = 64 * 1024
    ) -> Coroutine[Any, Any, bytes]:
        """`line = await conn.readuntil(b"\r\n")` in an evloop coroutine:
        read_until(), waiting for the delimiter (IncompleteReadError if the
        stream ends first, ReadLimitError past `limit`)."""
        from .streams import read_until  # the layer above: imported when first used

        return read_until(self, delimiter, limit)

    def readexactly(self, n: int) -> Coroutine[Any, Any, bytes]:
        """`data = await conn.readexactly(n)`: exactly n bytes, waiting for
        them (IncompleteReadError, with what came, if the stream ends)."""
        from .streams import read_exactly

        return read_exactly(self, n)

    def read_into(self, target: memoryview, callback: Callable[[], Any]) -> None:
        """Fill `target` with the next len(target) bytes of the stream, then
        call callback(). Bytes already buffered are copied first; the rest is
        received straight into target. While this is pending, on_data is not
        called."""
        if self._read_target is not None:
            raise RuntimeError("a read_into() is already pending")
        # Our own view, released before the callback, so the caller's buffer
        # is resizable again by the time it hears it is full.
        target = memoryview(target)
        if target.format != "B" or target.ndim != 1:
            target = target.cast("B")
        n = min(len(target), self._rend - self._rstart)
        if n:
            assert self._rview is not None
            target[:n] = self._rview[self._rstart : self._rstart + n]
            self.consume(n)
        if n == len(target):
            target.release()
            self.loop.call_soon(callback)
            return
        self._read_target = target
        self._read_target_fill = n
        self._read_target_cb = callback
        self._update_events()

    def pause_reading(self) -> None:
        """Stop watching for input until resume_reading(): what the peer
        sends waits in the kernel (and stops the peer when that is full)."""
        if self._reading:
            self._reading = False
            self._update_events()
            self._stop_consumer()

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._update_events()
            cb = self.on_resume_reading
            if cb is not None and not self._closing:
                cb()
            if self._rend > self._rstart and self.on_data is not None and not self._closed:
                # Data that arrived while paused is shown again.
                self.loop.call_soon(self._deliver)

    def _stop_consumer(self) -> None:
        cb = self.on_stop_reading
        if cb is not None:
            cb()

    def _deliver(self) -> None:
        if self._reading and not self._closed and self._rend > self._rstart and self.on_data:
            self._call_on_data()

    def _call_on_data(self) -> None:
        cb = self.on_data
        assert cb is not None
        before = self._rend - self._rstart
        try:
            cb(self)
        except Exception as exc:
            self.loop.call_exception_handler(exc, cb)
        left = self._rend - self._rstart
        if left >= self.read_limit and left == before and not self._closing:
            self._stalled(left)

    def _stalled(self, left: int) -> None:
        # read_limit bytes are buffered and the consumer took none of them:
        # reading has stopped (see _want_read), and nothing will restart it.
        cb = self.on_read_limit
        if cb is not None:
            try:
                cb(self)
            except Exception as exc:
                self.loop.call_exception_handler(exc, cb)
            return
        self.abort(
            ReadLimitError(
                f"{left} bytes buffered (read_limit {self.read_limit}) and the consumer"
                f" took none of them: raise read_limit, or pause_reading() to hold input back"
            )
        )

    def _readv_into(self, view: memoryview) -> int:
        return os.readv(self._fd, [view])

    def _recvmsg_into(self, view: memoryview) -> int:
        assert self._sock is not None
        n, anc, flags, _ = self._sock.recvmsg_into([view], _ANC_BUFSIZE, socket.MSG_CMSG_CLOEXEC)
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                if self._fds_in is None:
                    self._fds_in = deque()
                self._fds_in.extend(fds)
        if flags & socket.MSG_CTRUNC:
            # The kernel closed the fds that did not fit; the stream is fine
            # but the sender's fd hand-off is lost, which we must not hide.
            raise FdPassingError(f"more than {_MAX_FDS_PER_MSG} fds in one message (MSG_CTRUNC)")
        return n

    def pop_fd(self) -> int | None:
        """The oldest fd received with SCM_RIGHTS (receive_fds=True), or None.
        The caller owns it; unclaimed fds are closed with the Conn."""
        fds = self._fds_in
        return fds.popleft() if fds else None

    def _want_read(self) -> bool:
        if self._eof or self._closing:
            return False
        if self._read_target is not None:
            return True
        return self._reading and not self._held and (self._rend - self._rstart) < self.read_limit

    @property
    def read_chunk(self) -> int:
        """The most bytes one read takes from the kernel (default 64 KiB,
        at most read_size). A consumer tunes it to what it can deliver while
        the bytes are still in the cache; see the module header."""
        return self._chunk

    @read_chunk.setter
    def read_chunk(self, n: int) -> None:
        self._chunk = max(_MIN_CHUNK, min(int(n), self.read_size))

    def hold_reading(self, hold: bool) -> None:
        """For a consumer that already holds a backlog of its own (a Pipe with
        a batch of frames not delivered yet): stop (True) or restart (False)
        taking bytes from the kernel, so the rest waits there instead of in
        memory. Unlike pause_reading() it is not a user's pause: nothing is
        told, and what is buffered is still the consumer's."""
        if hold != self._held:
            self._held = hold
            self._update_events()

    def _prepare_read(self) -> memoryview:
        """The read buffer, with at least _MIN_ROOM bytes of free room."""
        buf = self._rbuf
        size = self.read_size
        if buf is None:
            buf, loaned = _borrow(size)
            self._rbuf, self._rview = buf, loaned
            return loaned
        view = self._rview
        assert view is not None
        used = self._rend - self._rstart
        if len(buf) < size and used <= _CARRY_MAX:
            # A carry (a frame cut by the last read): into a loaned buffer.
            nbuf, nview = _borrow(size)
            nview[0:used] = view[self._rstart : self._rend]
            self._rbuf, self._rview = nbuf, nview
            self._rstart, self._rend = 0, used
            return nview
        if len(buf) - self._rend < _MIN_ROOM:
            return self._make_room()
        if self._rstart and self._rend > len(buf) >> 1 and used < _MIN_ROOM:
            # Less than half the room is left and little is unconsumed: move
            # it to the front, so the read gets the whole buffer, not a sliver.
            view[0:used] = view[self._rstart : self._rend]
            self._rstart, self._rend = 0, used
        return view

    def _settle(self) -> None:
        """After the consumer had its say: give an empty loaned buffer back,
        or move a few leftover bytes to a carry and give it back; a consumer
        that leaves more keeps the buffer."""
        buf = self._rbuf
        if buf is None:
            return
        view = self._rview
        assert view is not None
        used = self._rend - self._rstart
        if used == 0:
            self._rbuf = self._rview = None
            self._rstart = self._rend = 0
            if len(buf) == self.read_size:
                _give_back(buf, view)
        elif used <= _CARRY_MAX and len(buf) == self.read_size:
            carry = bytearray(view[self._rstart : self._rend])
            self._rbuf, self._rview = carry, memoryview(carry)
            self._rstart, self._rend = 0, used
            _give_back(buf, view)

    def _on_readable(self, _mask: int = 0) -> None:
        if self._rbuf is None and self._read_target is None:
            # The usual case: nothing buffered, borrow a buffer and read.
            try:
                buf, view = self._pool.pop()
            except IndexError:
                buf, view = _borrow(self.read_size)
            self._rbuf, self._rview = buf, view
        elif self._read_target is not None:
            return self._read_direct(self._read_target)
        else:
            view = self._prepare_read()
        rend = self._rend
        try:
            n = self._recv_into(view[rend : rend + self._chunk])
        except (BlockingIOError, InterruptedError):
            return self._settle()
        except FdPassingError as exc:
            return self._fatal(exc)
        except OSError as exc:
            self._settle()
            return self._read_failed(exc)
        if n == 0:
            self._settle()
            return self._on_peer_eof()
        self._rend = rend + n
        self.bytes_in += n
        self.reads += 1
        if self._idle is not None:
            self._last_io = self.loop.time()
        left = self._rend - self._rstart
        if left >= self.read_limit:
            self._update_events()
        cb = self.on_data
        if cb is not None:
            try:
                cb(self)
            except Exception as exc:
                self.loop.call_exception_handler(exc, cb)
        if self._rstart == self._rend:
            # All consumed, the usual case: the buffer goes back to the pool.
            done, rview = self._rbuf, self._rview
            if done is not None and rview is not None:
                self._rbuf = self._rview = None
                self._rstart = self._rend = 0
                pool = self._pool
                if len(done) == self.read_size and len(pool) < _POOL_MAX:
                    pool.append((done, rview))
        else:
            if left >= self.read_limit and not self._closing and self._rend - self._rstart == left:
                self._stalled(left)  # read_limit bytes and the consumer took none
            self._settle()

    def _make_room(self) -> memoryview:
        assert self._rbuf is not None and self._rview is not None
        used = self._rend - self._rstart
        size = len(self._rbuf)
        old_view = self._rview
        if self._rstart and size - used >= _MIN_ROOM:
            # Compact: move the unconsumed bytes to the front (memmove-safe).
            old_view[0:used] = old_view[self._rstart : self._rend]
            self._rstart, self._rend = 0, used
            return old_view
        # Full of unconsumed data: a buffer twice the size. A new one, never a
        # resize: the consumer may still hold a view of the old one.
        new = bytearray(max(size * 2, used + _MIN_ROOM, self.read_size))
        view = memoryview(new)
        view[:used] = old_view[self._rstart : self._rend]
        if size == self.read_size:
            _give_back(self._rbuf, old_view)
        self._rbuf, self._rview = new, view
        self._rstart, self._rend = 0, used
        return view

    def _read_direct(self, target: memoryview) -> None:
        fill = self._read_target_fill
        want = len(target) - fill
        view = target[fill:]
        # Scatter-read: the rest of the target, then whatever follows it into
        # the read buffer, so one syscall finishes a large payload and reads
        # the next headers too (unless read-side back-pressure says stop).
        ahead = None
        if (
            self._rend - self._rstart < self.read_limit
            and not self._receive_fds
            and self._scatter_read  # seam: needed by evloop/tls.py
        ):
            ahead = self._prepare_read()[self._rend :]
        try:
            if ahead is not None:
                n = os.readv(self._fd, [view, ahead])
            else:
                n = self._recv_into(view)
        except (BlockingIOError, InterruptedError):
            self._settle()
            return
        except FdPassingError as exc:
            return self._fatal(exc)
        except OSError as exc:
            self._settle()
            return self._read_failed(exc)
        finally:
            view.release()
            if ahead is not None:
                ahead.release()
        if n == 0:
            self._settle()
            return self._on_peer_eof()
        self.bytes_in += n
        self.reads += 1
        if self._idle is not None:
            self._last_io = self.loop.time()
        if n < want:
            self._read_target_fill = fill + n
            self._settle()
            return
        if n > want:
            self._rend += n - want
        cb = self._read_target_cb
        self._read_target = self._read_target_cb = None
        self._read_target_fill = 0
        target.release()
        self._update_events()
        assert cb is not None
        cb()
        if (
            self._rend > self._rstart
            and self._read_target is None
            and self.on_data is not None
            and not self._closed
        ):
            self._call_on_data()  # the read-ahead is news to the consumer
        if not self._closed:
            self._settle()

    def _read_failed(self, exc: OSError) -> None:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            # The peer is gone, but what it sent before may still be buffered
            # here (or in a Pipe): let the consumer have it, as at
            # end-of-file, and report the reset when the Conn closes.
            if self._error is None:
                self._error = _bare(exc)
            return self._on_peer_eof()
        self._fatal(exc)

    def _on_peer_eof(self) -> None:
        self._eof = True
        self._update_events()
        keep = False
        cb = self.on_eof
        if cb is not None:
            try:
                keep = bool(cb(self))
            except Exception as exc:
                # The Conn must not be left half-way: a failed on_eof closes.
                self.loop.call_exception_handler(exc, cb)
                keep = False
        if not keep and not self._closing:
            self.close()

    # -- write side -----------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Queue data; it leaves before the loop next sleeps. Never blocks.
        Raises ConnClosedError if the Conn is closed/closing or its write side
        is shut, BufferFullError if the buffer would pass `write_cap`,
        TypeError if data is not bytes-like. Once a send has failed (the peer
        is gone) writes are discarded and counted, and on_close will say why."""
        if type(data) is bytes or type(data) is bytearray:
            w = self._w
            tail = w.tail
            n = len(data)
            size = w.size + n
            if tail is not None:
                # Below the watermark, or past it with the pause announced.
                if size <= w.limit and n < LARGE_WRITE:
                    tail += data
                    w.size = size
                    self.writes += 1
                    return
            elif (
                0 < n < LARGE_WRITE
                and size <= self.write_cap
                and not (self._closing or self._shut_wr_requested or self._write_failed)
            ):
                # The first small write of a turn opens the tail.
                tail = w.tail = bytearray(data)
                w.chunks.append(tail)
                if size <= self.high_water and not self._flush_scheduled:
                    w.size = size
                    self.writes += 1
                    self._flush_scheduled = True
                    self.loop.call_before_poll(self._flush)
                else:
                    self._queued(size)
                return
        self.writev((data,))

    def writev(self, parts: Sequence[Buffer]) -> None:
        """Queue several buffers as one write: either all of them or, on an
        error, none. The watermark callback runs after the last part is
        queued, so nothing it does can land between two parts (a frame's
        header and payload, say)."""
        if self._closing or self._shut_wr_requested:
            raise ConnClosedError(
                "write on a closed or write-shut connection", reason=self._close_reason
            )
        bufs = [as_buffer(d) for d in parts]
        total = 0
        for b in bufs:
            total += len(b)
        if self._write_failed:
            self.writes_dropped += total
            return
        if not total:
            return
        w = self._w
        size = w.size + total
        if size > self.write_cap:
            raise BufferFullError(
                f"write of {total} bytes refused: {w.size} buffered, cap is {self.write_cap}"
            )
        chunks = w.chunks
        for data in bufs:
            n = len(data)
            if n >= LARGE_WRITE:
                if type(data) is not bytes and not (type(data) is memoryview and data.readonly):
                    # A mutable buffer could change under us before it is
                    # sent; one copy now is the price of safety.
                    data = bytes(data)
                chunks.append(data)
                w.tail = None
            elif not n:
                continue
            elif w.tail is not None:
                w.tail += data
            else:
                w.tail = bytearray(data)
                chunks.append(w.tail)
        self._queued(size)

    def _queued(self, size: int) -> None:
        """Bookkeeping after bytes were queued: the new buffered size, a
        flush before the loop sleeps, and the high watermark."""
        w = self._w
        w.size = size
        self.writes += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_before_poll(self._flush)
        if size > self.high_water and not self._write_paused:
            self._write_paused = True
            w.limit = self.write_cap
            cb = self.on_pause_writing
            if cb is not None:
                try:
                    cb()
                except Exception as exc:
                    self.loop.call_exception_handler(exc, cb)

    def write_fds(self, data: bytes, fds: list[int]) -> None:
        """Queue `data` (non-empty) with `fds` attached to its first byte as
        SCM_RIGHTS, in order with other writes. The fds are dup'ed now, so the
        caller may close its own copies at once."""
        if self._sock is None or self._sock.family != socket.AF_UNIX:
            raise ValueError("fds can only be passed over a Unix socket")
        if not data:
            raise ValueError("write_fds needs at least one byte of data to carry the fds")
        if not 0 < len(fds) <= _MAX_FDS_PER_MSG:
            raise ValueError(f"pass 1..{_MAX_FDS_PER_MSG} fds, got {len(fds)}")
        if self._closing or self._shut_wr_requested:
            raise ConnClosedError(
                "write on a closed or write-shut connection", reason=self._close_reason
            )
        if self._write_failed:
            raise ConnClosedError("fds cannot reach a peer that is gone", reason=self._error)
        w = self._w
        if w.size + len(data) > self.write_cap:
            raise BufferFullError(f"write of {len(data)} bytes refused: cap is {self.write_cap}")
        dups: list[int] = []
        try:
            for fd in fds:
                dups.append(os.dup(fd))
        except OSError:
            for fd in dups:
                os.close(fd)
            raise
        w.chunks.append(_FdChunk(bytes(data), dups))
        w.tail = None
        self._wfd_chunks += 1
        self._queued(w.size + len(data))

    def _send_fd_chunk(self) -> int:
        # The head of the queue carries fds: send it (and what follows, up to
        # the next fd chunk) with the ancillary data.
        assert self._sock is not None
        chunks = self._w.chunks
        head = chunks[0]
        bufs = [head.data]
        for i in range(1, min(len(chunks), _IOV_MAX)):
            if type(chunks[i]) is _FdChunk:
                break
            bufs.append(chunks[i])
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", head.fds))]
        n = self._sock.sendmsg(bufs, anc)
        # The fds went with the first byte: they are the peer's now.
        for fd in head.fds:
            os.close(fd)
        chunks[0] = head.data
        self._wfd_chunks -= 1
        return n

    def when_writable(self, fn: Callable[[], Any]) -> Handle:
        """Call fn() once, from a fresh loop callback, as soon as the Conn is
        writable (below the high watermark, or drained to the low one after a
        pause), closing, or its writes failed: at once if it already is. Any
        number of callers may wait; the returned handle's cancel() withdraws
        one. A woken caller checks `writable`/`closing` itself."""
        if not self._write_paused or self._closing or self._write_failed:
            return self.loop.call_soon(fn)
        h = Handle(self.loop, fn, ())
        if self._writable_waiters is None:
            self._writable_waiters = []
        self._writable_waiters.append(h)
        return h

    def _wake_writable_waiters(self) -> None:
        waiters = self._writable_waiters
        if waiters:
            self._writable_waiters = None
            loop = self.loop
            if loop.closed:
                return
            for h in waiters:
                if not h.cancelled:
                    loop.call_soon(h._fn)

    def when_closed(self, fn: Callable[[], Any]) -> None:
        """Call fn() from a loop callback once the Conn is closed (soon, if it
        already is), after on_close: for an owner (a Server shutting down)
        that must learn of the close without taking on_close."""
        if self._closed:
            self.loop.call_soon(fn)
        elif self._close_waiters is None:
            self._close_waiters = [fn]
        else:
            self._close_waiters.append(fn)

    def flush(self) -> None:
        """Hand what is buffered to the kernel now instead of at the end of
        the turn (a worker that computes for long inside one callback can
        make its progress frames leave). Never blocks: what the kernel does
        not take waits for EPOLLOUT as usual."""
        if self._w.chunks and not self._closed:
            self._flush()

    def writelines(self, chunks: Sequence[Buffer]) -> None:
        """writev(chunks): all or nothing."""
        self.writev(chunks)

    def _flush(self) -> None:
        """Send as much as the kernel takes, in as few syscalls as possible."""
        self._flush_scheduled = False
        if self._closed:
            return
        w = self._w
        chunks = w.chunks
        sock = self._sock
        sent = 0
        while chunks:
            try:
                if self._wfd_chunks:
                    n = self._flush_one_with_fds()
                elif len(chunks) == 1:
                    buf = chunks[0]
                    n = sock.send(buf) if sock is not None else os.write(self._fd, buf)
                else:
                    bufs = chunks if len(chunks) <= _IOV_MAX else chunks[:_IOV_MAX]
                    n = sock.sendmsg(bufs) if sock is not None else os.writev(self._fd, bufs)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _PEER_GONE:
                    return self._send_failed(exc)
                return self._fatal(exc)
            sent += n
            self.sends += 1
            w.size -= n
            # Drop what was sent from the front of the queue.
            i = 0
            while n:
                head = chunks[i]
                hn = len(head)
                if n >= hn:
                    n -= hn
                    i += 1
                elif type(head) is bytearray:
                    del head[:n]  # O(1): CPython bytearrays shrink from the front cheaply
                    n = 0
                else:
                    chunks[i] = memoryview(head)[n:]
                    n = 0
            if i == len(chunks):
                chunks.clear()
                w.tail = None
            elif i:
                del chunks[:i]
            if chunks and len(chunks) <= _IOV_MAX and not self._wfd_chunks:
                # A short write with nothing beyond this gather: the kernel is
                # full (a queue longer than IOV_MAX needs another gather).
                break
        if sent:
            self.bytes_out += sent
            if self._idle is not None:
                self._last_io = self.loop.time()
        if self._write_paused and w.size <= self.low_water:
            self._write_paused = False
            w.limit = self.high_water
            # A closing Conn takes no more writes: no point asking for them.
            cb = self.on_resume_writing
            if cb is not None and not self._closing:
                try:
                    cb()
                except Exception as exc:
                    self.loop.call_exception_handler(exc, cb)
            self._wake_writable_waiters()
        if not chunks:
            if self._closing:
                self._finish_close(None)
                return
            if self._shut_wr_requested and not self._write_shut:
                self._do_shutdown_wr()
            elif not self._events & EVENT_WRITE:
                return  # all sent and EPOLLOUT was never armed: nothing to change
        self._update_events()

    def _flush_one_with_fds(self) -> int:
        chunks = self._w.chunks
        if type(chunks[0]) is _FdChunk:
            return self._send_fd_chunk()
        # Plain data before the next fd chunk goes first, without fds.
        bufs: list[Buffer] = []
        for item in chunks:
            if type(item) is _FdChunk or len(bufs) == _IOV_MAX:
                break
            bufs.append(item)
        assert self._sock is not None
        return self._sock.sendmsg(bufs)

    def _send_failed(self, exc: OSError) -> None:
        # The peer is gone (EPIPE, ECONNRESET) or the socket broke. What was
        # queued can never arrive: drop it. What the peer sent before it went
        # may still be waiting to be read: keep reading it to the end, and
        # report the error when the Conn closes.
        exc = _bare(exc)  # type: ignore[assignment]
        if self._error is None:
            self._error = exc
        self._write_failed = True
        self._drop_write_queue()
        self._wake_writable_waiters()
        if self._closing or self._sock is None:
            # Closing anyway, or a pipe's write end: there is no input to wait for.
            self._finish_close(exc)
            return
        self._update_events()
        if self._eof or self._held:
            # The input is over, or the consumer is still working through a
            # backlog of it: it closes (or releases the hold and reads on)
            # when it is done.
            return
        if not self._events & EVENT_READ and self._sock is not None:
            # Not reading (paused or back-pressured). If nothing is left
            # unread, there is nothing to wait for: close now.
            self._close_if_drained()

    def _close_if_drained(self) -> None:
        assert self._sock is not None
        if self._rend > self._rstart:
            return  # buffered input is still the consumer's
        try:
            peek = self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return  # nothing yet, but the stream is not over: wait
        except OSError:
            peek = b""
        if not peek:
            self._eof = True
            self.close()

    def _drop_write_queue(self) -> None:
        w = self._w
        for item in w.chunks:
            if type(item) is _FdChunk:
                for dfd in item.fds:
                    os.close(dfd)
        self.writes_dropped += w.size
        w.chunks.clear()
        w.tail = None
        w.size = 0
        w.limit = -1  # nothing may be appended directly any more
        self._wfd_chunks = 0
        self._write_paused = False

    def _do_shutdown_wr(self) -> None:
        self._write_shut = True
        try:
            if self._sock is not None:
                self._sock.shutdown(socket.SHUT_WR)
            else:
                # A pipe has no half-close: closing the write end is the EOF,
                # and there is no read side to keep.
                self._finish_close(None)
        except OSError as exc:
            self._fatal(exc)

    def shutdown_write(self) -> None:
        """Half-close: after the buffered data is flushed, send EOF. Reading
        goes on. Further writes raise ConnClosedError."""
        if self._closing or self._shut_wr_requested:
            return
        self._shut_wr_requested = True
        self._w.tail = None
        if not self._w.chunks:
            self._do_shutdown_wr()
            self._update_events()

    # -- idle timeout ---------------------------------------------------------

    @property
    def idle_timeout(self) -> float | None:
        return self._idle

    def set_idle_timeout(self, seconds: float | None) -> None:
        """Close with IdleTimeoutError once no byte was received or sent for
        `seconds` (None turns it off). Counted from now."""
        if seconds is not None and not (seconds > 0 and seconds < float("inf")):
            raise ValueError(f"idle_timeout must be a finite number > 0 or None, got {seconds!r}")
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._idle = seconds
        if seconds is not None and not self._closed:
            self._last_io = self.loop.time()
            self._idle_timer = self.loop.call_later(seconds, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        idle = self._idle
        if idle is None or self._closed:
            return
        due = self._last_io + idle
        if self.loop.time() >= due:
            self.abort(IdleTimeoutError(f"no byte received or sent for {idle:g} s", timeout=idle))
        else:
            self._idle_timer = self.loop.call_at(due, self._check_idle)

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """Stop reading, flush what is buffered, then close. on_close(None)
        follows once the last byte has left (or on_close(exc) if the flush
        fails)."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._w.tail = None
        self._stop_consumer()
        if not self._w.chunks:
            self._finish_close(None)
        else:
            self._update_events()
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.loop.call_before_poll(self._flush)

    def abort(self, exc: BaseException | None = None) -> None:
        """Close now, discarding unsent data. on_close(exc) follows."""
        if self._closed:
            return
        self._finish_close(exc)

    def _fatal(self, exc: BaseException) -> None:
        # Every other socket error ends the Conn: there is no error after
        # which a stream is still known to be in sync.
        self._finish_close(_bare(exc))

    def _finish_close(self, reason: BaseException | None) -> None:
        if self._closed:
            return
        if reason is None:
            reason = self._error  # a reset or failed send seen while input was drained
        self._closed = True
        self._closing = True
        self._close_reason = reason
        fd = self._fd
        self._fd = -1
        self.loop.unregister(fd)  # idempotent: a parked fd is already out
        self._events = 0
        if self._sock is not None:
            self._sock.close()
        else:
            try:
                os.close(fd)
            except OSError:
                pass
        for item in self._w.chunks:
            if type(item) is _FdChunk:
                for dfd in item.fds:
                    os.close(dfd)
        w = self._w
        w.chunks.clear()
        w.tail = None
        w.size = 0
        w.limit = -1
        self._wfd_chunks = 0
        if self._fds_in:
            while self._fds_in:
                os.close(self._fds_in.popleft())
        self._read_target = None
        self._read_target_cb = None
        # Input nobody consumed stays readable (a reader may still want the
        # partial message it was waiting on); an empty buffer goes back.
        self._settle()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self.loop.disown(self)
        self._stop_consumer()
        if not self.loop.closed:
            if self.on_close is not None:
                self.loop.call_soon(self.on_close, reason)
            if self._close_waiters is not None:
                for fn in self._close_waiters:
                    self.loop.call_soon(fn)
        self._close_waiters = None
        self._wake_writable_waiters()
        # Nothing will be called any more: drop the callbacks, which usually
        # refer back to whatever refers to this Conn (its Pipe, a protocol),
        # so the whole group is freed by reference counting, not a GC pass.
        self.on_data = self.on_eof = self.on_close = None
        self.on_pause_writing = self.on_resume_writing = None
        self.on_read_limit = self.on_stop_reading = self.on_resume_reading = None

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- epoll interest -------------------------------------------------------

    def _update_events(self) -> None:
        if self._closed:
            return
        ev = 0
        if self._want_read():
            ev |= EVENT_READ
        if self._w.chunks and not self._write_shut:
            ev |= EVENT_WRITE
        if ev == self._events and ev:
            return  # registered, nothing changed (the common case)
        loop = self.loop
        # While only reading, events go straight to _on_readable: with
        # EPOLLIN wanted, a HUP or ERR is best answered by a read too.
        cb = self._on_readable if ev == EVENT_READ else self._on_events
        if loop.is_registered(self._fd):
            loop.modify(self._fd, ev, cb)
        elif ev:
            # New, or parked after a hang-up while not reading: with no
            # interest it stays out, since EPOLLHUP would fire regardless.
            loop.register(self._fd, ev, cb)
        self._events = ev

    def _on_events(self, mask: int) -> None:
        if mask & EVENT_WRITE:
            self._flush()
            if self._closed:
                return
        if mask & EVENT_READ and self._events & EVENT_READ:
            self._on_readable()
            return
        if mask & (EVENT_HUP | EVENT_ERR):
            if self._events & EVENT_READ:
                # Read what is still queued first; the read then returns the
                # EOF or the error (a reset is treated as EOF, see above).
                return self._on_readable()
            # Not reading (paused, back-pressured, or past EOF): input that
            # is buffered here or queued in the kernel must not be cut off by
            # the error. Queued writes surface it (EPIPE); otherwise park, and
            # when reading resumes recv() returns the rest, then the error.
            if self._w.chunks and not self._write_shut:
                self._flush()  # the write fails with the reason (EPIPE...)
            elif not self._closed:
                # HUP keeps firing even with an empty mask: leave the epoll
                # set until reading resumes, so the loop does not spin.
                self.loop.unregister(self._fd)
                self._events = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("closing" if self._closing else "open")
        return f"<Conn fd={self._fd} {state} in={self.bytes_in} out={self.bytes_out}>"
