# evloop/codec.py
#
# The frame codec everyone else imports: chan (u16 BE) | length (u32 BE) |
# payload; and scan_resp, the scanner for whole RESP (Redis protocol)
# commands behind evloop.resp.RespParser's fast path. It picks one of two
# implementations with identical behaviour:
#
#   c_impl   the C scanner in csrc/evl_codec.c (built by cffi as evloop._codec)
#            behind thin Python wrappers that validate arguments and convert
#            results, so exceptions never come from C;
#   py_impl  evloop._pycodec, always importable.
#
# The C one is chosen when it imports. EVLOOP_PURE_PYTHON=1 selects the pure
# one anyway (c_impl is still loaded if it can be, so tests can compare the
# two); EVLOOP_REQUIRE_C=1 turns a failed C import into an ImportError, so a
# CI run cannot silently test the fallback instead of the extension.
#
# Invariant: nothing here holds on to a caller's buffer after returning. In
# particular there is no cache of ffi.from_buffer() results keyed by buffer:
# while such a cdata is alive CPython refuses to resize the bytearray behind
# it ("Existing exports of data: object cannot be re-sized"), and the readers
# that call scan_frames() most often are exactly the ones that append to and
# trim a bytearray between calls. A bytes object needs no from_buffer() at
# all (cffi passes its data pointer directly), and a fresh from_buffer() of a
# bytearray costs well under 0.1 us, released as soon as the wrapper returns.
"""The frame codec (chan u16 | length u32 | payload): the C scanner or its pure-Python twin, chosen at import. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import importlib
import struct
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

from . import _env, _pycodec
from ._pycodec import (
    DEFAULT_MAX_LEN,
    HEADER_SIZE,
    MAX_CHANNEL,
    MAX_LENGTH,
    RESP_E_BULK_LEN,
    RESP_E_BULK_LINE,
    RESP_E_CRLF,
    RESP_E_DOLLAR,
    RESP_E_MBULK_LEN,
    RESP_E_MBULK_LINE,
    RESP_E_NONE,
    RESP_END,
    RESP_ERROR,
    RESP_INLINE,
    RESP_LARGE,
    RESP_LIMIT,
    STOP_BAD,
    STOP_END,
    STOP_LARGE,
    STOP_LIMIT,
    BatchResult,
    BytesLike,
    RespScanResult,
    ScanResult,
)

__all__ = [
    "DEFAULT_MAX_LEN",
    "HEADER_SIZE",
    "IMPLEMENTATION",
    "c_impl",
    "decode_header",
    "encode_frames",
    "encode_header",
    "find_delim",
    "py_impl",
    "scan_batch",
    "scan_frames",
    "scan_resp",
    "RESP_END",
    "RESP_LIMIT",
    "RESP_INLINE",
    "RESP_LARGE",
    "RESP_ERROR",
    "RESP_E_NONE",
    "RESP_E_MBULK_LINE",
    "RESP_E_MBULK_LEN",
    "RESP_E_DOLLAR",
    "RESP_E_BULK_LINE",
    "RESP_E_BULK_LEN",
    "RESP_E_CRLF",
    "STOP_BAD",
    "STOP_END",
    "STOP_LARGE",
    "STOP_LIMIT",
]

# The smallest frame is a header plus one payload byte.
_MIN_FRAME = HEADER_SIZE + 1

# encode_frames() goes through C only for batches of at least this many frames
# whose encoded size is at most _ENC_C_MAX_BYTES. Measured on CPython 3.11:
# for 64-byte payloads the C route (join the payloads once, let C interleave
# the headers) breaks even with struct-per-frame + join at about 16 frames and
# wins from there (64 frames: ~1.5x, 1024 frames: ~2x); for fewer frames, or
# for large payloads where its extra copies dominate, plain b"".join is
# faster, so that is used there.
_ENC_C_MIN_FRAMES = 16
_ENC_C_MAX_BYTES = 256 * 1024


def _make_c_impl(ffi: Any, lib: Any) -> types.SimpleNamespace:
    """Wrap the cffi module in functions with _pycodec's exact signatures."""
    c_scan = lib.evl_scan_frames
    c_find = lib.evl_find_delim
    c_encode_frames = lib.evl_encode_frames
    from_buffer = ffi.from_buffer
    unpack = ffi.unpack
    new = ffi.new
    cbuffer = ffi.buffer
    py_encode_frames = _pycodec.encode_frames
    check_scan = _pycodec.check_scan
    unpack_u32 = struct.Struct(">I").unpack_from
    unpack_u16 = struct.Struct(">H").unpack_from

    # cffi releases the GIL around every C call, so two threads may be inside
    # evl_scan_frames() at once: each thread gets its own output arrays.
    tls = threading.local()

    def _scan_arrays(nframes: int) -> tuple[Any, ...]:
        # Grow geometrically so a slowly rising max_frames does not reallocate
        # on every call.
        old = getattr(tls, "scan", None)
        cap = max(64, nframes, 2 * old[0] if old is not None else 0)
        arrays = (
            cap,
            new("uint16_t[]", cap),
            new("uint32_t[]", cap),
            new("size_t[]", cap),
            new("size_t *"),
            new("int64_t *"),
        )
        tls.scan = arrays
        return arrays

    def scan_frames(
        buf: BytesLike, start: int, end: int, max_frames: int, max_len: int
    ) -> ScanResult:
        t = type(buf)
        if t is not bytes and t is not bytearray:
            buf = memoryview(buf).cast("B")
        n = len(buf)
        check_scan(n, start, end, max_frames, max_len)
        # A cffi call costs ~0.3 us before C does anything, so the common
        # "nothing complete yet" answers come from the first header in Python
        # (the same steps as the first turn of evl_scan_frames' loop).
        avail = end - start
        if avail < HEADER_SIZE or max_frames == 0:
            return [], [], [], start, 0 if avail == 0 or max_frames == 0 else HEADER_SIZE
        length = unpack_u32(buf, start + 2)[0]
        if length == 0 or length > max_len:
            return [], [], [], start, -1
        if length > avail - HEADER_SIZE:
            return [], [], [], start, HEADER_SIZE + length
        if length == avail - HEADER_SIZE:
            # Exactly one frame fills the range (every request/response hop):
            # the answer is known without the C call.
            return [unpack_u16(buf, start)[0]], [start + HEADER_SIZE], [length], end, 0
        # No more than avail // 7 frames fit, so one more than that can never
        # be reached: clamping to it keeps the arrays small without changing
        # why the scan stops.
        limit = avail // _MIN_FRAME + 1
        if max_frames > limit:
            max_frames = limit
        try:
            cap, chans, lens, offs, pos_p, need_p = tls.scan
        except AttributeError:
            cap, chans, lens, offs, pos_p, need_p = _scan_arrays(max_frames)
        if max_frames > cap:
            cap, chans, lens, offs, pos_p, need_p = _scan_arrays(max_frames)
        # The from_buffer() cdata dies with this frame, unlocking a bytearray.
        count = c_scan(
            buf if t is bytes else from_buffer(buf),
            n,
            start,
            end,
            max_len,
            chans,
            lens,
            offs,
            max_frames,
            pos_p,
            need_p,
        )
        if count <= 0:
            if count < 0:
                raise ValueError("evl_scan_frames() rejected its arguments")
            return [], [], [], pos_p[0], need_p[0]
        return unpack(chans, count), unpack(offs, count), unpack(lens, count), pos_p[0], need_p[0]

    c_batch = lib.evl_scan_batch

    def _batch_arrays(nframes: int) -> tuple[Any, ...]:
        old = getattr(tls, "batch", None)
        cap = max(64, nframes, 2 * old[0] if old is not None else 0)
        arrays = (
            cap,
            new("uint16_t[]", cap),
            new("uint32_t[]", cap),
            new("uint32_t[]", cap),
            new("size_t *"),
            new("int64_t *"),
            new("int *"),
        )
        tls.batch = arrays
        return arrays

    def scan_batch(
        buf: BytesLike, start: int, end: int, max_len: int, large: int, max_frames: int
    ) -> BatchResult:
        t = type(buf)
        if t is not bytes and t is not bytearray:
            buf = memoryview(buf).cast("B")
        n = len(buf)
        check_scan(n, start, end, max_frames, max_len)
        if not 0 <= large <= MAX_LENGTH:
            raise ValueError(f"large must be in 0..{MAX_LENGTH}, got {large}")
        # The first header is read here, as C would (see scan_frames): most
        # reads on a request/response path hold one frame or none.
        avail = end - start
        if max_frames == 0:
            return [], [], [], start, 0, STOP_LIMIT
        if avail < HEADER_SIZE:
            return [], [], [], start, HEADER_SIZE if avail else 0, STOP_END
        length = unpack_u32(buf, start + 2)[0]
        if length == 0 or length > max_len:
            return [], [], [], start, -1, STOP_BAD
        if length >= large:
            return [], [], [], start, HEADER_SIZE + length, STOP_LARGE
        rest = avail - HEADER_SIZE
        if length > rest:
            return [], [], [], start, HEADER_SIZE + length, STOP_END
        if length == rest and max_frames > 1 and avail <= MAX_LENGTH:
            return [unpack_u16(buf, start)[0]], [HEADER_SIZE], [avail], end, 0, STOP_END
        limit = avail // _MIN_FRAME + 1  # cannot be reached: the stop reason is unchanged
        if max_frames > limit:
            max_frames = limit
        try:
            cap, chans, starts, ends, pos_p, need_p, stop_p = tls.batch
        except AttributeError:
            cap, chans, starts, ends, pos_p, need_p, stop_p = _batch_arrays(max_frames)
        if max_frames > cap:
            cap, chans, starts, ends, pos_p, need_p, stop_p = _batch_arrays(max_frames)
        count = c_batch(
            buf if t is bytes else from_buffer(buf),
            n, start, end, max_len, large,
            chans, starts, ends, max_frames, pos_p, need_p, stop_p,
        )  # fmt: skip
        if count <= 0:
            if count < 0:
                raise ValueError("evl_scan_batch() rejected its arguments")
            return [], [], [], pos_p[0], need_p[0], stop_p[0]
        return (
            unpack(chans, count), unpack(starts, count), unpack(ends, count),
            pos_p[0], need_p[0], stop_p[0],
        )  # fmt: skip

    c_resp = lib.evl_resp_scan
    check_resp_scan = _pycodec.check_resp_scan

    def _resp_arrays(ncmds: int, nargs: int) -> tuple[Any, ...]:
        old = getattr(tls, "resp", None)
        ccap = max(64, ncmds, 2 * old[0] if old is not None and ncmds > old[0] else 0)
        acap = max(256, nargs, 2 * old[1] if old is not None and nargs > old[1] else 0)
        arrays = (
            ccap,
            acap,
            new("uint32_t[]", ccap),
            new("uint32_t[]", acap),
            new("uint32_t[]", acap),
            new("size_t *"),
            new("int *"),
            new("int *"),
            new("size_t *"),
        )
        tls.resp = arrays
        return arrays

    def scan_resp(
        buf: BytesLike,
        start: int,
        end: int,
        max_bulk_len: int,
        max_multibulk_len: int,
        large: int,
        max_cmds: int,
        max_args: int,
    ) -> RespScanResult:
        t = type(buf)
        if t is not bytes and t is not bytearray:
            buf = memoryview(buf).cast("B")
        n = len(buf)
        check_resp_scan(n, start, end, max_bulk_len, max_multibulk_len, large, max_cmds, max_args)
        try:
            ccap, acap, argcs, offs, lens, pos_p, stop_p, err_p, at_p = tls.resp
        except AttributeError:
            ccap, acap, argcs, offs, lens, pos_p, stop_p, err_p, at_p = _resp_arrays(
                max_cmds, max_args
            )
        if max_cmds > ccap or max_args > acap:
            ccap, acap, argcs, offs, lens, pos_p, stop_p, err_p, at_p = _resp_arrays(
                max_cmds, max_args
            )
        count = c_resp(
            buf if t is bytes else from_buffer(buf),
            n, start, end, max_bulk_len, max_multibulk_len, large,
            argcs, max_cmds, offs, lens, max_args, pos_p, stop_p, err_p, at_p,
        )  # fmt: skip
        if count <= 0:
            if count < 0:
                raise ValueError("evl_resp_scan() rejected its arguments")
            return [], [], [], pos_p[0], stop_p[0], err_p[0], at_p[0]
        cmds = unpack(argcs, count)
        total = sum(cmds)
        return (
            cmds, unpack(offs, total), unpack(lens, total),
            pos_p[0], stop_p[0], err_p[0], at_p[0],
        )  # fmt: skip

    def find_delim(buf: BytesLike, start: int, end: int, delim: BytesLike) -> int:
        t = type(buf)
        if t is not bytes and t is not bytearray:
            buf = memoryview(buf).cast("B")
        n = len(buf)
        if not 0 <= start <= end <= n:
            raise ValueError(f"need 0 <= start <= end <= len(buf), got {start}, {end}, {n}")
        if type(delim) is not bytes:
            delim = bytes(memoryview(delim).cast("B"))
        dlen = len(delim)
        if dlen == 0:
            raise ValueError("delim must not be empty")
        r = c_find(buf if t is bytes else from_buffer(buf), n, start, end, delim, dlen)
        if r < -1:
            raise ValueError("evl_find_delim() rejected its arguments")
        return r

    def encode_frames(chan: int, payloads: Iterable[BytesLike]) -> bytes:
        if not 0 <= chan <= MAX_CHANNEL:
            raise ValueError(f"channel must be in 0..{MAX_CHANNEL}, got {chan}")
        if type(payloads) is not list and type(payloads) is not tuple:
            payloads = list(payloads)
        count = len(payloads)
        if count < _ENC_C_MIN_FRAMES:
            return py_encode_frames(chan, payloads)
        lens = list(map(len, payloads))
        if 0 in lens:
            return py_encode_frames(chan, payloads)  # it raises the ValueError
        # Decide before joining: a large temporary blob is what makes the C
        # route lose for big payloads.
        if HEADER_SIZE * count + sum(lens) > _ENC_C_MAX_BYTES:
            return py_encode_frames(chan, payloads)
        blob = b"".join(payloads)
        total = HEADER_SIZE * count + len(blob)
        if total > _ENC_C_MAX_BYTES:
            return py_encode_frames(chan, payloads)
        try:
            out = tls.enc_out
        except AttributeError:
            out = tls.enc_out = new("uint8_t[]", _ENC_C_MAX_BYTES)
        # C rejects the batch when the lengths do not add up to the joined
        # blob, which happens when a payload is a memoryview of items wider
        # than a byte; the pure path handles those.
        if c_encode_frames(out, _ENC_C_MAX_BYTES, chan, blob, len(blob), lens, count) != total:
            return py_encode_frames(chan, payloads)
        return cbuffer(out, total)[:]

    return types.SimpleNamespace(
        HEADER_SIZE=HEADER_SIZE,
        DEFAULT_MAX_LEN=DEFAULT_MAX_LEN,
        scan_frames=scan_frames,
        scan_batch=scan_batch,
        scan_resp=scan_resp,
        find_delim=find_delim,
        # struct is used on purpose: struct.pack takes ~0.04 us, while a cffi
        # call to evl_encode_header() plus a destination array and a bytes
        # copy takes ~0.3-0.45 us. The C function is still tested, from
        # tests/test_codec.py and by csrc/test_codec.c.
        encode_header=_pycodec.encode_header,
        encode_frames=encode_frames,
        # The same holds for decoding one header (evl_decode_header exists for
        # the C driver and is tested directly too).
        decode_header=_pycodec.decode_header,
        ffi=ffi,
        lib=lib,
    )


py_impl = _pycodec
c_impl: types.SimpleNamespace | None = None
# Why the C extension is unavailable, for messages and test skip reasons.
c_import_error: ImportError | None = None

try:
    # import_module() keeps mypy quiet whether or not the extension is built.
    _codec = importlib.import_module("._codec", __package__)
except ImportError as exc:
    _env.c_import_failed("evloop._codec", "the C codec", exc)  # raises under EVLOOP_REQUIRE_C=1
    c_import_error = exc
else:
    c_impl = _make_c_impl(_codec.ffi, _codec.lib)

_impl: Any = py_impl if c_impl is None or _env.pure_python() else c_impl
IMPLEMENTATION = "python" if _impl is py_impl else "c"

scan_frames: Callable[[BytesLike, int, int, int, int], ScanResult] = _impl.scan_frames
scan_batch: Callable[[BytesLike, int, int, int, int, int], BatchResult] = _impl.scan_batch
scan_resp: Callable[[BytesLike, int, int, int, int, int, int, int], RespScanResult] = (
    _impl.scan_resp
)
find_delim: Callable[[BytesLike, int, int, BytesLike], int] = _impl.find_delim
encode_header: Callable[[int, int], bytes] = _impl.encode_header
encode_frames: Callable[[int, Iterable[BytesLike]], bytes] = _impl.encode_frames
decode_header: Callable[[BytesLike, int], tuple[int, int]] = _impl.decode_header
