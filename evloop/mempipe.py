# evloop/mempipe.py
#
# In-process pipes (Plumber's mempipe, Ceph's local delivery): two connected
# endpoints implementing endpoint.FrameEndpoint exactly, with no socket, no
# fd and no encoding. Code written against a Pipe runs unchanged on them.
#
# A frame written on one end is appended to the other end's inbound deque
# as (chan, payload); that end puts itself on the Loop's ready-source list
# and is served by the Loop's fair stage like any ready Pipe, one frame per
# source per round. Delivery is never synchronous inside write_frame, so a
# handler that writes back cannot recurse, and a flooding in-process peer is
# served no faster than a socket.
#
# No copy of immutable payloads: a `bytes` payload (or a read-only
# memoryview spanning a whole bytes object) reaches the peer by reference.
# A mutable buffer (bytearray, writable memoryview) is copied once at write
# time, since the writer may change it afterwards; several parts are joined
# in one copy.
#
# Back-pressure mirrors a Conn: the frames waiting in the peer's deque are
# this end's write buffer. Above `high_water` payload bytes `writable` turns
# False (when_writable waiters are woken once it drains to `low_water`);
# past `write_cap` write_frame raises BufferFullError and queues nothing.
# pause_reading() stops delivery on this end (the peer's frames wait, and
# count against the peer's high watermark).
#
# Closing: close() stops this end accepting writes; frames it already wrote
# are still delivered to the peer, which then sees end of stream and closes
# itself: on_close(None) on each end exactly once, after the last frame
# delivered to it. Frames the closing end had not yet delivered are dropped
# (as a socket's unread input is); a peer writing to a closed end gets
# ConnClosedError. abort() closes at once; the peer's on_close gets a
# ConnectionResetError if the aborting end discarded undelivered frames
# (as a socket with unread input sends RST), else None.
#
# Invariants: an end is on the ready list at most once (`_queued`); every
# on_close and when_writable callback runs from a fresh loop callback.
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from .endpoint import Buffer, FrameHandler
from .errors import BufferFullError, ConnClosedError
from .loop import Handle, Loop
from .pipe import DEFAULT_MAX_LEN, PipeStatistics

__all__ = ["MemPipe", "mempipe_pair"]


def _payload(data: Any, more: tuple[Any, ...]) -> bytes:
    """The frame's payload as one immutable bytes object, copying only
    mutable buffers (once) and joined parts (once)."""
    if not more:
        t = type(data)
        if t is bytes:
            return data  # type: ignore[no-any-return,unused-ignore]
        if t is memoryview and data.readonly and type(data.obj) is bytes:
            if data.nbytes == len(data.obj) and data.contiguous:
                return data.obj  # type: ignore[no-any-return,unused-ignore]
        return bytes(_view(data))
    return b"".join([_view(p) for p in (data, *more)])


def _view(data: Any) -> Any:
    if type(data) is bytes or type(data) is bytearray:
        return data
    try:
        return memoryview(data).cast("B")
    except TypeError:
        raise TypeError(
            f"a frame payload must be bytes-like (bytes, bytearray, memoryview), "
            f"not {type(data).__name__}"
        ) from None


class MemPipe:
    """One end of an in-process pipe; see the module header. Made in pairs by
    mempipe_pair()."""

    def __init__(
        self,
        loop: Loop,
        *,
        high_water: int = 1024 * 1024,
        low_water: int | None = None,
        write_cap: int = 128 * 1024 * 1024,
        max_len: int = DEFAULT_MAX_LEN,
    ):
        if low_water is None:
            low_water = high_water // 4
        if not 0 <= low_water <= high_water <= write_cap:
            raise ValueError(
                f"need 0 <= low_water ({low_water}) <= high_water ({high_water})"
                f" <= write_cap ({write_cap})"
            )
        if not 1 <= max_len <= 0xFFFFFFFF:
            raise ValueError(f"max_len must be in 1..{0xFFFFFFFF}, got {max_len}")
        self.loop = loop
        self.high_water = high_water
        self.low_water = low_water
        self.write_cap = write_cap
        self.max_len = max_len
        self.peer: MemPipe | None = None
        self.on_close: Callable[[BaseException | None], Any] | None = None
        self._on_frame: FrameHandler | None = None
        self._inbox: deque[tuple[int, bytes]] = deque()
        self._inbox_bytes = 0  # the peer's write buffer
        self._queued = False
        self._reading = True
        self._eof = False  # the peer closed: close after the inbox drains
        self._closing = False
        self._closed = False
        self._write_paused = False  # our writes into the peer: above high_water
        self._writable_waiters: list[Handle] = []
        self.frames_in = self.frames_out = 0
        self.payload_in = self.payload_out = 0
        loop.adopt(self)

    # -- FrameEndpoint: receiving -----------------------------------------------

    @property
    def on_frame(self) -> FrameHandler | None:
        return self._on_frame

    @on_frame.setter
    def on_frame(self, fn: FrameHandler | None) -> None:
        self._on_frame = fn
        if fn is not None:
            self._maybe_ready()

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._maybe_ready()

    def _maybe_ready(self) -> None:
        if (
            not self._queued
            and not self._closed
            and self._reading
            and self._on_frame is not None
            and (self._inbox or self._eof)
        ):
            self._queued = True
            self.loop.add_ready_source(self)

    def serve(self, limit: int) -> tuple[int, bool]:
        """Deliver up to `limit` frames to on_frame (the Loop's fair stage).
        Returns (delivered, whether more are ready)."""
        inbox = self._inbox
        done = 0
        delivered_bytes = 0
        try:
            while done < limit and inbox:
                cb = self._on_frame
                if cb is None or not self._reading or self._closed:
                    break
                chan, payload = inbox.popleft()
                n = len(payload)
                self._inbox_bytes -= n
                delivered_bytes += n
                self.frames_in += 1
                self.payload_in += n
                done += 1
                try:
                    cb(chan, payload)
                except Exception as exc:
                    self.loop.call_exception_handler(exc, cb)
        finally:
            if delivered_bytes:
                peer = self.peer
                if peer is not None:
                    peer._drained()
        more = bool(inbox) and self._on_frame is not None and self._reading and not self._closed
        if not more:
            self._queued = False
            if self._eof and not inbox and not self._closing:
                self._closing = True
                self._finish(None)
        return done, more

    # -- FrameEndpoint: sending ---------------------------------------------------

    def write_frame(self, chan: int, data: Buffer, *more: Buffer) -> None:
        """Queue one frame for the peer; see the module header. ValueError for
        a bad channel, an empty or too long payload, TypeError for a part that
        is not bytes-like, ConnClosedError once either end is closing,
        BufferFullError past write_cap: all before anything is queued."""
        payload = _payload(data, more)
        self._put([(chan, payload)])

    def write_frames(self, frames: Iterable[tuple[int, Buffer]]) -> None:
        """Queue many frames: all are validated before any is queued."""
        self._put([(chan, _payload(data, ())) for chan, data in frames])

    # Seam: evloop.graph's in-process ports pass message objects (see there).
    def write_item(self, chan: int, item: Any) -> None:
        """Queue any object for the peer's on_frame, by reference: never
        copied or encoded, so it can only travel between two ends in one
        process. len(item) (at least 1) is its weight against the
        watermarks and write_cap. Errors as write_frame."""
        self._put([(chan, item)])

    def _put(self, frames: list[tuple[int, bytes]]) -> None:
        total = 0
        for chan, payload in frames:
            n = len(payload)
            if type(chan) is not int or not 0 <= chan <= 0xFFFF:
                raise ValueError(f"channel must be an int in 0..65535, got {chan!r}")
            if n == 0:
                raise ValueError(f"empty payload on channel {chan}: a frame must carry >= 1 byte")
            if n > self.max_len:
                raise ValueError(
                    f"payload of {n} bytes on channel {chan} exceeds max_len {self.max_len}"
                )
            total += n
        peer = self.peer
        if self._closing or self._closed:
            raise ConnClosedError("this mempipe end is closed")
        if peer is None or peer._closing or peer._closed:
            raise ConnClosedError("the other end of the mempipe is closed")
        if not frames:
            return
        size = peer._inbox_bytes + total
        if size > self.write_cap:
            raise BufferFullError(
                f"{total} more bytes would pass the write cap ({peer._inbox_bytes} queued,"
                f" cap {self.write_cap})"
            )
        peer._inbox.extend(frames)
        peer._inbox_bytes = size
        self.frames_out += len(frames)
        self.payload_out += total
        if size > self.high_water:
            self._write_paused = True
        peer._maybe_ready()

    def flush(self) -> None:
        """Nothing to flush: frames are in the peer's inbox already."""

    @property
    def writable(self) -> bool:
        return not self._write_paused

    @property
    def write_buffered(self) -> int:
        peer = self.peer
        return peer._inbox_bytes if peer is not None else 0

    def when_writable(self, fn: Callable[[], Any]) -> Handle:
        """fn() once, from a fresh loop callback, when writable again (or
        closed): at once if it is. The handle's cancel() withdraws it."""
        if not self._write_paused or self._closing or self._closed:
            return self.loop.call_soon(fn)
        h = Handle(self.loop, fn, ())
        self._writable_waiters.append(h)
        return h

    def _drained(self) -> None:
        # Our peer delivered some of what we wrote.
        if self._write_paused:
            peer = self.peer
            if peer is None or peer._inbox_bytes <= self.low_water:
                self._write_paused = False
                self._wake_writers()

    def _wake_writers(self) -> None:
        waiters, self._writable_waiters = self._writable_waiters, []
        if self.loop.closed:
            return
        for h in waiters:
            if not h.cancelled:
                self.loop.call_soon(h._fn)

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Stop writing and reading; the peer gets what was written, then end
        of stream. on_close(None) follows from a fresh callback."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._finish(None)

    def abort(self) -> None:
        """Close now (Loop.close() calls this)."""
        if self._closed:
            return
        self._closing = True
        self._finish(None)

    def _finish(self, reason: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        dropped = bool(self._inbox)
        self._inbox.clear()
        self._inbox_bytes = 0
        self.loop.disown(self)
        peer = self.peer
        if peer is not None:
            peer._write_paused = False
            peer._wake_writers()
            if not peer._closed:
                if dropped:
                    peer._fail(
                        ConnectionResetError("the other mempipe end aborted with unread frames")
                    )
                else:
                    peer._eof = True
                    peer._maybe_ready()
                    if peer._on_frame is None and not peer._inbox:
                        # Nobody listening and nothing left: end now (a
                        # socket Pipe closes at EOF the same way).
                        peer._closing = True
                        peer._finish(None)
        self._wake_writers()
        if self.on_close is not None and not self.loop.closed:
            self.loop.call_soon(self.on_close, reason)

    def _fail(self, exc: BaseException) -> None:
        self._closing = True
        self._finish(exc)

    # -- coroutines (the same one-line shims a Pipe gets) ----------------------

    def recv(self) -> Coroutine[Any, Any, tuple[int, Any]]:
        """`await end.recv()`: the next (chan, payload); see evloop.streams."""
        from .streams import recv

        return recv(self)

    def send(self, chan: int, data: Buffer, *more: Buffer) -> Coroutine[Any, Any, None]:
        """`await end.send(chan, data)`: write, waiting while not writable."""
        from .streams import send

        return send(self, chan, data, *more)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def closing(self) -> bool:
        return self._closing or self._closed

    def statistics(self) -> PipeStatistics:
        return PipeStatistics(
            self.frames_in, self.frames_out, self.payload_in, self.payload_out, len(self._inbox)
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("closing" if self._closing else "open")
        return f"<MemPipe {state} in={self.frames_in} out={self.frames_out}>"


def mempipe_pair(loop: Loop, **kwargs: Any) -> tuple[MemPipe, MemPipe]:
    """Two connected in-process endpoints (keyword arguments: high_water,
    low_water, write_cap, max_len, applied to both)."""
    a = MemPipe(loop, **kwargs)
    b = MemPipe(loop, **kwargs)
    a.peer = b
    b.peer = a
    return a, b
