# evloop/session/link.py
#
# _Link: one connection of a messenger, a Pipe on a Conn, through its
# handshake (docs/session.md) and then as its session's transport. Both
# ends send HELLO at once; the connector answers the acceptor's HELLO with
# CONNECT; the acceptor verifies it and lets the Messenger decide (resume,
# new pair, WAIT), the connector applies the ACCEPT. Any frame of the wrong
# kind, size or channel is a SessionProtocolError; a wrong MAC an
# AuthenticationError; both are answered with REFUSE (the reason) and close
# only this connection.
#
# Invariants: a link ends exactly once (_lost), telling its session or
# messenger; every frame its Pipe hands out goes to exactly one of the
# handshake handler (counted in `hs`), the session's data path, its
# control path (`ctrl`) or, once detached, `discard` (`discarded`), which
# is what lets the session derive in_seq from the Pipe's frames_in.
from __future__ import annotations

from typing import TYPE_CHECKING

from ..conn import Conn
from ..errors import (
    AuthenticationError,
    BufferFullError,
    ConnClosedError,
    ConnectError,
    ProtocolError,
    SessionError,
    SessionProtocolError,
)
from ..loop import TimerHandle
from ..pipe import Pipe
from . import wire
from .wire import SESSION_CHANNEL

if TYPE_CHECKING:
    from .messenger import Messenger
    from .session import Session

__all__ = ["CONNECTOR", "ACCEPTOR"]

# Link states.
_HELLO_WAIT = 0  # both: waiting for the peer's HELLO
_CONNECT_WAIT = 1  # acceptor: waiting for CONNECT
_REPLY_WAIT = 2  # connector: waiting for ACCEPT / WAIT / REFUSE
_OPEN = 3  # attached to its session
_CLOSED = 4

CONNECTOR = "connector"
ACCEPTOR = "acceptor"


class _Link:
    """One connection of a messenger: a Pipe on a Conn, its handshake, and
    then its session's frames. See docs/session.md for the handshake."""

    __slots__ = (
        "m", "conn", "pipe", "role", "session", "peer", "state", "nonce", "peer_nonce",
        "_timer", "_error", "hs", "ctrl", "discarded", "__weakref__",
    )  # fmt: skip

    def __init__(self, m: Messenger, conn: Conn, role: str, session: Session | None, peer: str):
        self.m = m
        self.conn = conn
        self.role = role
        self.session = session  # the dialing session (connector), or once attached
        self.peer = peer
        self.state = _HELLO_WAIT
        self.nonce = wire.new_nonce()
        self.peer_nonce = b""
        self._error: BaseException | None = None
        # Frames delivered to the handshake, control and discarding paths
        # (see the module header: in_seq is derived from them).
        self.hs = 0
        self.ctrl = 0
        self.discarded = 0
        self.pipe = Pipe(
            conn,
            self._on_handshake_frame,
            on_error=self._on_pipe_error,
            on_close=self._on_close,
            max_len=m.max_message,
        )
        self._timer: TimerHandle | None = m.loop.call_later(
            m.handshake_timeout, self._handshake_timeout
        )
        m._links.add(self)
        self.pipe.write_frame(SESSION_CHANNEL, wire.encode_hello(m.key is not None, self.nonce))

    # -- handshake ----------------------------------------------------------

    def _on_handshake_frame(self, chan: int, payload: bytes | bytearray) -> None:
        self.hs += 1
        if self.state >= _OPEN:
            return
        try:
            if chan != SESSION_CHANNEL:
                raise SessionProtocolError(
                    f"data frame on channel {chan} before the session handshake finished",
                    peer=self.peer,
                )
            kind = wire.kind_of(payload, self.peer)
            if kind == wire.REFUSE:
                self._refused(payload)
            elif self.state == _HELLO_WAIT:
                self._on_hello(kind, payload)
            elif self.state == _CONNECT_WAIT:
                self._on_connect(kind, payload)
            else:
                self._on_reply(kind, payload)
        except SessionError as exc:
            code = (
                wire.REFUSE_AUTH if isinstance(exc, AuthenticationError) else wire.REFUSE_PROTOCOL
            )
            self.fail(exc, code)

    def _on_hello(self, kind: int, payload: bytes | bytearray) -> None:
        if kind != wire.HELLO:
            raise SessionProtocolError(
                f"expected HELLO, got {wire.KIND_NAMES[kind]}", peer=self.peer
            )
        hello = wire.decode_hello(payload, self.peer)
        if hello.version != wire.VERSION:
            raise SessionProtocolError(
                f"peer speaks session protocol version {hello.version}, we speak {wire.VERSION}",
                peer=self.peer,
            )
        ours = self.m.key is not None
        if hello.has_key != ours:
            raise AuthenticationError(
                "authentication mismatch: "
                + ("we require a shared key and the peer has none" if ours else
                   "the peer requires a shared key and we have none"),
                peer=self.peer,
            )  # fmt: skip
        self.peer_nonce = hello.nonce
        if self.role == CONNECTOR:
            s = self.session
            assert s is not None
            self.pipe.write_frame(
                SESSION_CHANNEL,
                wire.encode_connect(
                    s.cookie, s.peer_cookie, s.in_seq, s.policy.lossy, self.m.type,
                    self.m.address, self.m.key, self.peer_nonce, self.nonce,
                ),
            )  # fmt: skip
            self.state = _REPLY_WAIT
        else:
            self.state = _CONNECT_WAIT

    def _on_connect(self, kind: int, payload: bytes | bytearray) -> None:
        if kind != wire.CONNECT:
            raise SessionProtocolError(
                f"expected CONNECT, got {wire.KIND_NAMES[kind]}", peer=self.peer
            )
        c = wire.decode_connect(payload, self.peer)
        if not wire.check_mac(
            self.m.key, b"C", self.nonce, self.peer_nonce, c.body, c.proof, self.peer
        ):
            raise AuthenticationError(
                f"peer claiming to be {c.address!r} failed authentication (wrong key)",
                peer=c.address,
            )
        self.peer = c.address
        self.m._accept(self, c)

    def _on_reply(self, kind: int, payload: bytes | bytearray) -> None:
        s = self.session
        assert s is not None
        if kind == wire.ACCEPT:
            a = wire.decode_accept(payload, self.peer)
            if not wire.check_mac(
                self.m.key, b"A", self.nonce, self.peer_nonce, a.body, a.proof, self.peer
            ):
                raise AuthenticationError(
                    f"peer at {self.peer} failed authentication (wrong key)", peer=self.peer
                )
            s._accepted(self, a)
        elif kind == wire.WAIT:
            body, proof = wire.decode_wait(payload, self.peer)
            if not wire.check_mac(
                self.m.key, b"W", self.nonce, self.peer_nonce, body, proof, self.peer
            ):
                raise AuthenticationError(
                    f"peer at {self.peer} failed authentication (wrong key)", peer=self.peer
                )
            self._lost(None, quiet=True)
            self.conn.close()
            s._told_to_wait()
        else:
            raise SessionProtocolError(
                f"expected ACCEPT or WAIT, got {wire.KIND_NAMES[kind]}", peer=self.peer
            )

    def _refused(self, payload: bytes | bytearray) -> None:
        code, reason = wire.decode_refuse(payload, self.peer)
        exc: SessionError
        if code in (wire.REFUSE_AUTH, wire.REFUSE_KEY_MISMATCH):
            exc = AuthenticationError(f"peer refused us: {reason}", peer=self.peer)
        else:
            exc = SessionProtocolError(f"peer refused us: {reason}", peer=self.peer)
        exc.refused_by_peer = True
        self.fail(exc, None)

    def _handshake_timeout(self) -> None:
        self._timer = None
        if self.state < _OPEN:
            exc = ConnectError(
                f"session handshake with {self.peer or 'a peer'} not finished within"
                f" {self.m.handshake_timeout:g} s"
            )
            exc.__cause__ = TimeoutError("handshake timed out")
            self.fail(exc, wire.REFUSE_PROTOCOL)

    def send_control(self, payload: bytes) -> None:
        """Write a control frame, unless the connection is going away."""
        if not self.conn.closing:
            self.pipe.write_frame(SESSION_CHANNEL, payload)

    # -- failure and close --------------------------------------------------

    def fail(self, exc: BaseException, refuse: int | None) -> None:
        """End this link because of exc: tell the peer why (REFUSE) when that
        still makes sense, and report it where it belongs."""
        if self.state == _CLOSED:
            return
        self._error = exc
        self._lost(exc)
        conn = self.conn
        if refuse is not None and not conn.closing and not conn.write_failed:
            try:
                self.pipe.write_frame(SESSION_CHANNEL, wire.encode_refuse(refuse, str(exc)))
            except (ConnClosedError, BufferFullError):
                conn.abort(exc)
                return
            conn.close()  # flush the REFUSE, then close
        else:
            conn.abort(exc)

    def _on_pipe_error(self, exc: BaseException) -> None:
        # The Pipe aborts the Conn after this; on_close follows.
        self._error = exc

    def _on_close(self, exc: BaseException | None) -> None:
        self.m._links.discard(self)
        self._lost(self._error or exc)

    def _lost(self, exc: BaseException | None, quiet: bool = False) -> None:
        """The link is over (once): tell whoever depends on it."""
        state = self.state
        if state == _CLOSED:
            return
        self.state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if quiet:
            return
        s = self.session
        if state == _OPEN:
            if s is not None and s._link is self:
                s._link_lost(self, exc)
        elif self.role == CONNECTOR:
            if s is not None:
                s._dial_failed(self, exc)
        elif isinstance(exc, (SessionError, ProtocolError, ConnectError)) and not (
            isinstance(exc, SessionError) and exc.refused_by_peer
        ):
            # A broken handshake is reported; a reset or EOF before it
            # finished (the loser of a dial race, a port scanner) is not.
            self.m._report(exc)

    @property
    def closed(self) -> bool:
        return self.state == _CLOSED

    def detach(self) -> None:
        """Take this link away from its session without telling anyone: its
        remaining frames are discarded, its Conn aborted."""
        self.state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pipe.on_frame = self.discard
        self.conn.abort()

    def discard(self, chan: int, payload: bytes | bytearray) -> None:
        """A detached link's frames: counted, not delivered."""
        self.discarded += 1

    def data_frames(self) -> int:
        """Data frames this link delivered to its session."""
        return self.pipe.frames_in - self.hs - self.ctrl - self.discarded

    def __repr__(self) -> str:
        names = ("hello", "connect", "reply", "open", "closed")
        return f"<_Link {self.role} {self.peer or '?'} {names[self.state]}>"
