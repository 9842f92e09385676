# evloop/control.py
#
# The control channel: evloop's own messages between a parent and the
# workers it spawned, on the reserved channel 65535 of their Pipe. This is
# the one module both ends import (spawn.py and rpc.py in the parent, the
# child runtime worker.py), so that the protocol lives in one file and a new
# message kind is one edit here.
#
# Wire format. A control frame is an ordinary frame (chan u16 | len u32 |
# payload, see codec.HEADER_SIZE) on CONTROL_CHANNEL whose first payload
# byte is its KIND; what follows depends on the kind:
#
#   E  child -> parent   error report: JSON {"type","message","traceback"}
#   U  child -> parent   the target function returned: the worker is up
#   P  parent -> child   heartbeat: token bytes, echoed back as "p"
#   p  child -> parent   heartbeat answer
#   Q  parent -> child   request:  id (u64 BE) | request bytes
#   M  parent -> child   message:  message bytes (no answer)
#   R  child -> parent   reply:    id (u64 BE) | reply bytes
#   X  child -> parent   failure:  id (u64 BE) | JSON error report
#
# and the service graph's (evloop.graph; docs/graph.md has the details):
#
#   N  parent -> child   port map: JSON {"servlet", "ports": [[name, flags, codec, companion, chan]...]}
#   n  child -> parent   ports bound: the same JSON, as the worker's own init defined them
#   K  child -> parent   flow abort: flow (u64 BE) | JSON error report (the servlet raised)
#   D  parent -> child   drain: the servlet stops opening flows (its drain() runs)
#
# The registry. Every kind byte is registered once, with its owner and
# meaning (register_kind); registering a byte twice is a ValueError at import
# time, so two layers can never silently share a kind. Sessions, ports and
# patterns register theirs the same way. kinds() lists them (docs/spawn.md's
# table is checked against it by the tests).
#
# Robustness (invariant): nothing here raises on bytes from the peer.
# decode_error() turns any body, however malformed (not UTF-8, not JSON, a
# JSON nested 100,000 deep, a list instead of an object), into a RemoteError
# that says it was unreadable; the callers use it so that a malformed reply
# fails its request instead of leaving it pending.
"""The reserved control channel 65535: its kind registry, CHILD_FD and the error-report codec. See the comment header above for the invariants."""

from __future__ import annotations

import json
import struct
import traceback
from dataclasses import dataclass

from .codec import DEFAULT_MAX_LEN, HEADER_SIZE
from .errors import RemoteError

__all__ = [
    "CHILD_FD",
    "CONTROL_CHANNEL",
    "MAX_USER_CHANNEL",
    "SESSION_CHANNEL",
    "RESERVED_CHANNELS",
    "HEADER_SIZE",
    "DEFAULT_MAX_LEN",
    "KindInfo",
    "register_kind",
    "kinds",
    "KIND_ERROR",
    "KIND_READY",
    "KIND_PING",
    "KIND_PONG",
    "KIND_REQUEST",
    "KIND_MESSAGE",
    "KIND_REPLY",
    "KIND_FAIL",
    "KIND_PORTS",
    "KIND_PORTS_BOUND",
    "KIND_FLOW_ABORT",
    "KIND_DRAIN",
    "REQUEST_ID",
    "ID_OVERHEAD",
    "encode_error",
    "decode_error",
]

# The child's end of the socketpair (also announced as EVLOOP_FD).
CHILD_FD = 3
# Reserved for evloop's control messages; user channels are below it.
CONTROL_CHANNEL = 0xFFFF
MAX_USER_CHANNEL = CONTROL_CHANNEL - 1
# The other reserved channel: a session's own control frames (handshake,
# acks, keepalives; see evloop/session/wire.py and docs/session.md) on a
# session's connection. Each reserved channel belongs to one kind of link
# (65535 to a parent and its worker, 65534 to two messengers), so a worker's
# user traffic may still use 65534.
SESSION_CHANNEL = 0xFFFE
RESERVED_CHANNELS = {CONTROL_CHANNEL: "control (parent and worker)", SESSION_CHANNEL: "session"}

# A request id on the wire: u64 big-endian, right after the kind byte.
REQUEST_ID = struct.Struct(">Q")
# Kind byte + id: what a request or reply adds to its payload.
ID_OVERHEAD = 1 + REQUEST_ID.size


@dataclass(frozen=True)
class KindInfo:
    """One registered control kind: its byte, a short name, the module that
    owns it, who sends it, and what its payload is."""

    byte: int
    name: str
    owner: str
    direction: str  # "parent->child", "child->parent" or "both"
    body: str


_KINDS: dict[int, KindInfo] = {}


def register_kind(byte: int | str, name: str, owner: str, direction: str, body: str) -> int:
    """Reserve a control kind byte for `owner` and return it as an int.
    ValueError if the byte is outside 0..255 or already registered (by
    anyone, including the same owner: a kind is registered exactly once)."""
    b = ord(byte) if isinstance(byte, str) else byte
    if not 0 <= b <= 255:
        raise ValueError(f"a control kind is one byte, got {byte!r}")
    if direction not in ("parent->child", "child->parent", "both"):
        raise ValueError(
            f"direction must be parent->child, child->parent or both, not {direction!r}"
        )
    old = _KINDS.get(b)
    if old is not None:
        raise ValueError(
            f"control kind {chr(b)!r} (0x{b:02X}) is already registered by {old.owner}"
            f" as {old.name!r}; {owner} must pick another byte"
        )
    _KINDS[b] = KindInfo(b, name, owner, direction, body)
    return b


def kinds() -> list[KindInfo]:
    """Every registered kind, in byte order."""
    return [_KINDS[b] for b in sorted(_KINDS)]


# -- the kinds of the process layer ----------------------------------------------

KIND_ERROR = register_kind(
    "E", "error", "evloop.spawn", "child->parent", 'JSON {"type", "message", "traceback"}'
)
KIND_READY = register_kind("U", "ready", "evloop.spawn", "child->parent", "nothing (one byte)")
KIND_PING = register_kind("P", "ping", "evloop.supervise", "parent->child", "token bytes")
KIND_PONG = register_kind("p", "pong", "evloop.supervise", "child->parent", "the ping's token")
KIND_REQUEST = register_kind("Q", "request", "evloop.rpc", "parent->child", "id | request bytes")
KIND_MESSAGE = register_kind("M", "message", "evloop.rpc", "parent->child", "message bytes")
KIND_REPLY = register_kind("R", "reply", "evloop.rpc", "child->parent", "id | reply bytes")
KIND_FAIL = register_kind("X", "failure", "evloop.rpc", "child->parent", "id | JSON error report")

# -- the kinds of the service graph (evloop.graph, docs/graph.md) -----------------
#
# Ports are named in the graph but numbered on the wire: the parent gives
# each port of a worker servlet a channel (N) and the worker checks that map
# against the ports its own init defined and answers with them (n). A data
# frame on a port's channel is flow (u64 BE) | shared flags (u32 BE) | the
# message as the port's codec encoded it.

KIND_PORTS = register_kind(
    "N", "ports", "evloop.graph", "parent->child",
    'JSON {"servlet", "ports": [[name, flags, codec, companion, chan], ...]}',
)  # fmt: skip
KIND_PORTS_BOUND = register_kind(
    "n", "ports bound", "evloop.graph", "child->parent", "JSON: the ports the worker defined"
)
KIND_FLOW_ABORT = register_kind(
    "K", "flow abort", "evloop.graph", "child->parent", "flow u64 | JSON error report"
)
KIND_DRAIN = register_kind("D", "drain", "evloop.graph", "parent->child", "nothing")


# -- error reports ------------------------------------------------------------------

# Tracebacks beyond this are cut (from the front, keeping the innermost frames).
_MAX_TRACEBACK = 256 * 1024
# A report body longer than this is not parsed at all: no legitimate one is.
_MAX_REPORT = 1 << 20
_FIELD_MAX = 64 * 1024


def encode_error(exc: BaseException) -> bytes:
    """`exc` as UTF-8 JSON {"type", "message", "traceback"}: the body of an
    error report (E) and of a failed reply (X)."""
    t = type(exc)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    try:
        tb = "".join(traceback.format_exception(t, exc, exc.__traceback__))
        message = str(exc)
    except Exception as inner:  # a __str__ that raises must not hide the report
        tb, message = "", f"<unprintable {name}: {inner!r}>"
    if len(tb) > _MAX_TRACEBACK:
        tb = "...\n" + tb[-_MAX_TRACEBACK:]
    info = {"type": name, "message": message, "traceback": tb}
    return json.dumps(info).encode("utf-8", "replace")


def decode_error(body: bytes | bytearray | memoryview) -> RemoteError:
    """The RemoteError an encode_error() body describes. Never raises: a body
    that is not such a report (malformed, truncated, hostile) gives a
    RemoteError of type "?" whose message quotes its start."""
    try:
        if len(body) > _MAX_REPORT:
            raise ValueError(f"{len(body)} bytes")
        info = json.loads(bytes(body).decode("utf-8", "replace"))
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        fields = [info.get(k, d) for k, d in (("type", "?"), ("message", ""), ("traceback", ""))]
        if not all(isinstance(f, str) for f in fields):
            raise ValueError("a field is not a string")
        return RemoteError(*(f[:_FIELD_MAX] if i < 2 else f for i, f in enumerate(fields)))
    except Exception as exc:  # RecursionError (deep nesting), ValueError, MemoryError...
        start = bytes(body[:80])
        return RemoteError(
            "?", f"unreadable error report ({type(exc).__name__}) starting {start!r}", ""
        )
