# evloop/session/session.py
#
# A Session is this messenger's side of a conversation with one peer
# messenger. It outlives its connections: it owns the priority out-queues,
# the sequence numbers, the messages sent but not acknowledged, the cookies,
# the keepalive and the reconnect backoff, and attaches to a fresh
# connection (a _Link: a Pipe on a Conn, after its handshake) on every
# (re)connect. Ceph's Pipe is the model; its reader and writer threads are
# this object's frame callback and its end-of-turn pull.
#
# Sending. send() appends the message's header and payload to the queue of
# its priority (a list with a head index) and asks for a pull at the end of
# the turn (Loop.call_before_poll). The pull hands messages to the
# connection, requeued (replayed) ones first, then highest priority first,
# FIFO within a priority, while the Conn's write buffer is at or below its
# high watermark (`window`): a run of messages leaves as one slice and one
# join, the only copy of the payloads. When the Conn is fuller the pull
# resumes from Conn.when_writable. So the Conn stays shallow and a message
# keeps its place in the priority order until it is handed over, which is
# when it gets its sequence number ("sent"). Messages sent on a lossless
# session stay in `_sent` (the same two entries) until acknowledged.
#
# Receiving. Data frames carry no sequence number: the n-th data frame that
# arrives on a connection after its handshake is message resume+n, where
# resume is the in_seq this side announced in that handshake (docs/
# session.md). The per-frame path is one closure (_receiver): the channel
# check and the handler call, nothing else. in_seq is not counted per frame:
# the Pipe counts every frame it hands out (frames_in, before or right
# after the call, so a handler that raises never causes a redelivery), and
# each frame of a link goes to exactly one of its handshake handler, the
# data path, the control path or, once detached, a discarding callback; the
# last three but data count theirs, so in_seq = in_seq at attach + frames_in
# - handshake - control - discarded, exact whenever no delivery run is in
# progress (it lags inside a handler by the frames of the current batch).
# One cumulative ACK per turn that delivered data (or piggy-backed on the
# next pull) tells the peer how far we got.
#
# Faults. When the connection fails, what was sent and not acknowledged is
# requeued in front of everything (Ceph's requeue_sent) and out_seq rewinds
# to the last acknowledged number; on the next handshake each side learns
# the other's in_seq and drops what the peer already has (Ceph's
# discard_requeued_up_to), so a resumed session neither loses nor duplicates
# a message. A lossy session is dropped instead and on_reset says how many
# messages went with it.
#
# Invariants: acked <= out_seq; the unacknowledged messages _sent[_sent_head:]
# number out_seq - acked on a lossless session with a link, and there are
# none without one (they are in the replay queue); a frame handed to
# on_frame by a detached link is never counted (the link's Pipe is switched
# to a discarding callback before anything else happens on a fault);
# every timer this object starts is cancelled when it closes.
from __future__ import annotations

import logging
import struct
from bisect import bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from ..conn import Conn
from ..errors import (
    AuthenticationError,
    BufferFullError,
    ConnClosedError,
    ConnectError,
    InjectedFault,
    KeepaliveTimeout,
    ProtocolError,
    SessionError,
    SessionProtocolError,
    SessionReset,
    TruncatedFrameError,
)
from ..future import Future
from ..loop import Handle, TimerHandle
from ..pipe import HEADER_SIZE
from . import wire
from .link import _CLOSED, _OPEN, CONNECTOR, _Link
from .policy import Policy, Throttle
from .wire import SESSION_CHANNEL

if TYPE_CHECKING:
    from .messenger import Messenger

__all__ = ["Session", "SessionStatistics", "PRIO_DEFAULT", "PRIO_HIGHEST", "PRIO_LOWEST"]

log = logging.getLogger("evloop")

PRIO_LOWEST = 0
PRIO_DEFAULT = 127
PRIO_HIGHEST = 255
_ACK = wire.ACK
_pack_ack = wire.pack_ack
_pack_header = struct.Struct(">HI").pack


@dataclass(frozen=True)
class SessionStatistics:
    peer: str
    state: str  # open | connecting | wait | standby | closed
    out_seq: int  # last sequence number handed to a connection
    acked: int  # last sequence number the peer acknowledged
    in_seq: int  # last sequence number received
    queued: int  # messages not sent yet (including requeued ones)
    unacked: int  # sent, not acknowledged yet
    pending_bytes: int  # frame bytes (headers included) queued or unacknowledged
    queued_bytes: int  # of which not sent yet (what `writable` looks at)
    messages_in: int
    messages_out: int  # handed to a connection (a replayed message counts again)
    opens: int  # handshakes completed
    reconnects: int  # opens after the first
    faults: int
    remote_resets: int
    dropped: int  # messages discarded by a lossy fault, a reset or mark_down
    acks_in: int  # ACK frames received
    acks_out: int  # ACK frames sent (one per turn that received data, at most)
    rtt: float | None  # last keepalive round trip, seconds
    last_keepalive_ack: float | None  # loop time of the last keepalive ack


class Session:
    """This messenger's side of a session with one peer (see the module
    header). Made by the Messenger: `messenger.connect(dest)`,
    `send_message(dest, ...)`, or an accepted connection."""

    def __init__(self, m: Messenger, peer: str, policy: Policy, *, local: bool = False):
        self._m = m
        self._loop = m.loop
        self.peer = peer
        self.policy = policy
        self.peer_type: str | None = m.type if local else None
        self.local = local
        self.cookie = wire.new_cookie()
        self.peer_cookie = 0
        self.out_seq = 0
        self.acked = 0
        self._in_seq = 0  # in_seq when _rx attached (or for good, without _rx)
        self._rx: _Link | None = None  # the link whose data frames count on top
        self._in_acked = 0  # the in_seq the peer knows we reached
        # Queued messages are kept as a header and a payload entry each, so
        # the pull hands a run of them to the Conn as one join (the one copy
        # of a payload), and a replay resends the very bytes.
        self._queues: dict[int, _Queue] = {}
        self._dq = self._queue(m.default_priority)
        self._prios: list[int] = []  # negated priorities of active queues, ascending
        # Requeued after a fault, oldest first; sent ahead of every priority.
        self._replay = _Queue(PRIO_HIGHEST + 1)
        # Sent, not acknowledged: entries _sent[_sent_head:], two per message.
        self._sent: list[bytes] = []
        self._sent_head = 0
        self._pending_bytes = 0  # frame bytes queued, requeued or unacknowledged
        self._ubytes = 0  # of which unacknowledged
        # send()'s limits, cached; _cap is -1 once the session is closed.
        self._max = m.max_message
        self._cap = m.send_cap
        self._link: _Link | None = None
        self._connector: _Link | None = None
        self._dialing = 0  # the epoch of a connect in flight, 0 for none
        self._epoch = 0
        self._retry: TimerHandle | None = None
        self._waiting = False  # told WAIT: the peer dials us
        self._backoff = 0.0
        self._pull_pending = False
        self._writable_handle: Handle | None = None
        self._writable_waiters: list[Handle] = []
        self._ka_timer: TimerHandle | None = None
        self._last_heard = 0.0
        self._heard_bytes = -1
        self._last_active = 0.0
        self._active_mark = -1
        self._throttle: Throttle | None = m._throttle_for(policy)
        # The handler lookup, kept current by Messenger._refresh_handler: one
        # handler for every channel (_handler), or a route by channel.
        self._handler: Callable[..., Any] | None = None
        self._route: Callable[..., Any] = m._routes.get
        self._default: Callable[..., Any] = m._unroutable
        m._set_handler(self)
        self._throttled = False
        self.closed = False
        self._in_base = 0
        self.messages_out = 0
        self.opens = 0
        self.faults = 0
        self.remote_resets = 0
        self.dropped = 0
        self.acks_in = 0
        self.acks_out = 0
        self.rtt: float | None = None
        self.last_keepalive_ack: float | None = None

    # -- state --------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.closed:
            return "closed"
        if self._link is not None or self.local:
            return "open"
        if self._waiting:
            return "wait"
        if self._dialing or self._connector is not None or self._retry is not None:
            return "connecting"
        return "standby"

    @property
    def in_seq(self) -> int:
        """The last data message received (see the module header)."""
        rx = self._rx
        if rx is None:
            return self._in_seq
        return self._in_seq + rx.pipe.frames_in - rx.hs - rx.ctrl - rx.discarded

    def _settle_in(self) -> None:
        """Fold the counting link's frames into _in_seq (no run in progress)."""
        if self._rx is not None:
            self._in_seq = self.in_seq
            self._rx = None

    @property
    def is_connected(self) -> bool:
        return self.local or self._link is not None

    @property
    def conn(self) -> Conn | None:
        """The Conn of the open connection, if any."""
        return self._link.conn if self._link is not None else None

    @property
    def queued(self) -> int:
        """Messages not handed to a connection yet (requeued ones included)."""
        n = len(self._replay.items) - self._replay.head
        for q in self._queues.values():
            n += len(q.items) - q.head
        return n >> 1

    @property
    def unacked(self) -> int:
        return (len(self._sent) - self._sent_head) >> 1

    def _has_queued(self) -> bool:
        return bool(self._prios) or self._replay.head < len(self._replay.items)

    @property
    def queued_bytes(self) -> int:
        """Bytes (headers included) queued or requeued, not sent yet."""
        return self._pending_bytes - self._ubytes

    @property
    def writable(self) -> bool:
        """False while more than the messenger's `high_water` bytes are
        queued and not sent yet: a producer should wait (when_writable).
        Like a Conn's write buffer, it drains as the connection takes
        messages; what is sent and unacknowledged counts against send_cap
        only."""
        return self._pending_bytes - self._ubytes <= self._m.high_water and not self.closed

    def when_writable(self, fn: Callable[[], Any]) -> Handle:
        """fn() once, from a fresh loop callback, when the queued bytes fell
        to the messenger's low_water (at once if writable), or the session
        closed."""
        if self.closed or self._pending_bytes - self._ubytes <= self._m.high_water:
            return self._loop.call_soon(fn)
        h = Handle(self._loop, fn, ())
        self._writable_waiters.append(h)
        return h

    def _wake_writers(self) -> None:
        waiters, self._writable_waiters = self._writable_waiters, []
        for h in waiters:
            if not h.cancelled:
                self._loop.call_soon(h._fn)

    # -- sending ------------------------------------------------------------

    def _queue(self, priority: int) -> _Queue:
        q = self._queues.get(priority)
        if q is None:
            q = self._queues[priority] = _Queue(priority)
        return q

    def send(
        self, chan: int, data: bytes | bytearray | memoryview, priority: int | None = None
    ) -> None:
        """Queue one message; never blocks. The payload is copied once, into
        the frame that is kept until the peer acknowledges it. ValueError for
        a channel outside 0..65533, an empty payload or one above
        max_message, or a priority outside 0..255; TypeError for a payload
        that is not bytes-like; BufferFullError past the messenger's
        send_cap; ConnClosedError once the session is closed (marked down,
        reset by a lossy fault, refused, or its messenger closed)."""
        if type(data) is not bytes:
            data = _as_bytes(data)
        n = len(data)
        if not (0 < n <= self._max and type(chan) is int and 0 <= chan < SESSION_CHANNEL):
            raise _bad_message(chan, n, self._max)
        pending = self._pending_bytes + n + HEADER_SIZE
        if pending > self._cap:
            raise self._refuse(n + HEADER_SIZE)
        if priority is None:
            q = self._dq
        elif type(priority) is int and PRIO_LOWEST <= priority <= PRIO_HIGHEST:
            q = self._queue(priority)
        else:
            raise ValueError(f"priority must be an int in 0..255, got {priority!r}")
        if not q.active:
            q.active = True
            insort(self._prios, -q.prio)
        items = q.items
        items.append(_pack_header(chan, n))
        items.append(data)
        self._pending_bytes = pending
        if not self._pull_pending:
            if self._link is not None:
                self._pull_pending = True
                self._loop.call_before_poll(self._pull)
            elif self.local:
                self._pull_pending = True
                self._loop.call_soon(self._local_pull)
            else:
                self._kick()

    def _refuse(self, n: int) -> Exception:
        if self.closed:
            return ConnClosedError(f"session with {self.peer} is closed")
        return BufferFullError(
            f"message of {n} bytes refused: {self._pending_bytes} bytes pending for"
            f" {self.peer}, send_cap is {self._cap}"
        )

    def _pull(self) -> None:
        """Hand queued frames to the connection, replayed ones first, then
        highest priority first, while its write buffer is within the window
        (see the module header). Runs of frames go to the Conn as one join."""
        self._pull_pending = False
        link = self._link
        if link is None:
            return
        conn = link.conn
        if conn.closing:
            return
        in_seq = self.in_seq
        if in_seq > self._in_acked:
            # Piggy-back the ack on this write: one control frame per turn.
            self._in_acked = in_seq
            self.acks_out += 1
            link.pipe.write_frame(SESSION_CHANNEL, _pack_ack(_ACK, in_seq))
        w = conn.write_buffer
        hw = conn.high_water
        write = conn.write
        lossless = not self.policy.lossy
        sent = self._sent
        m = self._m
        cap = m._inject_left if m.inject_socket_failures else -1
        n = nbytes = 0  # messages and bytes handed over
        replay = self._replay
        prios = self._prios
        queues = self._queues
        while n != cap:
            room = hw - w.size
            if room < 0:
                break
            # A queue alone (nothing requeued) holds all the pending bytes
            # that are not waiting for an ack.
            qbytes = -1
            if replay.head < len(replay.items):
                q = replay
            elif prios:
                q = queues[-prios[0]]
                if len(prios) == 1:
                    qbytes = self._pending_bytes - self._ubytes
            else:
                break
            items = q.items
            h = q.head
            avail = len(items) - h  # entries: a header and a payload per message
            if 0 <= qbytes <= room:
                e = avail  # all of it fits
            else:
                e = _fit(items, h, avail, room, qbytes)
            if cap >= 0 and e > 2 * (cap - n):
                e = 2 * (cap - n)
            batch = items[h : h + e]
            data = b"".join(batch)  # the one copy of the payloads
            write(data)
            if lossless:
                sent.extend(batch)
            nb = len(data)
            nbytes += nb
            if lossless:
                self._ubytes += nb
            else:
                self._pending_bytes -= nb  # a lossy session keeps nothing
            n += e >> 1
            h += e
            if h == len(items):
                q.items = []
                q.head = 0
                if q is not replay:
                    q.active = False
                    del prios[0]
            else:
                if h > 8192 and h * 2 > len(items):
                    del items[:h]
                    h = 0
                q.head = h
                break  # the window is full
        if not n:
            return
        self.out_seq += n
        self.messages_out += n
        pipe = link.pipe
        pipe.frames_out += n  # written under the Pipe's framing, past its counters
        pipe.payload_out += nbytes - HEADER_SIZE * n
        if self._writable_waiters and self._pending_bytes - self._ubytes <= m.low_water:
            self._wake_writers()
        if cap > 0:
            m._inject_left -= n
            if m._inject_left == 0:
                m._inject_left = m.inject_socket_failures
                m.injected += 1
                self._inject_fault(link)
                return
        if self._has_queued() and self._writable_handle is None:
            self._writable_handle = conn.when_writable(self._on_writable)

    def _inject_fault(self, link: _Link) -> None:
        """The inject_socket_failures fault: the session sees its connection
        fail now; the socket is shut down the way Ceph's injection does it
        (what was written still reaches the peer, then EOF). The redial
        waits until the peer has closed its side, that is, has read
        everything: otherwise its reading of a large message could be cut
        short by our new connection replacing the old one, again and again,
        and a fault every N messages would make no progress."""
        exc = InjectedFault(
            f"injected socket failure after {self._m.inject_socket_failures} messages",
            peer=self.peer,
        )
        conn = link.conn
        self._link_lost(link, exc, redial=False)
        if conn.closing:
            self._reconnect(exc)
            return
        conn.shutdown_write()
        # Reading goes on (discarded) until the peer closes; a peer that
        # never does is cut off.
        conn.set_idle_timeout(self._m.handshake_timeout)
        conn.when_closed(lambda: self._reconnect(exc))

    def _on_writable(self) -> None:
        self._writable_handle = None
        if not self._pull_pending:
            self._pull()

    def _local_pull(self) -> None:
        """Local delivery (a message to our own address): the same queues and
        order, delivered from the loop's ready queue, a bounded run per turn.
        This direct path is where an in-process pipe pair (mempipe) would
        plug in, once it is on this branch."""
        self._pull_pending = False
        if self.closed:
            return
        dispatch = self._m._dispatch
        budget = self._loop.quantum
        prios = self._prios
        while budget and prios:
            q = self._queues[-prios[0]]
            if q.head == len(q.items):
                q.items = []
                q.head = 0
                q.active = False
                del prios[0]
                continue
            header = q.items[q.head]
            payload = q.items[q.head + 1]
            q.head += 2
            budget -= 1
            self._pending_bytes -= HEADER_SIZE + len(payload)
            self.out_seq += 1
            self.acked += 1
            self.messages_out += 1
            self._in_seq += 1
            try:
                dispatch(self, (header[0] << 8) | header[1], payload)
            except Exception as exc:
                self._loop.call_exception_handler(exc, dispatch)
            if self.closed:
                return
        if self._writable_waiters and self._pending_bytes - self._ubytes <= self._m.low_water:
            self._wake_writers()
        if prios:
            self._pull_pending = True
            self._loop.call_soon(self._local_pull)

    # -- receiving ----------------------------------------------------------

    def _receiver(self) -> Callable[[int, bytes | bytearray], None]:
        """The attached link's on_frame: the per-message hot path of the
        receiving side, a closure so that it costs one channel check and the
        handler call (plus arming the turn's ack, once per turn)."""
        session = self
        control = self._on_control
        arm = self._loop.call_before_poll
        handler = self._handler
        route = self._route
        default = self._default
        flush_ack = self._flush_ack
        armed = False

        def flush() -> None:
            nonlocal armed
            armed = False
            flush_ack()

        th = self._throttle
        if th is not None:

            def on_frame_throttled(chan: int, payload: bytes | bytearray) -> None:
                nonlocal armed
                if chan == SESSION_CHANNEL:
                    control(payload)
                    return
                if not armed:
                    armed = True
                    arm(flush)
                n = len(payload)
                th.take(n)
                h = handler if handler is not None else route(chan, default)
                try:
                    r = h(session, chan, payload)
                except BaseException:
                    th.put(n)
                    raise
                if isinstance(r, Future) and not r.done():
                    # Held until the handler's Future is done.
                    r.add_done_callback(lambda _f: th.put(n))
                else:
                    th.put(n)
                if th.exhausted and not session._throttled:
                    session._throttle_pause()

            return on_frame_throttled

        if handler is not None:

            def on_frame(chan: int, payload: bytes | bytearray) -> None:
                nonlocal armed
                if chan != SESSION_CHANNEL:
                    if not armed:
                        armed = True
                        arm(flush)
                    handler(session, chan, payload)
                else:
                    control(payload)

            return on_frame

        def on_frame_routed(chan: int, payload: bytes | bytearray) -> None:
            nonlocal armed
            if chan != SESSION_CHANNEL:
                if not armed:
                    armed = True
                    arm(flush)
                route(chan, default)(session, chan, payload)
            else:
                control(payload)

        return on_frame_routed

    def _rebuild_receiver(self) -> None:
        """The handlers changed: a new closure for the attached link."""
        if self._link is not None:
            self._link.pipe.on_frame = self._receiver()

    def _throttle_pause(self) -> None:
        assert self._throttle is not None
        self._throttled = True
        if self._link is not None:
            self._link.pipe.pause_reading()
        self._throttle.wait(self._throttle_resume)

    def _throttle_resume(self) -> None:
        self._throttled = False
        self._last_heard = self._loop.time()  # we were not listening
        if self._link is not None and not self._link.conn.closing:
            self._link.pipe.resume_reading()

    def _flush_ack(self) -> None:
        link = self._link
        if link is None or link.conn.closing:
            return
        in_seq = self.in_seq
        if in_seq > self._in_acked:
            self._in_acked = in_seq
            self.acks_out += 1
            link.pipe.write_frame(SESSION_CHANNEL, _pack_ack(_ACK, in_seq))

    def _on_control(self, payload: bytes | bytearray) -> None:
        link = self._link
        assert link is not None
        link.ctrl += 1
        peer = self.peer
        try:
            kind = wire.kind_of(payload, peer)
            if kind == wire.ACK:
                self.acks_in += 1
                self._on_ack(wire.decode_u64(payload, peer))
            elif kind == wire.KEEPALIVE:
                stamp = wire.decode_u64(payload, peer)
                link.send_control(wire.encode_u64(wire.KEEPALIVE_ACK, stamp))
            elif kind == wire.KEEPALIVE_ACK:
                stamp = wire.decode_u64(payload, peer)
                now = self._loop.time()
                sent_at = stamp / 1e9
                if sent_at > now + 1e-6:
                    raise SessionProtocolError(
                        f"KEEPALIVE_ACK echoes a time {sent_at:.6f} s that is in our future"
                        f" (now {now:.6f} s)",
                        peer=peer,
                    )
                self.rtt = max(0.0, now - sent_at)
                self.last_keepalive_ack = now
            elif kind == wire.CLOSE:
                wire.decode_close(payload, peer)
                self._peer_closed()
            elif kind == wire.REFUSE:
                # The peer found a fault in what we sent and says why.
                code, reason = wire.decode_refuse(payload, peer)
                exc = SessionProtocolError(f"peer refused us: {reason}", peer=peer)
                exc.refused_by_peer = True
                link.fail(exc, None)
            else:
                raise SessionProtocolError(f"{wire.KIND_NAMES[kind]} on an open session", peer=peer)
        except SessionError as exc:
            link.fail(exc, wire.REFUSE_PROTOCOL)

    def _on_ack(self, seq: int) -> None:
        acked = self.acked
        if seq <= acked:
            if seq == acked:
                return  # already known (an ack that crossed a resume)
            raise SessionProtocolError(
                f"ACK {seq} goes backwards: {acked} was already acknowledged", peer=self.peer
            )
        if seq > self.out_seq:
            raise SessionProtocolError(
                f"ACK {seq} for messages never sent: only {self.out_seq} were", peer=self.peer
            )
        k = seq - acked
        self.acked = seq
        if self.policy.lossy:
            return
        sent = self._sent
        h = self._sent_head
        e = h + 2 * k
        if e == len(sent):
            nb = sum(map(len, sent[h:])) if h else sum(map(len, sent))
            sent.clear()
            e = 0
        else:
            nb = sum(map(len, sent[h:e]))
            if e > 8192 and e * 2 > len(sent):
                del sent[:e]
                e = 0
        self._sent_head = e
        self._pending_bytes -= nb
        self._ubytes -= nb

    # -- connection lifecycle -------------------------------------------------

    def _kick(self) -> None:
        """Something is to be sent and there is no connection: dial, unless
        this side never dials or a dial is already under way."""
        if self.closed or self.local or self.policy.server or self._link is not None:
            return
        if self._dialing or self._connector is not None or self._retry is not None:
            return
        if self._waiting:
            return  # the peer dials us; the WAIT timer is armed
        self._dial()

    def _dial(self) -> None:
        self._retry = None
        if self.closed or self._link is not None or self._dialing or self._connector:
            return
        self._waiting = False
        self._epoch += 1
        self._dialing = self._epoch
        self._m._dial(self.peer, self._dialed, self._epoch)

    def _dialed(self, epoch: int, conn: Conn | None, exc: BaseException | None) -> None:
        if epoch != self._dialing or self.closed or self._link is not None:
            if conn is not None:
                conn.abort()
            return
        self._dialing = 0
        if conn is None:
            self._dial_failed(None, exc)
            return
        self._connector = _Link(self._m, conn, CONNECTOR, self, self.peer)

    def _abandon_dial(self) -> None:
        """The peer's connection won the race: drop our own attempt."""
        self._dialing = 0
        link, self._connector = self._connector, None
        if link is not None:
            link.detach()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    @property
    def _is_dialing(self) -> bool:
        return bool(self._dialing) or self._connector is not None

    def _dial_failed(self, link: _Link | None, exc: BaseException | None) -> None:
        if link is not None and link is not self._connector:
            return
        self._connector = None
        if self.closed:
            return
        if exc is None:
            exc = ConnectError(f"{self.peer} closed the connection during the session handshake")
        if _is_protocol_error(exc) and not getattr(exc, "refused_by_peer", False):
            self._m._report(exc)
        if isinstance(exc, AuthenticationError):
            self._refused(exc)
            return
        if self.policy.lossy:
            self._drop_lossy(exc)
            return
        m = self._m
        self._backoff = (
            m.initial_backoff if self._backoff == 0 else min(self._backoff * 2, m.max_backoff)
        )
        self._retry = self._loop.call_later(self._backoff, self._dial)

    def _retry_later(self) -> None:
        """Dial again after initial_backoff (a fault the peer caused)."""
        if self.closed or self.local or self.policy.server:
            return
        if self._retry is not None:
            self._retry.cancel()
        self._backoff = self._m.initial_backoff
        self._retry = self._loop.call_later(self._backoff, self._dial)

    def _told_to_wait(self) -> None:
        """The peer's own dial wins the race: it will connect to us. Retry
        after max_backoff in case it never does."""
        self._connector = None
        if self.closed or self._link is not None:
            return
        self._waiting = True
        if self._retry is not None:
            self._retry.cancel()
        self._retry = self._loop.call_later(self._m.max_backoff, self._dial)

    def _refused(self, exc: BaseException) -> None:
        dropped = self._discard_all()
        self._m._close_session(self)
        err = SessionReset(
            f"session with {self.peer} refused: {exc}; {dropped} messages dropped",
            peer=self.peer,
            dropped=dropped,
        )
        err.__cause__ = exc
        self._m._notify("on_refused", self, err)

    def _accept_link(self, link: _Link, c: wire.Connect) -> None:
        """Acceptor side: CONNECT verified; decide resume or new pair."""
        resumed = (
            not self.policy.lossy
            and self.peer_cookie != 0
            and self.peer_cookie == c.cookie
            and c.known == self.cookie
        )
        reset = self.peer_cookie != 0 and self.peer_cookie != c.cookie
        self.peer_type = c.peer_type
        try:
            if resumed:
                self._resume_from(c.in_seq)
        except SessionProtocolError as exc:
            link.fail(exc, wire.REFUSE_PROTOCOL)
            if self._has_queued() and self._retry is None and not self._is_dialing:
                self._retry_later()  # what we hold still has to go
            return
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._waiting = False
        dropped = self._new_pair(c.cookie, reset) if not resumed else 0
        link.send_control(
            wire.encode_accept(
                self.cookie, self.in_seq, resumed, self._m.key, link.peer_nonce, link.nonce
            )
        )
        self._attach(link, resumed, reset, dropped)

    def _accepted(self, link: _Link, a: wire.Accept) -> None:
        """Connector side: the acceptor's verdict arrived. A failure here goes
        through link.fail -> _dial_failed (so _connector is cleared only on
        success)."""
        if link is not self._connector:
            return
        if a.resumed:
            if self.peer_cookie == 0 or a.cookie != self.peer_cookie:
                link.fail(
                    SessionProtocolError(
                        "ACCEPT resumes a session we never had with this peer", peer=self.peer
                    ),
                    wire.REFUSE_PROTOCOL,
                )
                return
            try:
                self._resume_from(a.in_seq)
            except SessionProtocolError as exc:
                link.fail(exc, wire.REFUSE_PROTOCOL)
                return
            self._connector = None
            self._attach(link, True, False, 0)
        else:
            reset = self.peer_cookie != 0
            self._connector = None
            dropped = self._new_pair(a.cookie, reset)
            self._attach(link, False, reset, dropped)

    def _resume_from(self, peer_in_seq: int) -> None:
        """Drop what the peer already has (Ceph's discard_requeued_up_to);
        the next message sent is peer_in_seq + 1."""
        k = peer_in_seq - self.acked
        replay = self._replay
        held = (len(replay.items) - replay.head) >> 1
        if k < 0 or k > held:
            raise SessionProtocolError(
                f"peer resumes after message {peer_in_seq}, but we hold"
                f" {self.acked + 1}..{self.acked + held} (acked {self.acked})",
                peer=self.peer,
            )
        h = replay.head
        nb = sum(map(len, replay.items[h : h + 2 * k]))
        replay.head = h + 2 * k
        if replay.head == len(replay.items):
            replay.items = []
            replay.head = 0
        self._pending_bytes -= nb
        self.acked = self.out_seq = peer_in_seq
        if self._writable_waiters and self._pending_bytes - self._ubytes <= self._m.low_water:
            self._wake_writers()

    def _new_pair(self, peer_cookie: int, reset: bool) -> int:
        """A new session pair: numbering restarts at 1 both ways. If the peer
        restarted (reset), what was queued for its old incarnation is
        discarded under resetcheck, else replayed. Returns the dropped count."""
        dropped = 0
        if reset:
            self.remote_resets += 1
            if self.policy.resetcheck:
                dropped = self._discard_all()
        self.peer_cookie = peer_cookie
        self._settle_in()
        self._in_base += self._in_seq
        self._in_seq = self._in_acked = 0
        self.acked = self.out_seq = 0
        return dropped

    def _attach(self, link: _Link, resumed: bool, reset: bool, dropped: int) -> None:
        link.state = _OPEN
        link.session = self
        if link._timer is not None:
            link._timer.cancel()
            link._timer = None
        self._link = link
        self._waiting = False
        self._backoff = 0.0
        self._settle_in()  # the previous link's count, final now
        self._rx = link
        self._in_acked = self._in_seq
        link.pipe.on_frame = self._receiver()
        if self._throttled:
            link.pipe.pause_reading()
        self.opens += 1
        now = self._loop.time()
        self._last_heard = self._last_active = now
        self._heard_bytes = -1
        self._start_ticks()
        if self._has_queued():
            self._pull_pending = True
            self._loop.call_before_poll(self._pull)
        m = self._m
        m._notify("on_open", self, resumed)
        if reset:
            m._notify("on_remote_reset", self, dropped)

    def _detach(self) -> _Link | None:
        """Forget the open link: requeue what it did not get acknowledged."""
        link, self._link = self._link, None
        if link is None:
            return None
        link.state = _CLOSED
        link.pipe.on_frame = link.discard  # stays the counting link until settled
        if self._ka_timer is not None:
            self._ka_timer.cancel()
            self._ka_timer = None
        if self._writable_handle is not None:
            self._writable_handle.cancel()
            self._writable_handle = None
        sent = self._sent
        if sent:
            # Requeue in front (Ceph's requeue_sent): unacknowledged messages
            # are older than anything still in the replay queue.
            replay = self._replay
            h = self._sent_head
            rest = replay.items[replay.head :]
            replay.items = sent[h:] + rest if h else sent + rest
            replay.head = 0
            self._sent = []
            self._sent_head = 0
            self._ubytes = 0
        self.out_seq = self.acked
        return link

    def _link_lost(
        self,
        link: _Link,
        exc: BaseException | None,
        *,
        replaced: bool = False,
        redial: bool = True,
    ) -> None:
        """The open connection failed (Ceph's fault()). The caller owns the
        Conn (it is closed, or about to be); a replaced link is aborted here."""
        if link is not self._link:
            return
        self._detach()
        if replaced:
            link.conn.abort()
        self.faults += 1
        m = self._m
        if exc is None:
            exc = ConnectionResetError(f"{self.peer} closed the connection")
        protocol = _is_protocol_error(exc)
        if protocol and not getattr(exc, "refused_by_peer", False):
            m._report(exc)
        if self.policy.lossy:
            self._drop_lossy(exc)
            return
        m._notify("on_fault", self, exc)
        if not replaced and redial:
            self._reconnect(exc)

    def _reconnect(self, exc: BaseException) -> None:
        """After a fault: dial again, or wait, per policy."""
        if self.closed or self._link is not None or self._is_dialing or self._retry is not None:
            return
        if self.policy.server or (self.policy.standby and not self._has_queued()):
            return  # standby: wait for the peer, or for something to send
        if _is_protocol_error(exc):
            self._retry_later()  # a peer that broke the protocol is not redialed at once
            return
        self._dial()  # the first reconnect after a fault is immediate

    def _peer_closed(self) -> None:
        """The peer closed the connection in order (idle or shutdown)."""
        link = self._detach()
        if link is None:
            return
        link.conn.close()
        if self._has_queued():
            self._retry_later()

    def _drop_lossy(self, exc: BaseException) -> None:
        dropped = self._discard_all()
        self._m._close_session(self)
        err = SessionReset(
            f"lossy session with {self.peer} failed: {exc}; {dropped} messages dropped",
            peer=self.peer,
            dropped=dropped,
        )
        err.__cause__ = exc
        self._m._notify("on_reset", self, err)

    def _discard_all(self) -> int:
        n = self.queued + self.unacked
        self._replay.items = []
        self._replay.head = 0
        self._sent = []
        self._sent_head = 0
        for q in self._queues.values():
            q.items = []
            q.head = 0
            q.active = False
        self._prios.clear()
        self._ubytes = 0
        self._pending_bytes = 0
        self.dropped += n
        if self._writable_waiters:
            self._wake_writers()
        return n

    # -- keepalive and idle -----------------------------------------------------

    def _start_ticks(self) -> None:
        m = self._m
        period = m.keepalive_interval or (m.idle_timeout / 4 if m.idle_timeout else None)
        if period:
            self._ka_timer = self._loop.call_later(period, self._tick)

    def _tick(self) -> None:
        self._ka_timer = None
        link = self._link
        if link is None or self.closed:
            return
        m = self._m
        loop = self._loop
        now = loop.time()
        heard = link.conn.bytes_in
        if heard != self._heard_bytes or self._throttled:
            self._heard_bytes = heard
            self._last_heard = now
        active = self.in_seq + self.out_seq + self._in_base + self.messages_out
        if active != self._active_mark:
            self._active_mark = active
            self._last_active = now
        iv = m.keepalive_interval
        if iv:
            window = iv * m.keepalive_misses
            if now - self._last_heard >= window - 1e-9:
                link.fail(
                    KeepaliveTimeout(
                        f"{self.peer} sent nothing for {now - self._last_heard:g} s"
                        f" ({m.keepalive_misses} keepalive intervals of {iv:g} s)",
                        peer=self.peer,
                        timeout=window,
                    ),
                    None,
                )
                return
        if m.idle_timeout and now - self._last_active >= m.idle_timeout - 1e-9:
            self._idle_close()
            return
        if iv:
            link.send_control(wire.encode_u64(wire.KEEPALIVE, max(0, int(now * 1e9))))
        period = iv or (m.idle_timeout / 4 if m.idle_timeout else None)
        if period:
            self._ka_timer = loop.call_later(period, self._tick)

    def _idle_close(self) -> None:
        link = self._detach()
        if link is None:
            return
        link.send_control(wire.encode_close(wire.CLOSE_IDLE))
        link.conn.close()
        self._m.idle_closes += 1

    # -- ending ---------------------------------------------------------------

    def mark_down(self) -> int:
        """Drop the session now: close its connection, discard every queued
        and unacknowledged message (returns how many), forget the peer. No
        callback is called. The next send to the peer starts a new session,
        and the peer sees a reset when it reconnects."""
        if self.closed:
            return 0
        n = self._discard_all()
        self._m._close_session(self)
        return n

    def _close(self, *, graceful: bool = False) -> None:
        """Release everything (the messenger's side of mark_down/close)."""
        if self.closed:
            return
        self.closed = True
        self._cap = -1  # send() refuses from now on
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._dialing = 0
        link = self._detach()
        if link is not None:
            if graceful and not link.conn.closing:
                link.send_control(wire.encode_close(wire.CLOSE_SHUTDOWN))
                link.conn.close()
            else:
                link.conn.abort()
        conn_link, self._connector = self._connector, None
        if conn_link is not None:
            conn_link.detach()
        if self._throttle is not None:
            self._throttle.forget(self._throttle_resume)
        self._wake_writers()

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            peer=self.peer,
            state=self.state,
            out_seq=self.out_seq,
            acked=self.acked,
            in_seq=self.in_seq,
            queued=self.queued,
            unacked=self.unacked,
            pending_bytes=self._pending_bytes,
            queued_bytes=self._pending_bytes - self._ubytes,
            messages_in=self._in_base + self.in_seq,
            messages_out=self.messages_out,
            opens=self.opens,
            reconnects=max(0, self.opens - 1),
            faults=self.faults,
            remote_resets=self.remote_resets,
            dropped=self.dropped,
            acks_in=self.acks_in,
            acks_out=self.acks_out,
            rtt=self.rtt,
            last_keepalive_ack=self.last_keepalive_ack,
        )

    def __repr__(self) -> str:
        return (
            f"<Session {self.peer} {self.state} out={self.out_seq} acked={self.acked}"
            f" in={self.in_seq} queued={self.queued}>"
        )


def _is_protocol_error(exc: BaseException) -> bool:
    """A peer that broke the protocol (or failed authentication), as opposed
    to a connection that merely failed."""
    if isinstance(exc, (SessionProtocolError, AuthenticationError)):
        return True
    return isinstance(exc, ProtocolError) and not isinstance(exc, TruncatedFrameError)


class _Queue:
    """One priority's messages, FIFO: items[head:] holds a header and a
    payload per message (a list with a head index, so a run of messages is
    taken with one slice and leaves as one join)."""

    __slots__ = ("prio", "items", "head", "active")

    def __init__(self, prio: int):
        self.prio = prio
        self.items: list[bytes] = []
        self.head = 0
        self.active = False  # listed in Session._prios


def _fit(items: list[bytes], h: int, avail: int, room: int, qbytes: int) -> int:
    """How many entries from items[h:] (a header and a payload per message)
    make the most whole messages that fit in `room` bytes, at least one. With
    the queue's total (qbytes >= 0) the average message size gives a guess
    that one C-speed sum confirms (messages of one size, the common case);
    otherwise prefix sums in growing chunks find it."""
    if qbytes > 0:
        guess = 2 * int(room / (qbytes / (avail >> 1)))
        if 2 <= guess < avail and sum(map(len, items[h : h + guess])) <= room:
            return guess
    total = k = 0
    step = 128
    while k < avail:
        chunk = items[h + k : h + k + step]
        sums = list(accumulate(map(len, chunk), initial=total))
        i = bisect_right(sums, room) - 1  # entries of this chunk that fit
        if i < len(chunk):
            return max(2, (k + i) & ~1)
        k += len(chunk)
        total = sums[-1]
        step *= 4
    return max(2, k & ~1)


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, str):
        raise TypeError("a message payload must be bytes-like, got str")
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise TypeError(
            f"a message payload must be bytes-like, got {type(data).__name__}"
        ) from None


def _bad_message(chan: Any, n: int, max_message: int) -> ValueError:
    if type(chan) is not int or not 0 <= chan < SESSION_CHANNEL:
        return ValueError(
            f"channel must be an int in 0..{SESSION_CHANNEL - 1}, got {chan!r}"
            f" ({SESSION_CHANNEL} and 65535 are reserved)"
        )
    return ValueError(f"payload of {n} bytes on channel {chan}: must be 1..{max_message}")
