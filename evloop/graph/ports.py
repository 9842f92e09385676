# evloop/graph/ports.py
#
# Ports and their flags: what a servlet declares in its init step with
# define(name, flags), and the rules flag changes obey while it runs.
#
# A port is unidirectional: INPUT or OUTPUT, one bit (Plumber's PIPE_OUTPUT,
# 0x10000; INPUT is its absence). The flags word is 32 bits:
#
#   0x0000FFFF  private user bits: free for the servlet, this port only
#   0x00010000  OUTPUT (private; fixed: no execution may change it)
#   0x00020000  PERSIST (shared): keep the resource (a keep-alive TCP
#               connection) instead of closing it when the flow ends
#   0x00FC0000  reserved for evloop (refused)
#   0xFF000000  shared user bits: free for the servlet, travel like PERSIST
#
# Private bits belong to one port of one execution. Shared bits belong to
# the flow: set on an input port, they pass to the input's companion output
# ports, are carried by every message emitted there, and arrive as the
# upstream flags of the next servlet's input. A change made while an
# execution runs never touches the declaration: the next execution (the
# next flow) starts again from the declared flags.
#
# A port also names its codec: how a message crosses a process boundary.
# "bytes" (the default: messages are bytes-like and travel as they are),
# "json", "pickle", "object" (any Python object, in-process only: a servlet
# with such a port cannot be placed in a worker), or any object with
# encode(), decode() and a `name`. Two connected ports must name the same
# codec. Inside one process messages are handed over by reference and no
# codec runs, except that a bytes port still checks that it is given bytes,
# so a servlet behaves the same in-process and in a worker.
"""Ports: PortFlags, PortSpec, codecs and the rules of flag changes. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import PortDefinitionError, PortFlagError
from ..rpc import JSONCodec, PickleCodec

__all__ = [
    "PortFlags", "INPUT", "OUTPUT", "PERSIST", "PRIVATE_USER", "SHARED_USER", "SHARED",
    "FIXED", "KNOWN", "PortCodec", "BytesCodec", "ObjectCodec", "BYTES", "OBJECT", "PortSpec",
    "resolve_codec", "check_name", "check_define", "check_change", "describe_flags",
    "FRAME_HEADER",
]  # fmt: skip


class PortFlags(enum.IntFlag):
    """The flag bits of a port (see the module header). Members combine with
    `|`; the user bits are any bits of PRIVATE_USER and SHARED_USER."""

    INPUT = 0
    OUTPUT = 0x0001_0000
    PERSIST = 0x0002_0000


# Plain ints, not the enum's members: flag arithmetic runs per message, and
# every operation on an IntFlag builds a new enum object.
INPUT = int(PortFlags.INPUT)
OUTPUT = int(PortFlags.OUTPUT)
PERSIST = int(PortFlags.PERSIST)
PRIVATE_USER = 0x0000_FFFF
SHARED_USER = 0xFF00_0000
# The bits that travel with a flow from an input to its companion outputs.
SHARED = PERSIST | SHARED_USER
# The bits no execution may change: the direction.
FIXED = OUTPUT
KNOWN = OUTPUT | SHARED | PRIVATE_USER

# A port's data frame between the parent and a worker servlet, on the
# port's channel (its index): flow (u64 BE) | shared flags (u32 BE) | the
# message as the port's codec encoded it. Both ends import it from here.
FRAME_HEADER = struct.Struct(">QI")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_name(kind: str, name: object) -> str:
    """`name` if it is an identifier (letters, digits, underscores; not
    starting with a digit), else PortDefinitionError. The text form relies
    on it: a name never contains a dot or a space."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise PortDefinitionError(
            f"{kind} name must be an identifier (letters, digits, _), not {name!r}"
        )
    return name


def describe_flags(flags: int) -> str:
    """ "OUTPUT|PERSIST|0x1", for messages."""
    parts = ["OUTPUT" if flags & OUTPUT else "INPUT"]
    if flags & PERSIST:
        parts.append("PERSIST")
    rest = flags & ~(OUTPUT | PERSIST)
    if rest:
        parts.append(f"0x{rest:X}")
    return "|".join(parts)


# -- codecs --------------------------------------------------------------------------


class PortCodec(Protocol):
    """How a port's messages cross a process: encode(msg) -> bytes,
    decode(bytes) -> msg, and a `name` both ends of an edge must share."""

    name: str

    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes | bytearray) -> Any: ...


class BytesCodec:
    """The default: a message is bytes-like and travels as it is (bytes
    received, as the Pipe delivers them)."""

    name = "bytes"

    def encode(self, obj: Any) -> bytes:
        t = type(obj)
        if t is bytes:
            return obj  # type: ignore[no-any-return,unused-ignore]
        if t is bytearray or t is memoryview:
            return bytes(obj)
        raise TypeError(
            f"a message on a bytes port must be bytes, bytearray or memoryview, not {t.__name__}"
        )

    def decode(self, data: bytes | bytearray) -> Any:
        return bytes(data)  # a Pipe's payload may be a view valid only during its callback


class ObjectCodec:
    """Any Python object, handed over by reference: in-process only. The
    graph refuses to place a servlet with such a port in a worker."""

    name = "object"

    def encode(self, obj: Any) -> bytes:
        raise TypeError("an 'object' port cannot cross a process (use json, pickle or bytes)")

    def decode(self, data: bytes | bytearray) -> Any:
        raise TypeError("an 'object' port cannot cross a process (use json, pickle or bytes)")


BYTES = BytesCodec()
OBJECT = ObjectCodec()


def resolve_codec(spec: object) -> PortCodec:
    """The codec object for define(codec=spec): None or "bytes", "json",
    "pickle", "object", or an object with encode/decode and a string `name`."""
    if spec is None or spec == "bytes":
        return BYTES
    if spec == "json":
        return JSONCodec()
    if spec == "pickle":
        return PickleCodec()
    if spec == "object":
        return OBJECT
    if isinstance(spec, str):
        raise PortDefinitionError(
            f"codec must be 'bytes', 'json', 'pickle', 'object' or a codec object, not {spec!r}"
        )
    name = getattr(spec, "name", None)
    if not (callable(getattr(spec, "encode", None)) and callable(getattr(spec, "decode", None))):
        raise PortDefinitionError(f"a codec needs encode() and decode() methods: {spec!r}")
    if not isinstance(name, str) or not name:
        raise PortDefinitionError(
            f"a codec object needs a string `name` (both ends of an edge compare it): {spec!r}"
        )
    return spec  # type: ignore[return-value]


# -- a declared port ----------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """One port as a servlet's init defined it. `index` is its position in
    the servlet's definition order (also the channel it gets on a worker's
    Pipe); `companion` names the input port whose shared flags pass
    to this output port."""

    name: str
    flags: int
    codec: PortCodec
    companion: str | None
    index: int

    @property
    def is_output(self) -> bool:
        return bool(self.flags & OUTPUT)

    @property
    def direction(self) -> str:
        return "OUTPUT" if self.flags & OUTPUT else "INPUT"

    @property
    def codec_name(self) -> str:
        return self.codec.name

    def describe(self) -> list[Any]:
        """[name, flags, codec name, companion, chan]: what the wire's port
        map (control kinds N and n) carries for it; chan is index."""
        return [self.name, self.flags, self.codec.name, self.companion, self.index]


def check_define(
    servlet: str,
    ports: dict[str, PortSpec],
    name: object,
    flags: object,
    codec: object,
    companion: object,
) -> PortSpec:
    """The PortSpec for define(name, flags, codec=, companion=) on a servlet
    that has `ports` already, or PortDefinitionError saying what is wrong."""
    label = f"servlet {servlet!r}"
    try:
        check_name("port", name)
    except PortDefinitionError as exc:
        raise PortDefinitionError(f"{label}: {exc}", servlet=servlet) from None
    assert isinstance(name, str)
    if name in ports:
        raise PortDefinitionError(
            f"{label}: port {name!r} is defined twice", servlet=servlet, port=name
        )
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise PortDefinitionError(
            f"{label}: flags of port {name!r} must be an int (INPUT, OUTPUT, PERSIST...), not"
            f" {flags!r}",
            servlet=servlet,
            port=name,
        )
    if flags & ~KNOWN or flags < 0:
        raise PortDefinitionError(
            f"{label}: port {name!r}: flags 0x{flags:X} have bits evloop reserves"
            f" (0x{(flags & ~KNOWN) & 0xFFFFFFFF:X}); user bits are 0x{PRIVATE_USER:X} (private)"
            f" and 0x{SHARED_USER:X} (shared)",
            servlet=servlet,
            port=name,
        )
    try:
        c = resolve_codec(codec)
    except PortDefinitionError as exc:
        raise PortDefinitionError(
            f"{label}: port {name!r}: {exc}", servlet=servlet, port=name
        ) from None
    if companion is not None:
        if not flags & OUTPUT:
            raise PortDefinitionError(
                f"{label}: port {name!r} is an INPUT; only an OUTPUT port has a companion"
                " (the input whose shared flags pass to it)",
                servlet=servlet,
                port=name,
            )
        other = ports.get(companion) if isinstance(companion, str) else None
        if other is None or other.is_output:
            raise PortDefinitionError(
                f"{label}: the companion of port {name!r} must be an INPUT port defined before"
                f" it, and {companion!r} is "
                + ("an OUTPUT" if other is not None else "not defined (yet)"),
                servlet=servlet,
                port=name,
            )
    return PortSpec(
        name, int(flags), c, companion if isinstance(companion, str) else None, len(ports)
    )


def check_change(servlet: str, port: PortSpec, bits: object, verb: str) -> int:
    """The bits of a run-time set/clear on `port`, or PortFlagError: the
    direction is fixed and unknown bits are refused."""
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 0:
        raise PortFlagError(
            f"{servlet}.{port.name}: {verb} takes flag bits (an int), not {bits!r}",
            servlet=servlet,
            port=port.name,
        )
    if bits & FIXED:
        raise PortFlagError(
            f"{servlet}.{port.name}: the direction of a port cannot change while it runs"
            f" ({verb} OUTPUT on an {port.direction} port): ports are unidirectional, fixed"
            " by define() in init",
            servlet=servlet,
            port=port.name,
        )
    if bits & ~KNOWN:
        raise PortFlagError(
            f"{servlet}.{port.name}: cannot {verb} bits 0x{bits & ~KNOWN:X}: evloop reserves"
            f" them (user bits: 0x{PRIVATE_USER:X} private, 0x{SHARED_USER:X} shared)",
            servlet=servlet,
            port=port.name,
        )
    return bits
