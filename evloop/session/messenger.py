# evloop/session/messenger.py
#
# A Messenger is a named endpoint with an address (a TCP host:port or a
# Unix path) that keeps one Session per peer messenger and dispatches the
# messages that arrive to handlers (Ceph's SimpleMessenger). send_message()
# looks the destination's session up or makes one, which dials when it has
# something to send (Ceph's _lookup_pipe / connect_rank); a message to our
# own address is delivered locally, without a socket, in the same order
# (Ceph's local_delivery).
#
# Identity. A messenger's address string is its identity: peers announce it
# in the handshake and sessions are keyed by it, so spell an address the
# same way everywhere (use `messenger.address`, the canonical form after
# binding). A messenger without an address can dial but cannot be dialed;
# it is known to its peers as "anon:<random hex>".
#
# Accepting. Every accepted connection runs the handshake (docs/
# session.md); the peer's CONNECT names its address, and the messenger
# attaches the connection to that peer's session, replacing a connection
# the session still holds (the peer reconnected after a fault it saw
# first). Two messengers that dial each other at once converge on one
# connection: the one dialed by the lower address (string order) wins, the
# other side is told WAIT (and retries after max_backoff if the winner never
# arrives), the same rule applied on both ends.
#
# Invariants: a session is in `_sessions` iff it is not closed; close()
# leaves no fd, timer or connection behind (the Loop adopts the messenger,
# so Loop.close() aborts it); every error a peer causes is reported once,
# to on_error (default: the loop's exception handler), and closes only the
# connection that carried it.
from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..conn import Conn
from ..errors import ConnClosedError, SessionError, SessionProtocolError, UnroutableFrame
from ..loop import Loop
from ..pipe import DEFAULT_MAX_LEN
from ..server import Server, connect_tcp, connect_unix, listen_tcp, listen_unix
from . import wire
from .link import ACCEPTOR, CONNECTOR, _Link
from .policy import Policy, Throttle
from .session import PRIO_DEFAULT, Session
from .wire import SESSION_CHANNEL

__all__ = ["Messenger", "MessengerStatistics", "parse_address", "MessageHandler"]

log = logging.getLogger("evloop")

MessageHandler = Callable[[Session, int, bytes | bytearray], Any]

_MAX_MESSAGE = 64 * 1024 * 1024


def parse_address(address: str) -> tuple[str, Any]:
    """("tcp", (host, port)) or ("unix", path) for "tcp:HOST:PORT" (an IPv6
    host in brackets) or "unix:PATH"; ValueError for anything else."""
    if not isinstance(address, str):
        raise TypeError(f"an address must be a str, got {type(address).__name__}")
    if address.startswith("tcp:"):
        host, sep, port = address[4:].rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"a TCP address is 'tcp:HOST:PORT', got {address!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return "tcp", (host, int(port))
    if address.startswith("unix:") and len(address) > 5:
        return "unix", address[5:]
    raise ValueError(f"an address is 'tcp:HOST:PORT' or 'unix:PATH', got {address!r}")


def _format_tcp(host: str, port: int) -> str:
    return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"


@dataclass(frozen=True)
class MessengerStatistics:
    address: str
    sessions: int
    connected: int  # sessions with an open connection
    links: int  # connections, open or handshaking
    accepted: int  # connections accepted
    races: int  # simultaneous dials resolved
    protocol_errors: int  # errors reported to on_error
    injected: int  # injected socket failures
    idle_closes: int


def _positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value > 0 and math.isfinite(value))
    ):
        raise ValueError(
            f"{name} must be a finite number > 0{' or None' if allow_none else ''}, got {value!r}"
        )


class Messenger:
    """A named endpoint that sends messages to other messengers over lossless
    (or lossy) sessions. See the module header and docs/session.md.

    `address`: "tcp:HOST:PORT" (port 0 picks one; see .address after) or
    "unix:PATH" to listen on, or None to only dial. `type` is announced to
    peers, which pick the policy for us by it (set_policy). `key` (bytes or
    str): a shared secret; both ends must have the same one, or no key.

    Callbacks (attributes; each receives the Session first):
      on_message(session, chan, payload)  a message arrived (or route())
      on_open(session, resumed)           a connection completed its handshake
      on_fault(session, exc)              a lossless session's connection failed
                                          (it reconnects or waits per policy)
      on_reset(session, SessionReset)     a lossy session failed: its queued and
                                          in-flight messages are dropped (logged
                                          as a warning if unset)
      on_remote_reset(session, dropped)   the peer restarted (new cookie)
      on_refused(session, SessionReset)   authentication failed (the cause is
                                          an AuthenticationError); the session
                                          is closed (loop exception handler if unset)
      on_error(exc)                       a peer broke the protocol (default:
                                          the loop's exception handler)
    """

    def __init__(
        self,
        loop: Loop,
        address: str | None = None,
        *,
        type: str = "peer",
        policy: Policy | None = None,
        key: bytes | str | None = None,
        on_message: MessageHandler | None = None,
        default_priority: int = PRIO_DEFAULT,
        keepalive_interval: float | None = 5.0,
        keepalive_misses: int = 3,
        idle_timeout: float | None = 900.0,
        initial_backoff: float = 0.2,
        max_backoff: float = 15.0,
        handshake_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        window: int = 1024 * 1024,
        high_water: int = 1024 * 1024,
        low_water: int | None = None,
        send_cap: int = 128 * 1024 * 1024,
        max_message: int = DEFAULT_MAX_LEN,
        inject_socket_failures: int = 0,
    ):
        _positive("keepalive_interval", keepalive_interval)
        _positive("idle_timeout", idle_timeout)
        _positive("initial_backoff", initial_backoff, allow_none=False)
        _positive("max_backoff", max_backoff, allow_none=False)
        _positive("handshake_timeout", handshake_timeout, allow_none=False)
        _positive("connect_timeout", connect_timeout, allow_none=False)
        if max_backoff < initial_backoff:
            raise ValueError(f"max_backoff {max_backoff} < initial_backoff {initial_backoff}")
        if type is None or not isinstance(type, str) or not 0 < len(type.encode()) <= wire.MAX_TYPE:
            raise ValueError(f"type must be a str of 1..{wire.MAX_TYPE} bytes, got {type!r}")
        if not isinstance(keepalive_misses, int) or keepalive_misses < 1:
            raise ValueError(f"keepalive_misses must be an int >= 1, got {keepalive_misses!r}")
        if not isinstance(default_priority, int) or not 0 <= default_priority <= 255:
            raise ValueError(f"default_priority must be in 0..255, got {default_priority!r}")
        if not isinstance(window, int) or not 1024 <= window <= 64 * 1024 * 1024:
            raise ValueError(f"window must be an int of 1024..64 MiB bytes, got {window!r}")
        if low_water is None:
            low_water = high_water // 4
        if not 0 <= low_water <= high_water <= send_cap:
            raise ValueError(
                f"need 0 <= low_water ({low_water}) <= high_water ({high_water})"
                f" <= send_cap ({send_cap})"
            )
        # A run handed to a Conn is at most window + one message: with both at
        # most 64 MiB it always fits a Conn's 128 MiB write cap.
        if not isinstance(max_message, int) or not 1 <= max_message <= _MAX_MESSAGE:
            raise ValueError(f"max_message must be in 1..{_MAX_MESSAGE}, got {max_message!r}")
        if not isinstance(inject_socket_failures, int) or inject_socket_failures < 0:
            raise ValueError(
                f"inject_socket_failures must be an int >= 0, got {inject_socket_failures!r}"
            )
        if isinstance(key, str):
            key = key.encode()
        if key is not None and (not isinstance(key, bytes) or not key):
            raise ValueError("key must be non-empty bytes or str, or None")
        self.loop = loop
        self.type = type
        self.policy = policy or Policy.lossless_peer()
        self.key: bytes | None = key
        self._sessions: dict[str, Session] = {}
        self._routes: dict[int, MessageHandler] = {}
        self._on_message: MessageHandler | None = None
        self.on_message = on_message
        self.on_open: Callable[[Session, bool], Any] | None = None
        self.on_fault: Callable[[Session, BaseException], Any] | None = None
        self.on_reset: Callable[[Session, BaseException], Any] | None = None
        self.on_remote_reset: Callable[[Session, int], Any] | None = None
        self.on_refused: Callable[[Session, BaseException], Any] | None = None
        self.on_error: Callable[[BaseException], Any] | None = None
        self.default_priority = default_priority
        self.keepalive_interval = keepalive_interval
        self.keepalive_misses = keepalive_misses
        self.idle_timeout = idle_timeout
        self.initial_backoff = float(initial_backoff)
        self.max_backoff = float(max_backoff)
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        self.window = window
        self.high_water = high_water
        self.low_water = low_water
        self.send_cap = send_cap
        self.max_message = max_message
        self.inject_socket_failures = inject_socket_failures
        self._inject_left = inject_socket_failures
        self._policies: dict[str, Policy] = {}
        self._throttles: dict[Policy, Throttle] = {}
        self._links: set[_Link] = set()
        self._conn_kwargs: dict[str, Any] = {"high_water": window, "low_water": window // 4}
        self.closed = False
        self.accepted = 0
        self.races = 0
        self.protocol_errors = 0
        self.injected = 0
        self.idle_closes = 0
        self._server: Server | None = None
        if address is None:
            self.address = f"anon:{wire.new_cookie():016x}"
        else:
            kind, where = parse_address(address)
            if kind == "tcp":
                host, port = where
                self._server = listen_tcp(
                    loop, host, port, self._on_conn, conn_kwargs=self._conn_kwargs
                )
                self.address = _format_tcp(host, self._server.port)
            else:
                self._server = listen_unix(
                    loop, where, self._on_conn, conn_kwargs=self._conn_kwargs
                )
                self.address = address
        loop.adopt(self)

    # -- policies and handlers --------------------------------------------------

    def set_policy(self, peer_type: str, policy: Policy) -> None:
        """The policy for sessions accepted from peers that announce
        `peer_type` (others get `self.policy`)."""
        self._policies[peer_type] = policy

    def policy_for(self, peer_type: str | None) -> Policy:
        if peer_type is None:
            return self.policy
        return self._policies.get(peer_type, self.policy)

    def _throttle_for(self, policy: Policy) -> Throttle | None:
        if policy.throttle_bytes is None and policy.throttle_messages is None:
            return None
        th = self._throttles.get(policy)
        if th is None:
            th = self._throttles[policy] = Throttle(policy.throttle_bytes, policy.throttle_messages)
        return th

    def throttle(self, policy: Policy) -> Throttle | None:
        """The Throttle shared by this messenger's sessions of `policy`."""
        return self._throttle_for(policy)

    @property
    def on_message(self) -> MessageHandler | None:
        """handler(session, chan, payload) for messages on channels without a
        route (see route())."""
        return self._on_message

    @on_message.setter
    def on_message(self, fn: MessageHandler | None) -> None:
        self._on_message = fn
        self._refresh_handler()

    def _refresh_handler(self) -> None:
        for session in self._sessions.values():
            self._set_handler(session)

    def _set_handler(self, session: Session) -> None:
        # A session looks up the handler for every message: with no routes it
        # is the application's on_message itself, one call and no lookup;
        # with routes, one dict lookup with on_message as the default.
        default = self._on_message
        session._handler = default if not self._routes else None
        session._default = default if default is not None else self._unroutable
        session._rebuild_receiver()

    def _unroutable(self, session: Session, chan: int, payload: bytes | bytearray) -> None:
        raise UnroutableFrame(
            f"message of {len(payload)} bytes on channel {chan} from {session.peer}:"
            " no route and no on_message",
            channel=chan,
        )

    def route(self, chan: int, handler: MessageHandler) -> None:
        """Messages on `chan` go to handler(session, chan, payload) instead
        of on_message. ValueError if the channel is taken or reserved."""
        if type(chan) is not int or not 0 <= chan < SESSION_CHANNEL:
            raise ValueError(f"channel must be an int in 0..{SESSION_CHANNEL - 1}, got {chan!r}")
        if chan in self._routes:
            raise ValueError(f"channel {chan} already has a route")
        self._routes[chan] = handler
        self._refresh_handler()

    def unroute(self, chan: int) -> None:
        self._routes.pop(chan, None)
        self._refresh_handler()

    def _dispatch(self, session: Session, chan: int, payload: bytes | bytearray) -> Any:
        h = self._routes.get(chan) if self._routes else None
        if h is None:
            h = self._on_message
            if h is None:
                raise UnroutableFrame(
                    f"message of {len(payload)} bytes on channel {chan} from {session.peer}:"
                    " no route and no on_message",
                    channel=chan,
                )
        return h(session, chan, payload)

    def _notify(self, name: str, session: Session, arg: Any) -> None:
        cb = getattr(self, name)
        if cb is None:
            if name == "on_reset":
                log.warning("evloop: %s", arg)
            elif name == "on_refused":
                self.loop.call_exception_handler(arg, self)
            return
        try:
            cb(session, arg)
        except Exception as exc:
            self.loop.call_exception_handler(exc, cb)

    def _report(self, exc: BaseException) -> None:
        self.protocol_errors += 1
        cb = self.on_error
        if cb is None:
            self.loop.call_exception_handler(exc, self)
            return
        try:
            cb(exc)
        except Exception as inner:
            self.loop.call_exception_handler(inner, cb)

    # -- sessions -----------------------------------------------------------------

    def session(self, dest: str) -> Session | None:
        return self._sessions.get(dest)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def connect(self, dest: str, *, policy: Policy | None = None) -> Session:
        """The session with `dest`, made (with `policy`, default self.policy)
        and dialed now if there is none. A session that exists keeps its
        policy."""
        s = self._sessions.get(dest)
        if s is None:
            s = self._new_session(dest, policy)
        s._kick()
        return s

    def _new_session(self, dest: str, policy: Policy | None) -> Session:
        if self.closed:
            raise ConnClosedError(f"messenger {self.address} is closed")
        if dest == self.address:
            s = Session(self, dest, policy or self.policy, local=True)
        else:
            if dest.startswith("anon:"):
                raise SessionError(
                    f"{dest} has no address to dial: it can only be reached while it is"
                    " connected to us",
                    peer=dest,
                )
            parse_address(dest)
            policy = policy or self.policy
            if policy.server:
                raise SessionError(
                    f"no session with {dest}, and a server policy never dials",
                    peer=dest,
                )
            s = Session(self, dest, policy)
        self._sessions[dest] = s
        return s

    def send_message(
        self,
        dest: str,
        chan: int,
        data: bytes | bytearray | memoryview,
        priority: int | None = None,
    ) -> None:
        """Queue a message for the messenger at `dest` (see Session.send for
        the errors), opening a session (and a connection) if there is none."""
        s = self._sessions.get(dest)
        if s is None:
            s = self._new_session(dest, None)
        s.send(chan, data, priority)

    def is_connected(self, dest: str) -> bool:
        s = self._sessions.get(dest)
        return s is not None and s.is_connected

    def mark_down(self, dest: str) -> int:
        """Drop the session with `dest` (Session.mark_down); returns how many
        messages were discarded (0 if there was no session)."""
        s = self._sessions.get(dest)
        return 0 if s is None else s.mark_down()

    def _close_session(self, s: Session) -> None:
        if self._sessions.get(s.peer) is s:
            del self._sessions[s.peer]
        s._close()

    # -- connections ----------------------------------------------------------------

    def _dial(
        self,
        dest: str,
        callback: Callable[[int, Conn | None, BaseException | None], Any],
        epoch: int,
    ) -> None:
        kind, where = parse_address(dest)

        def done(conn: Conn | None, exc: BaseException | None) -> None:
            if conn is not None and self.closed:
                conn.abort()
                return
            callback(epoch, conn, exc)

        if kind == "tcp":
            host, port = where
            connect_tcp(
                self.loop, host, port, done, timeout=self.connect_timeout, **self._conn_kwargs
            )
        else:
            connect_unix(self.loop, where, done, timeout=self.connect_timeout, **self._conn_kwargs)

    def _on_conn(self, conn: Conn) -> None:
        if self.closed:
            conn.abort()
            return
        sock = conn.socket
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.accepted += 1
        _Link(self, conn, ACCEPTOR, None, "")

    def _accept(self, link: _Link, c: wire.Connect) -> None:
        """A verified CONNECT on an accepted connection: find the session,
        settle a race, attach."""
        peer = c.address
        if peer == self.address:
            link.fail(
                SessionProtocolError(f"peer claims our own address {peer}", peer=peer),
                wire.REFUSE_PROTOCOL,
            )
            return
        s = self._sessions.get(peer)
        if s is not None:
            ours = s._is_dialing or (s._link is not None and s._link.role == CONNECTOR)
            if ours:
                # Both dialed: the connection dialed by the lower address wins.
                self.races += 1
                if peer < self.address:
                    s._abandon_dial()
                else:
                    link.send_control(wire.encode_wait(self.key, link.peer_nonce, link.nonce))
                    link._lost(None, quiet=True)
                    link.conn.close()
                    return
            if s._link is not None:
                s._link_lost(
                    s._link,
                    ConnectionResetError(f"{peer} reconnected: its old connection is replaced"),
                    replaced=True,
                )
                s = self._sessions.get(peer)  # a lossy session is gone now
        if s is None:
            if self.closed:
                link.fail(ConnClosedError("messenger is closed"), None)
                return
            s = Session(self, peer, self.policy_for(c.peer_type))
            self._sessions[peer] = s
        s._accept_link(link, c)

    # -- lifecycle ------------------------------------------------------------------

    def close(self, *, graceful: bool = True) -> None:
        """Stop listening, close every session (with graceful=True an open
        connection is told CLOSE and flushed first; its peer goes to standby),
        drop every queued message. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._server is not None:
            self._server.close()
        for s in list(self._sessions.values()):
            s._close(graceful=graceful)
        self._sessions.clear()
        for link in list(self._links):
            if not link.closed:
                link.detach()  # a handshake in progress
        self.loop.disown(self)

    def abort(self) -> None:
        """close(graceful=False): what Loop.close() calls."""
        self.close(graceful=False)

    def __enter__(self) -> Messenger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def statistics(self) -> MessengerStatistics:
        return MessengerStatistics(
            address=self.address,
            sessions=len(self._sessions),
            connected=sum(1 for s in self._sessions.values() if s.is_connected),
            links=len(self._links),
            accepted=self.accepted,
            races=self.races,
            protocol_errors=self.protocol_errors,
            injected=self.injected,
            idle_closes=self.idle_closes,
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._sessions)} sessions"
        return f"<Messenger {self.address} {state}>"
