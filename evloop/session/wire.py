# evloop/session/wire.py
#
# The session protocol's control frames: one module both ends import, so a
# new kind is one edit here (and a line in docs/session.md, which is the
# normative description, precise enough for a second implementation).
#
# Data messages are plain Pipe frames, `chan (u16 BE) | len (u32 BE) |
# payload`, byte for byte the seed's format, with no session bytes added:
# their sequence numbers are implicit (the n-th data frame a session sends
# after the handshake of a connection is number resume+n, where resume is
# the receiver's in_seq as announced in that handshake). Everything else
# (handshake, cumulative acks, keepalives, an orderly close) travels as
# Pipe frames on one reserved channel, SESSION_CHANNEL, whose payload is a
# kind byte and a fixed big-endian body.
#
# Invariants: every decoder checks the exact length of its frame and raises
# SessionProtocolError naming the kind and what was wrong; nothing here
# allocates more than the frame it was given; a MAC is always compared with
# hmac.compare_digest.
from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from ..control import SESSION_CHANNEL  # reserved there, with the control channel
from ..errors import SessionProtocolError

__all__ = [
    "SESSION_CHANNEL", "MAGIC", "VERSION", "NONCE_SIZE", "MAC_SIZE", "MAX_CONTROL",
    "HELLO", "CONNECT", "ACCEPT", "WAIT", "REFUSE", "ACK", "KEEPALIVE", "KEEPALIVE_ACK", "CLOSE",
    "REFUSE_AUTH", "REFUSE_KEY_MISMATCH", "REFUSE_VERSION", "REFUSE_PROTOCOL",
    "CLOSE_IDLE", "CLOSE_SHUTDOWN",
    "Hello", "Connect", "Accept",
]  # fmt: skip

MAGIC = b"evls"
VERSION = 1
NONCE_SIZE = 32
MAC_SIZE = 32  # HMAC-SHA256
# A control frame larger than this is refused before it is decoded.
MAX_CONTROL = 2048
MAX_ADDRESS = 1024
MAX_TYPE = 64

# Kind bytes (the first payload byte of a frame on SESSION_CHANNEL).
HELLO = 0x01
CONNECT = 0x02
ACCEPT = 0x03
WAIT = 0x04
REFUSE = 0x05
ACK = 0x10
KEEPALIVE = 0x11
KEEPALIVE_ACK = 0x12
CLOSE = 0x13

KIND_NAMES = {
    HELLO: "HELLO", CONNECT: "CONNECT", ACCEPT: "ACCEPT", WAIT: "WAIT", REFUSE: "REFUSE",
    ACK: "ACK", KEEPALIVE: "KEEPALIVE", KEEPALIVE_ACK: "KEEPALIVE_ACK", CLOSE: "CLOSE",
}  # fmt: skip

# REFUSE codes.
REFUSE_AUTH = 1  # the proof (HMAC) did not match
REFUSE_KEY_MISMATCH = 2  # one side has a key, the other has none
REFUSE_VERSION = 3  # unknown protocol version
REFUSE_PROTOCOL = 4  # a malformed handshake

# CLOSE reasons.
CLOSE_IDLE = 1  # idle timeout: go to standby, reconnect when there is something to send
CLOSE_SHUTDOWN = 2  # the messenger is shutting down

# HELLO flags.
FLAG_KEY = 0x01
# CONNECT flags.
FLAG_LOSSY = 0x01
# ACCEPT flags.
FLAG_RESUMED = 0x01

_HELLO = struct.Struct(">B4sBB32s")  # kind magic version flags nonce
_CONNECT = struct.Struct(">BQQQB")  # kind cookie known_cookie in_seq flags
_ACCEPT = struct.Struct(">BQQB")  # kind cookie in_seq flags
_U64 = struct.Struct(">BQ")  # kind value (ACK, KEEPALIVE, KEEPALIVE_ACK)
_U8 = struct.Struct(">BB")  # kind code (REFUSE prefix, CLOSE)
_U64_MAX = (1 << 64) - 1

pack_ack = struct.Struct(">BQ").pack


def new_cookie() -> int:
    """A random non-zero 64-bit session cookie (0 means "none known")."""
    while True:
        c = int.from_bytes(os.urandom(8), "big")
        if c:
            return c


def new_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


def _err(msg: str, peer: str) -> SessionProtocolError:
    return SessionProtocolError(msg, peer=peer)


def kind_of(payload: bytes | bytearray, peer: str) -> int:
    if not payload:
        raise _err("empty control frame on the session channel", peer)
    if len(payload) > MAX_CONTROL:
        raise _err(
            f"control frame of {len(payload)} bytes on the session channel"
            f" (the limit is {MAX_CONTROL})",
            peer,
        )
    k = payload[0]
    if k not in KIND_NAMES:
        raise _err(f"unknown session control kind 0x{k:02x} ({len(payload)} bytes)", peer)
    return k


def _exact(payload: bytes | bytearray, size: int, peer: str) -> None:
    if len(payload) != size:
        raise _err(
            f"{KIND_NAMES[payload[0]]} frame of {len(payload)} bytes, expected {size}"
            " (truncated or padded)",
            peer,
        )


# -- mac ----------------------------------------------------------------------


def mac(
    key: bytes | None, label: bytes, their_nonce: bytes, our_nonce: bytes, body: bytes
) -> bytes:
    """HMAC-SHA256(key, label | nonce of the receiver | nonce of the sender |
    body), or b"" without a key."""
    if key is None:
        return b""
    return hmac.new(key, label + their_nonce + our_nonce + body, hashlib.sha256).digest()


def check_mac(
    key: bytes | None,
    label: bytes,
    our_nonce: bytes,
    their_nonce: bytes,
    body: bytes,
    proof: bytes,
    peer: str,
) -> bool:
    """Whether `proof` is the peer's HMAC over `body` (always True without a
    key, when the proof must be empty)."""
    if key is None:
        if proof:
            raise _err("handshake carries a MAC but no key was negotiated", peer)
        return True
    want = hmac.new(key, label + our_nonce + their_nonce + body, hashlib.sha256).digest()
    return hmac.compare_digest(want, proof)


def _split_mac(payload: bytes | bytearray, at: int, peer: str) -> tuple[bytes, bytes]:
    """The body before the mac_len byte at `at`, and the MAC after it, which
    must end the frame."""
    if len(payload) <= at:
        raise _err(f"{KIND_NAMES[payload[0]]} frame truncated before its MAC", peer)
    n = payload[at]
    if n not in (0, MAC_SIZE):
        raise _err(f"{KIND_NAMES[payload[0]]} frame with a MAC of {n} bytes", peer)
    if len(payload) != at + 1 + n:
        raise _err(
            f"{KIND_NAMES[payload[0]]} frame of {len(payload)} bytes, expected {at + 1 + n}",
            peer,
        )
    return bytes(payload[:at]), bytes(payload[at + 1 :])


# -- HELLO --------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    version: int
    has_key: bool
    nonce: bytes


def encode_hello(has_key: bool, nonce: bytes) -> bytes:
    return _HELLO.pack(HELLO, MAGIC, VERSION, FLAG_KEY if has_key else 0, nonce)


def decode_hello(payload: bytes | bytearray, peer: str) -> Hello:
    if len(payload) < 6 or payload[1:5] != MAGIC:
        raise _err(f"not an evloop session peer: bad HELLO ({bytes(payload[:16])!r}...)", peer)
    _exact(payload, _HELLO.size, peer)
    _, _, version, flags, nonce = _HELLO.unpack(payload)
    if flags & ~FLAG_KEY:
        raise _err(f"HELLO with unknown flags 0x{flags:02x}", peer)
    return Hello(version, bool(flags & FLAG_KEY), nonce)


# -- CONNECT ------------------------------------------------------------------


@dataclass(frozen=True)
class Connect:
    cookie: int  # the connector's session cookie
    known: int  # the acceptor's cookie as the connector knows it (0: none)
    in_seq: int  # the last data message the connector received in the session
    lossy: bool
    peer_type: str
    address: str  # the connector's messenger address
    body: bytes  # what the MAC covers
    proof: bytes


def encode_connect(
    cookie: int,
    known: int,
    in_seq: int,
    lossy: bool,
    peer_type: str,
    address: str,
    key: bytes | None,
    their_nonce: bytes,
    our_nonce: bytes,
) -> bytes:
    t = peer_type.encode()
    a = address.encode()
    body = (
        _CONNECT.pack(CONNECT, cookie, known, in_seq, FLAG_LOSSY if lossy else 0)
        + bytes([len(t)])
        + t
        + struct.pack(">H", len(a))
        + a
    )
    proof = mac(key, b"C", their_nonce, our_nonce, body)
    return body + bytes([len(proof)]) + proof


def decode_connect(payload: bytes | bytearray, peer: str) -> Connect:
    if len(payload) < _CONNECT.size + 1:
        raise _err(f"CONNECT frame of {len(payload)} bytes is truncated", peer)
    _, cookie, known, in_seq, flags = _CONNECT.unpack_from(payload)
    if flags & ~FLAG_LOSSY:
        raise _err(f"CONNECT with unknown flags 0x{flags:02x}", peer)
    if cookie == 0:
        raise _err("CONNECT with a zero session cookie", peer)
    at = _CONNECT.size
    tn = payload[at]
    at += 1
    if tn > MAX_TYPE or len(payload) < at + tn + 2:
        raise _err("CONNECT frame truncated in its peer type", peer)
    try:
        ptype = bytes(payload[at : at + tn]).decode()
        at += tn
        (an,) = struct.unpack_from(">H", payload, at)
        at += 2
        if not 0 < an <= MAX_ADDRESS or len(payload) < at + an:
            raise _err(f"CONNECT with an address of {an} bytes (or truncated)", peer)
        address = bytes(payload[at : at + an]).decode()
    except UnicodeDecodeError as exc:
        raise _err(f"CONNECT with a name that is not UTF-8: {exc}", peer) from exc
    at += an
    body, proof = _split_mac(payload, at, peer)
    return Connect(cookie, known, in_seq, bool(flags & FLAG_LOSSY), ptype, address, body, proof)


# -- ACCEPT -------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    cookie: int  # the acceptor's session cookie
    in_seq: int  # the last data message the acceptor received (0 for a new pair)
    resumed: bool
    body: bytes
    proof: bytes


def encode_accept(
    cookie: int,
    in_seq: int,
    resumed: bool,
    key: bytes | None,
    their_nonce: bytes,
    our_nonce: bytes,
) -> bytes:
    body = _ACCEPT.pack(ACCEPT, cookie, in_seq, FLAG_RESUMED if resumed else 0)
    proof = mac(key, b"A", their_nonce, our_nonce, body)
    return body + bytes([len(proof)]) + proof


def decode_accept(payload: bytes | bytearray, peer: str) -> Accept:
    if len(payload) < _ACCEPT.size + 1:
        raise _err(f"ACCEPT frame of {len(payload)} bytes is truncated", peer)
    _, cookie, in_seq, flags = _ACCEPT.unpack_from(payload)
    if flags & ~FLAG_RESUMED:
        raise _err(f"ACCEPT with unknown flags 0x{flags:02x}", peer)
    if cookie == 0:
        raise _err("ACCEPT with a zero session cookie", peer)
    resumed = bool(flags & FLAG_RESUMED)
    if not resumed and in_seq != 0:
        raise _err(f"ACCEPT of a new session claims in_seq {in_seq}, must be 0", peer)
    body, proof = _split_mac(payload, _ACCEPT.size, peer)
    return Accept(cookie, in_seq, resumed, body, proof)


# -- WAIT, REFUSE, CLOSE --------------------------------------------------------


def encode_wait(key: bytes | None, their_nonce: bytes, our_nonce: bytes) -> bytes:
    body = bytes([WAIT])
    proof = mac(key, b"W", their_nonce, our_nonce, body)
    return body + bytes([len(proof)]) + proof


def decode_wait(payload: bytes | bytearray, peer: str) -> tuple[bytes, bytes]:
    return _split_mac(payload, 1, peer)


def encode_refuse(code: int, reason: str) -> bytes:
    return _U8.pack(REFUSE, code) + reason.encode()[: MAX_CONTROL - 2]


def decode_refuse(payload: bytes | bytearray, peer: str) -> tuple[int, str]:
    if len(payload) < 2:
        raise _err("REFUSE frame truncated before its code", peer)
    return payload[1], bytes(payload[2:]).decode("utf-8", "replace")


def encode_close(reason: int) -> bytes:
    return _U8.pack(CLOSE, reason)


def decode_close(payload: bytes | bytearray, peer: str) -> int:
    _exact(payload, 2, peer)
    return payload[1]


# -- ACK, KEEPALIVE, KEEPALIVE_ACK ----------------------------------------------


def encode_u64(kind: int, value: int) -> bytes:
    return _U64.pack(kind, value)


def decode_u64(payload: bytes | bytearray, peer: str) -> int:
    _exact(payload, _U64.size, peer)
    return int(_U64.unpack(payload)[1])


ACK_FRAME_SIZE = 6 + _U64.size  # Pipe header + kind + seq
