# evloop/conn.py
#
# Conn: one non-blocking stream fd (a socket, a socketpair end, or a pipe fd)
# with a read buffer and a write buffer, driven by the Loop.
#
# Read side. Bytes are received with recv_into into one reusable bytearray;
# `read()` shows the unconsumed bytes as a memoryview (no copy) and
# `consume(n)` drops them. The buffer is never resized in place (a view may be
# alive); it is compacted by memmove or replaced by a larger one. While more
# than `read_limit` bytes are unconsumed the Conn drops EPOLLIN, so a fast
# producer cannot grow a slow consumer's memory. `read_into(view, cb)` lets a
# consumer (the Pipe, for large frames) have the kernel copy straight into a
# buffer of its own.
#
# Write side. `write()` never blocks and never makes a syscall: small writes
# are appended to a bytearray, large ones (>= 64 KiB) are queued by
# reference, and the first write of a turn asks the Loop to flush this Conn
# before it next polls, so everything written during a turn leaves in one
# send()/sendmsg() gather. EPOLLOUT is held only while bytes are still waiting
# for the kernel. Watermarks tell a producer to pause; a hard cap refuses a
# write outright rather than grow without bound.
#
# Invariants: the fd is set to -1 the moment it is closed; `on_close` fires
# exactly once, with None for an orderly close or the exception that ended the
# Conn, always from a fresh loop callback (never re-entrantly from inside
# write()/close()); no OSError from the socket escapes into the Loop.
from __future__ import annotations

import array
import errno
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import codec
from .errors import BufferFullError, ConnClosedError, ReadLimitError
from .loop import EVENT_ERR, EVENT_HUP, EVENT_READ, EVENT_WRITE, Handle, Loop

__all__ = ["Conn", "ConnStatistics", "Buffer"]

Buffer = bytes | bytearray | memoryview

# Writes at least this large are queued by reference instead of copied.
LARGE_WRITE = 64 * 1024
# sendmsg() takes at most IOV_MAX (1024 on Linux) buffers per call.
_IOV_MAX = 1024
# Room for this many fds per received message when receive_fds is on.
_MAX_FDS_PER_MSG = 64
_ANC_BUFSIZE = socket.CMSG_SPACE(_MAX_FDS_PER_MSG * array.array("i").itemsize)


def _byte_buffer(data: Any) -> bytes | bytearray | memoryview:
    """bytes and bytearray as they are; any other buffer as a flat memoryview
    of bytes, so len() counts bytes, not items; a TypeError for anything that
    is not a buffer (str, int, None...)."""
    if type(data) is bytes or type(data) is bytearray:
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"data must be bytes-like (bytes, bytearray, memoryview), not {type(data).__name__}"
        ) from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class _FdChunk:
    """Queued bytes whose first byte carries fds as SCM_RIGHTS."""

    __slots__ = ("data", "fds")

    def __init__(self, data: bytes, fds: list[int]):
        self.data = data
        self.fds = fds

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class ConnStatistics:
    bytes_in: int
    bytes_out: int
    reads: int  # recv calls that returned data
    writes: int  # write() calls
    sends: int  # send/sendmsg syscalls that moved data
    read_buffered: int
    write_buffered: int


class Conn:
    """A non-blocking stream on a Loop. See the module header.

    Callbacks (attributes, settable at any time, or keyword arguments):
      on_data(conn)          bytes arrived; look at conn.read(), conn.consume(n)
      on_eof(conn) -> bool   the peer shut its write side; return True to keep
                             the Conn open (half-close), else it is closed
                             after flushing. Default: close.
      on_close(exc)          the Conn is closed: exc is None for an orderly
                             close, else the error that ended it. Exactly once.
      on_pause_writing()     the write buffer went above high_water
      on_resume_writing()    it drained to low_water or below
    """

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
        read_size: int = 256 * 1024,
        read_limit: int = 1024 * 1024,
        high_water: int = 1024 * 1024,
        low_water: int | None = None,
        write_cap: int = 128 * 1024 * 1024,
        start_reading: bool = True,
        receive_fds: bool = False,
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
        if isinstance(sock, socket.socket):
            sock.setblocking(False)
            self._sock: socket.socket | None = sock
            self._fd = sock.fileno()
            self._recv_into = self._recvmsg_into if receive_fds else sock.recv_into
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
        self.read_size = read_size
        self.read_limit = read_limit
        self.high_water = high_water
        self.low_water = low_water
        self.write_cap = write_cap
        # Read buffer: data lives in _rbuf[_rstart:_rend].
        self._rbuf = bytearray(min(read_size, 64 * 1024))
        self._rview = memoryview(self._rbuf)
        self._rstart = 0
        self._rend = 0
        self._reading = start_reading  # wanted by the user (pause/resume)
        self._read_target: memoryview | None = None
        self._read_target_fill = 0
        self._read_target_cb: Callable[[], Any] | None = None
        self._grow = False  # the last read filled the buffer: grow it
        self._eof = False
        self._reset: OSError | None = None
        # Write buffer: a deque of bytearray/bytes/memoryview chunks.
        self._wq: deque[Any] = deque()
        self._wtail: bytearray | None = None  # see write()
        self._wsize = 0
        self._wfd_chunks = 0  # _FdChunk items in _wq
        self._fds_in: deque[int] = deque()
        self._flush_scheduled = False
        self._write_paused = False
        self._writable_waiters: list[Handle] | None = None
        self._shut_wr_requested = False
        self._write_shut = False
        # State.
        self._closing = False
        self._closed = False
        self._close_reason: BaseException | None = None
        self._events = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.reads = 0
        self.writes = 0
        self.sends = 0
        self._update_events()
        loop.adopt(self)

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
    def writable(self) -> bool:
        """False while the write buffer is above the high watermark (until it
        drains to the low watermark)."""
        return not self._write_paused

    @property
    def write_buffered(self) -> int:
        return self._wsize

    @property
    def read_buffered(self) -> int:
        return self._rend - self._rstart

    @property
    def socket(self) -> socket.socket | None:
        return self._sock

    def statistics(self) -> ConnStatistics:
        return ConnStatistics(
            self.bytes_in, self.bytes_out, self.reads, self.writes, self.sends,
            self._rend - self._rstart, self._wsize,
        )  # fmt: skip

    # -- read side ------------------------------------------------------------

    def read(self) -> memoryview:
        """The unconsumed bytes, without copying. The view is valid until the
        next consume(), read_into() or return to the loop."""
        return self._rview[self._rstart : self._rend]

    def consume(self, n: int) -> None:
        """Drop the first n unconsumed bytes."""
        avail = self._rend - self._rstart
        if not 0 <= n <= avail:
            raise ValueError(f"cannot consume {n} bytes, {avail} buffered")
        self._rstart += n
        if self._rstart == self._rend:
            self._rstart = self._rend = 0
        if not self._eof and avail >= self.read_limit > avail - n:
            self._update_events()

    def read_buffer(self) -> tuple[bytearray, int, int]:
        """(buffer, start, end): the raw read buffer and the unconsumed range,
        for codecs that scan in place. Valid until the next consume() or
        return to the loop."""
        return self._rbuf, self._rstart, self._rend

    def take(self, skip: int, n: int) -> bytes:
        """Copy out bytes [skip, skip+n) of the unconsumed data as an
        independent bytes object and consume everything up to skip+n."""
        # The Pipe's per-frame path: consume() is inlined.
        s = self._rstart
        start = s + skip
        e = start + n
        end = self._rend
        if skip < 0 or n < 0 or e > end:
            raise ValueError(f"cannot take {skip}+{n} bytes, {end - s} buffered")
        data = self._rview[start:e].tobytes()
        if e == end:
            self._rstart = self._rend = 0
        else:
            self._rstart = e
        if end - s >= self.read_limit > end - e and not self._eof:
            self._update_events()
        return data

    def read_until(self, delimiter: bytes = b"\n", limit: int = 64 * 1024) -> bytes | None:
        """Return and consume the bytes up to and including the first
        `delimiter`, or None if it has not arrived yet. Raises ReadLimitError
        when `limit` bytes are buffered without a delimiter among them (the
        bytes stay buffered; the caller decides whether to close)."""
        if limit > self.read_limit:
            self.read_limit = limit  # the buffer must be allowed to hold it
        end = min(self._rend, self._rstart + limit)
        i = codec.find_delim(self._rbuf, self._rstart, end, delimiter)
        if i < 0:
            if self._rend - self._rstart >= limit:
                raise ReadLimitError(
                    f"no {delimiter!r} within {limit} bytes ({self._rend - self._rstart} buffered)"
                )
            return None
        stop = i + len(delimiter)
        line = bytes(self._rview[self._rstart : stop])
        self.consume(stop - self._rstart)
        return line

    def readline(self, limit: int = 64 * 1024) -> bytes | None:
        """read_until(b"\\n", limit)."""
        return self.read_until(b"\n", limit)

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
        """Stop watching for input until resume_reading()."""
        if self._reading:
            self._reading = False
            self._update_events()

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._update_events()
            if self._rend > self._rstart and self.on_data is not None and not self._closed:
                # Data that arrived while paused is shown again.
                self.loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        if self._reading and not self._closed and self._rend > self._rstart and self.on_data:
            self.on_data(self)

    def _readv_into(self, view: memoryview) -> int:
        return os.readv(self._fd, [view])

    def _recvmsg_into(self, view: memoryview) -> int:
        assert self._sock is not None
        n, anc, flags, _ = self._sock.recvmsg_into([view], _ANC_BUFSIZE, socket.MSG_CMSG_CLOEXEC)
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                self._fds_in.extend(fds)
        if flags & socket.MSG_CTRUNC:
            # The kernel closed the fds that did not fit; the stream is fine
            # but the sender's fd hand-off is lost, which we must not hide.
            raise OSError(0, f"more than {_MAX_FDS_PER_MSG} fds in one message (MSG_CTRUNC)")
        return n

    def pop_fd(self) -> int | None:
        """The oldest fd received with SCM_RIGHTS (receive_fds=True), or None.
        The caller owns it; unclaimed fds are closed with the Conn."""
        return self._fds_in.popleft() if self._fds_in else None

    def _want_read(self) -> bool:
        if self._eof or self._closing:
            return False
        if self._read_target is not None:
            return True
        return self._reading and (self._rend - self._rstart) < self.read_limit

    def _on_readable(self) -> None:
        target = self._read_target
        if target is not None:
            return self._read_direct(target)
        rbuf_len = len(self._rbuf)
        if self._grow or rbuf_len - self._rend < 4096:
            self._make_room()
        view = self._rview[self._rend : self._rend + self.read_size]
        room = len(view)
        try:
            n = self._recv_into(view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            return self._read_failed(exc)
        finally:
            view.release()
        if n == 0:
            return self._on_peer_eof()
        if n == room and len(self._rbuf) < self.read_size:
            # The read filled the buffer: the kernel likely holds more. Grow
            # toward read_size before the next read (fewer, larger reads).
            self._grow = True
        self._rend += n
        self.bytes_in += n
        self.reads += 1
        if self._rend - self._rstart >= self.read_limit:
            self._update_events()
        if self.on_data is not None:
            self.on_data(self)

    def _make_room(self) -> None:
        used = self._rend - self._rstart
        size = len(self._rbuf)
        if self._grow and size < self.read_size:
            size = min(size * 2, self.read_size)
        elif self._rstart and size - used >= 4096:
            # Compact: move the partial tail to the front (memmove-safe).
            self._rview[0:used] = self._rview[self._rstart : self._rend]
            self._rstart, self._rend = 0, used
            return
        else:
            # Full of unconsumed data: grow (double).
            size = max(size * 2, used + 4096)
        self._grow = False
        # A new buffer, never a resize: the consumer may still hold a view
        # of the old one.
        new = bytearray(size)
        new[:used] = self._rview[self._rstart : self._rend]
        self._rbuf = new
        self._rview = memoryview(new)
        self._rstart, self._rend = 0, used

    def _read_direct(self, target: memoryview) -> None:
        fill = self._read_target_fill
        want = len(target) - fill
        view = target[fill:]
        # Scatter-read: the rest of the target, then whatever follows it into
        # the read buffer, so one syscall finishes a large payload and reads
        # the next headers too (unless read-side back-pressure says stop).
        ahead = None
        if self._rend - self._rstart < self.read_limit and not self._receive_fds:
            if self._grow or len(self._rbuf) - self._rend < 4096:
                self._make_room()
            ahead = self._rview[self._rend : self._rend + self.read_size]
        room = len(ahead) if ahead is not None else 0
        try:
            if ahead is not None:
                n = os.readv(self._fd, [view, ahead])
            else:
                n = self._recv_into(view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            return self._read_failed(exc)
        finally:
            view.release()
            if ahead is not None:
                ahead.release()
        if n == 0:
            return self._on_peer_eof()
        self.bytes_in += n
        self.reads += 1
        if n < want:
            self._read_target_fill = fill + n
            return
        if n > want:
            extra = n - want
            if extra == room and len(self._rbuf) < self.read_size:
                self._grow = True
            self._rend += extra
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
            self.on_data(self)  # the read-ahead is news to the consumer

    def _read_failed(self, exc: OSError) -> None:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            # The peer is gone, but what it sent before may still be buffered
            # here (or in a Pipe): let the consumer have it, as at
            # end-of-file, and report the reset when the Conn closes.
            self._reset = exc
            return self._on_peer_eof()
        self._fatal(exc)

    def _on_peer_eof(self) -> None:
        self._eof = True
        self._update_events()
        keep = False
        if self.on_eof is not None:
            keep = bool(self.on_eof(self))
        if not keep and not self._closing:
            self.close()

    # -- write side -----------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Queue data; it leaves before the loop next sleeps. Never blocks.
        Raises ConnClosedError if the Conn is closed/closing or its write side
        is shut, BufferFullError if the buffer would pass `write_cap`,
        TypeError if data is not bytes-like."""
        # Fast path: a small write appended to the open tail while no
        # watermark callback is due. Invariant: _wtail is set only while it is the last item
        # of the queue, the Conn accepts writes, and a flush is scheduled or
        # EPOLLOUT is armed, so nothing appended here can be stranded.
        tail = self._wtail
        if tail is not None and (type(data) is bytes or type(data) is bytearray):
            size = self._wsize + len(data)
            # Below the watermark, or past it with the pause already announced.
            limit = self.write_cap if self._write_paused else self.high_water
            if size <= limit and len(data) < LARGE_WRITE:
                tail += data
                self._wsize = size
                self.writes += 1
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
        bufs = [_byte_buffer(d) for d in parts]
        total = sum(len(b) for b in bufs)
        if not total:
            return
        size = self._wsize + total
        if size > self.write_cap:
            raise BufferFullError(
                f"write of {total} bytes refused: {self._wsize} buffered, cap is {self.write_cap}"
            )
        wq = self._wq
        for data in bufs:
            n = len(data)
            if n >= LARGE_WRITE:
                if type(data) is not bytes and not (type(data) is memoryview and data.readonly):
                    # A mutable buffer could change under us before it is
                    # sent; one copy now is the price of safety.
                    data = bytes(data)
                wq.append(data)
                self._wtail = None
            elif not n:
                continue
            elif self._wtail is not None:
                self._wtail += data
            else:
                self._wtail = bytearray(data)
                wq.append(self._wtail)
        self._queued(size)

    def _queued(self, size: int) -> None:
        """Bookkeeping after bytes were queued: the new buffered size, a
        flush before the loop sleeps, and the high watermark."""
        self._wsize = size
        self.writes += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_before_poll(self._flush)
        if size > self.high_water and not self._write_paused:
            self._write_paused = True
            if self.on_pause_writing is not None:
                self.on_pause_writing()

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
        if self._wsize + len(data) > self.write_cap:
            raise BufferFullError(f"write of {len(data)} bytes refused: cap is {self.write_cap}")
        dups: list[int] = []
        try:
            for fd in fds:
                dups.append(os.dup(fd))
        except OSError:
            for fd in dups:
                os.close(fd)
            raise
        self._wq.append(_FdChunk(bytes(data), dups))
        self._wtail = None
        self._wfd_chunks += 1
        self._queued(self._wsize + len(data))

    def _send_fd_chunk(self) -> int:
        # The head of the queue carries fds: send it (and what follows, up to
        # the next fd chunk) with the ancillary data.
        assert self._sock is not None
        wq = self._wq
        head = wq[0]
        bufs = [head.data]
        for i in range(1, min(len(wq), _IOV_MAX)):
            if type(wq[i]) is _FdChunk:
                break
            bufs.append(wq[i])
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", head.fds))]
        n = self._sock.sendmsg(bufs, anc)
        # The fds went with the first byte: they are the peer's now.
        for fd in head.fds:
            os.close(fd)
        wq[0] = head.data
        self._wfd_chunks -= 1
        return n

    def when_writable(self, fn: Callable[[], Any]) -> Handle:
        """Call fn() once, from a fresh loop callback, as soon as the Conn is
        writable (below the high watermark, or drained to the low one after a
        pause) or closed: at once if it already is. Any number of callers may
        wait; the returned handle's cancel() withdraws one. A woken caller
        checks `writable`/`closing` itself: a close wakes everyone."""
        if not self._write_paused or self._closing:
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

    def flush(self) -> None:
        """Hand what is buffered to the kernel now instead of at the end of
        the turn (a worker that computes for long inside one callback can
        make its progress frames leave). Never blocks: what the kernel does
        not take waits for EPOLLOUT as usual."""
        if self._wq and not self._closed:
            self._flush()

    def writelines(self, chunks: Sequence[Buffer]) -> None:
        """writev(chunks): all or nothing."""
        self.writev(chunks)

    def _flush(self) -> None:
        """Send as much as the kernel takes, in as few syscalls as possible."""
        self._flush_scheduled = False
        if self._closed:
            return
        wq = self._wq
        sock = self._sock
        while wq:
            try:
                if self._wfd_chunks:
                    n = self._flush_one_with_fds()
                elif len(wq) == 1:
                    buf = wq[0]
                    n = sock.send(buf) if sock is not None else os.write(self._fd, buf)
                else:
                    bufs = list(wq) if len(wq) <= _IOV_MAX else [wq[i] for i in range(_IOV_MAX)]
                    n = sock.sendmsg(bufs) if sock is not None else os.writev(self._fd, bufs)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._fatal(exc)
                return
            self.bytes_out += n
            self.sends += 1
            self._wsize -= n
            # Drop what was sent from the front of the queue.
            while n:
                head = wq[0]
                hn = len(head) if type(head) is not memoryview else head.nbytes
                if n >= hn:
                    if wq.popleft() is self._wtail:
                        self._wtail = None
                    n -= hn
                elif type(head) is bytearray:
                    del head[:n]  # O(1): CPython bytearrays shrink from the front cheaply
                    n = 0
                else:
                    wq[0] = memoryview(head)[n:]
                    n = 0
            if wq and len(wq) <= _IOV_MAX and not self._wfd_chunks:
                # A short write with nothing beyond the gather: the kernel is full.
                break
        if self._write_paused and self._wsize <= self.low_water:
            self._write_paused = False
            # A closing Conn takes no more writes: no point asking for them.
            if self.on_resume_writing is not None and not self._closing:
                self.on_resume_writing()
            self._wake_writable_waiters()
        if not self._wq:
            if self._closing:
                self._finish_close(None)
                return
            if self._shut_wr_requested and not self._write_shut:
                self._do_shutdown_wr()
        self._update_events()

    def _flush_one_with_fds(self) -> int:
        wq = self._wq
        if type(wq[0]) is _FdChunk:
            return self._send_fd_chunk()
        # Plain data before the next fd chunk goes first, without fds.
        bufs: list[Buffer] = []
        for item in wq:
            if type(item) is _FdChunk or len(bufs) == _IOV_MAX:
                break
            bufs.append(item)
        assert self._sock is not None
        return self._sock.sendmsg(bufs)

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
        self._wtail = None
        if not self._wq:
            self._do_shutdown_wr()
            self._update_events()

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """Stop reading, flush what is buffered, then close. on_close(None)
        follows once the last byte has left (or on_close(exc) if the flush
        fails)."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._wtail = None
        if not self._wq:
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
        # Every socket error ends the Conn: there is no error after which a
        # stream is still known to be in sync.
        self._finish_close(exc)

    def _finish_close(self, reason: BaseException | None) -> None:
        if self._closed:
            return
        if reason is None:
            reason = self._reset  # a reset seen while buffered input was drained
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
        for item in self._wq:
            if type(item) is _FdChunk:
                for dfd in item.fds:
                    os.close(dfd)
        self._wq.clear()
        self._wtail = None
        self._wfd_chunks = 0
        while self._fds_in:
            os.close(self._fds_in.popleft())
        self._wsize = 0
        self._read_target = None
        self._read_target_cb = None
        self.loop.disown(self)
        if self.on_close is not None and not self.loop.closed:
            self.loop.call_soon(self.on_close, reason)
        self._wake_writable_waiters()

    # -- epoll interest -------------------------------------------------------

    def _update_events(self) -> None:
        if self._closed:
            return
        ev = 0
        if self._want_read():
            ev |= EVENT_READ
        if self._wq and not self._write_shut:
            ev |= EVENT_WRITE
        if ev == self._events and ev:
            return  # registered, nothing changed (the common case)
        loop = self.loop
        if loop.is_registered(self._fd):
            loop.modify(self._fd, ev)
        elif ev:
            # New, or parked after a hang-up while not reading: with no
            # interest it stays out, since EPOLLHUP would fire regardless.
            loop.register(self._fd, ev, self._on_events)
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
                # EOF or the error (a reset is treated as EOF, see below).
                return self._on_readable()
            # Not reading (paused, back-pressured, or past EOF): input that
            # is buffered here or queued in the kernel must not be cut off by
            # the error. Queued writes surface it (EPIPE); otherwise park, and
            # when reading resumes recv() returns the rest, then the error.
            if self._wq and not self._write_shut:
                self._flush()  # the write fails with the reason (EPIPE...)
            elif not self._closed:
                # We are not reading (paused or back-pressured), yet HUP keeps
                # firing even with an empty mask. Leave the epoll set until
                # reading resumes, so the loop does not spin.
                self.loop.unregister(self._fd)
                self._events = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("closing" if self._closing else "open")
        return f"<Conn fd={self._fd} {state} in={self.bytes_in} out={self.bytes_out}>"
