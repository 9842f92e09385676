# evloop/tls.py
#
# TLS for TCP Conns with the standard library's ssl module, non-blocking: an
# ssl.SSLObject over two MemoryBIOs, driven by the Conn's own reads and
# writes. TLSConn is a Conn, so everything built on Conns (listen_tcp's
# conn_factory, connect_tcp's, Pipe, the HTTP and RESP servers) runs over
# TLS unchanged: read()/consume()/read_until()/take() see plaintext.
#
# Read side. TLSConn replaces the Conn's receive function (the seam in
# conn.py): it reads ciphertext from the socket into the incoming BIO, steps
# the handshake until it is done, then decrypts into the Conn's read buffer.
# "Nothing to show yet" (a partial record, a handshake message) is
# BlockingIOError to the Conn, so on_data only ever sees plaintext. A record
# can hold more plaintext than the buffer has room for, and epoll cannot see
# bytes that already left the kernel, so when plaintext is left inside the
# SSLObject a re-read is scheduled (also when reading resumes after a pause
# or back-pressure).
#
# Write side. write()/writev() encrypt at once (one TLS record per call,
# more for large data) and queue the ciphertext with Conn.writev, so every
# Conn promise holds on ciphertext: writes never block, everything leaves at
# the end of the turn in one gather, watermarks and write_cap count the
# queued bytes, a failed send drops the queue and reports at close. The
# write buffer's open tail is never left to a framing layer (a Pipe would
# append plaintext to it): TLSConn closes it after each write. Plaintext
# written before the handshake finished is held (within write_cap) and
# encrypted once it has.
#
# Faults. A refused or broken handshake, one that takes longer than
# `handshake_timeout`, or a record that fails to decrypt closes that Conn
# with TLSError (the ssl.SSLError is its __cause__); on_close fires exactly
# once, as for any Conn. close() sends close_notify before the Conn's flush;
# a peer's close_notify, or a plain TCP EOF after the handshake, is EOF.
#
# Counters: bytes_in counts plaintext delivered, bytes_out ciphertext sent.
from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any, cast

from .conn import Buffer, Conn, as_buffer
from .errors import BufferFullError, ConnClosedError, TLSError
from .loop import Loop, TimerHandle

__all__ = [
    "TLSConn",
    "tls_server",
    "tls_client",
    "server_context",
    "client_context",
    "DEFAULT_HANDSHAKE_TIMEOUT",
]

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
_RECV = 256 * 1024  # ciphertext read per call


def _tls_error(prefix: str, exc: ssl.SSLError) -> TLSError:
    reason = getattr(exc, "reason", None)
    err = TLSError(f"{prefix}: {reason or exc}", reason)
    err.__cause__ = exc
    return err


class TLSConn(Conn):
    """A Conn speaking TLS (see the module header). Keyword arguments beyond
    Conn's: `context` (an ssl.SSLContext), `server_side`, `server_hostname`
    (client side: the name to verify and send as SNI), `handshake_timeout`
    (seconds, None for none), `on_handshake(conn)` (called once the
    handshake is done)."""

    __slots__ = (
        "_ssl", "_bio_in", "_bio_out", "_handshaken", "_pending", "_pending_size",
        "_hs_timer", "on_handshake", "_tls_eof", "_reread", "server_side",
    )  # fmt: skip

    _scatter_read = False  # seam: see Conn._scatter_read

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        *,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        on_handshake: Callable[[TLSConn], Any] | None = None,
        **conn_kwargs: Any,
    ):
        if not isinstance(sock, socket.socket):
            raise TypeError("a TLSConn needs a socket")
        self._bio_in = ssl.MemoryBIO()
        self._bio_out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._bio_in, self._bio_out, server_side=server_side, server_hostname=server_hostname
        )
        self.server_side = server_side
        self._handshaken = False
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._hs_timer: TimerHandle | None = None
        self._tls_eof = False
        self._reread = False
        self.on_handshake = on_handshake
        super().__init__(loop, sock, **conn_kwargs)
        self._recv_into = self._tls_recv_into
        if handshake_timeout is not None:
            self._hs_timer = loop.call_later(
                handshake_timeout, self._handshake_expired, handshake_timeout
            )
        if not server_side:
            self._handshake_step()  # the ClientHello leaves at the end of the turn

    # -- introspection --------------------------------------------------------

    @property
    def handshake_done(self) -> bool:
        return self._handshaken

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The SSLObject: version(), cipher(), getpeercert(), selected_alpn_protocol()."""
        return self._ssl

    # -- handshake ------------------------------------------------------------

    def _handshake_step(self) -> bool:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._send_out()
            return False
        except ssl.SSLError as exc:
            self._send_alert()
            raise _tls_error("TLS handshake failed", exc) from exc
        self._handshaken = True
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        self._send_out()
        pending, self._pending = self._pending, []
        self._pending_size = 0
        for data in pending:
            self._encrypt(data)
        cb = self.on_handshake
        if cb is not None:
            self.loop.call_soon(cb, self)
        return True

    def _handshake_expired(self, timeout: float) -> None:
        self._hs_timer = None
        if not self._handshaken and not self.closed:
            self.abort(TLSError(f"TLS handshake not finished within {timeout:g} s", "TIMEOUT"))

    def _send_alert(self) -> None:
        # The Conn is about to close at once: hand the alert to the kernel
        # directly, best effort, so the peer hears why.
        data = self._bio_out.read()
        sock = self._sock
        if data and sock is not None:
            try:
                sock.send(data)
            except OSError:
                pass

    # -- read side (the Conn's receive function) ------------------------------

    def _tls_recv_into(self, view: memoryview) -> int:
        sock = self._sock
        assert sock is not None
        raw_eof = False
        try:
            data = sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            data = None
        if data is not None:
            if data:
                self._bio_in.write(data)
            else:
                raw_eof = True
                self._bio_in.write_eof()
        if not self._handshaken:
            if raw_eof:
                raise TLSError("connection closed during the TLS handshake", "EOF")
            if not self._handshake_step():
                raise BlockingIOError
        if self._tls_eof:
            return 0
        n = 0
        want = len(view)
        read = self._ssl.read
        while n < want:
            try:
                # With a buffer, read() returns a count (typeshed says bytes).
                k = cast(int, read(want - n, view[n:]) if n else read(want, view))
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # close_notify, or a TCP EOF without it: the end of the stream.
                self._tls_eof = True
                break
            except ssl.SSLError as exc:
                raise _tls_error("TLS record failed", exc) from exc
            if not k:
                break
            n += k
        if self._bio_out.pending:
            self._send_out()  # post-handshake messages (key updates)
        if n:
            if self._tls_eof or self._ssl.pending() or self._bio_in.pending:
                self._schedule_reread()
            return n
        if raw_eof or self._tls_eof:
            return 0
        raise BlockingIOError

    def _schedule_reread(self) -> None:
        if not self._reread:
            self._reread = True
            self.loop.call_soon(self._do_reread)

    def _do_reread(self) -> None:
        # Plaintext (or the EOF) is waiting inside the SSLObject, where epoll
        # cannot see it: read as if the socket had said so.
        self._reread = False
        if not self.closed and self._want_read():
            self._on_readable()

    def _update_events(self) -> None:
        super()._update_events()
        if (
            self._handshaken
            and not self._reread
            and not self.closed
            and (self._tls_eof or self._ssl.pending() or self._bio_in.pending)
            and self._want_read()
        ):
            self._schedule_reread()

    # -- write side -----------------------------------------------------------

    def write(self, data: Buffer) -> None:
        self.writev((data,))

    def writev(self, parts: Sequence[Buffer]) -> None:
        if self.closing or self._shut_wr_requested:
            raise ConnClosedError(
                "write on a closed or write-shut connection", reason=self._close_reason
            )
        bufs = [as_buffer(p) for p in parts]
        data = bufs[0] if len(bufs) == 1 else b"".join(bufs)
        if not data:
            return
        if self._handshaken:
            self._encrypt(data)
            return
        size = self.write_buffered + self._pending_size + len(data)
        if size > self.write_cap:
            raise BufferFullError(
                f"write of {len(data)} bytes refused: {size - len(data)} held for the TLS"
                f" handshake, cap is {self.write_cap}"
            )
        self._pending.append(bytes(data))
        self._pending_size += len(data)

    def _encrypt(self, data: Buffer) -> None:
        if self.write_failed:
            Conn.writev(self, (data,))  # counted as dropped
            return
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            raise _tls_error("TLS write failed", exc) from exc
        self._send_out()

    def _send_out(self) -> None:
        data = self._bio_out.read()
        if data and not self.closing:
            Conn.writev(self, (data,))
            # No open tail: a framing layer's fast path would append plaintext.
            self.write_buffer.tail = None

    def close(self) -> None:
        """Send close_notify, then close as a Conn does (flush first)."""
        if self.closing:
            return
        if self._handshaken and not self.write_failed:
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                pass  # SSLWantReadError: the peer's close_notify is not awaited
            self._send_out()
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        super().close()

    def _finish_close(self, reason: BaseException | None) -> None:
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        self._pending = []
        super()._finish_close(reason)

    def shutdown_write(self) -> None:
        """TLS has no half-close of its own: send close_notify (the peer's
        EOF), then shut the TCP write side after the flush."""
        if self.closing or self._shut_wr_requested:
            return
        if self._handshaken and not self.write_failed:
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                pass
            self._send_out()
        super().shutdown_write()


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server SSLContext with the ssl module's secure defaults and this
    certificate chain (PEM) and key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def client_context(cafile: str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """A client SSLContext: the system's CAs (or `cafile`), hostname
    checking; verify=False turns verification off (tests only)."""
    ctx = ssl.create_default_context(cafile=cafile)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_server(
    context: ssl.SSLContext, *, handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT
) -> Callable[..., TLSConn]:
    """A conn_factory for listen_tcp(): every accepted Conn speaks TLS."""
    return functools.partial(
        TLSConn, context=context, server_side=True, handshake_timeout=handshake_timeout
    )


def tls_client(
    context: ssl.SSLContext,
    server_hostname: str | None,
    *,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    on_handshake: Callable[[TLSConn], Any] | None = None,
) -> Callable[..., TLSConn]:
    """A conn_factory for connect_tcp(): the Conn handed to the callback
    speaks TLS to `server_hostname` (writes made before the handshake is
    done are held, then sent)."""
    return functools.partial(
        TLSConn,
        context=context,
        server_side=False,
        server_hostname=server_hostname,
        handshake_timeout=handshake_timeout,
        on_handshake=on_handshake,
    )
