# evloop/_pycodec.py
#
# The pure-Python frame codec: chan (u16 BE) | length (u32 BE) | payload.
# It is the twin of csrc/evl_codec.c as wrapped by evloop/codec.py and must
# behave identically, down to which exception a bad argument raises; the test
# mixin in tests/test_codec.py runs the same cases against both and a
# hypothesis test feeds both the same byte streams. It is always importable,
# so evloop works (more slowly) where the C extension was not built.
#
# scan_resp() is the twin of evl_resp_scan: whole RESP multibulk commands in
# a buffer, as argument offsets, with RespParser's bounds. RespParser itself
# uses it only through C (see evloop/resp.py); this twin is what the C is
# tested against.
#
# Buffers are any C-contiguous bytes-like object; offsets are absolute indexes
# into it, in bytes. Nothing here keeps a reference to a buffer after it
# returns, so a caller's bytearray can be resized freely between calls.
"""The pure-Python frame codec, the twin of the C one in csrc/evl_codec.c. The comment that opens the source file gives the design and its invariants."""

from __future__ import annotations

import struct
from collections.abc import Iterable

# What the functions accept as a buffer (anything C-contiguous, really).
BytesLike = bytes | bytearray | memoryview
ScanResult = tuple[list[int], list[int], list[int], int, int]
# scan_batch: (chans, starts, ends, pos, need, stop)
BatchResult = tuple[list[int], list[int], list[int], int, int, int]
# scan_resp: (argcs, offs, lens, pos, stop, err, at)
RespScanResult = tuple[list[int], list[int], list[int], int, int, int, int]

HEADER_SIZE = 6
DEFAULT_MAX_LEN = 64 << 20
MAX_CHANNEL = 0xFFFF
MAX_LENGTH = 0xFFFFFFFF

# Why scan_batch() stopped (the values of C's enum evl_stop).
STOP_END = 0
STOP_LIMIT = 1
STOP_LARGE = 2
STOP_BAD = 3

# Why scan_resp() stopped (C's enum evl_resp_stop), and which rule a command
# broke (enum evl_resp_error).
RESP_END = 0
RESP_LIMIT = 1
RESP_INLINE = 2
RESP_LARGE = 3
RESP_ERROR = 4
RESP_E_NONE = 0
RESP_E_MBULK_LINE = 1
RESP_E_MBULK_LEN = 2
RESP_E_DOLLAR = 3
RESP_E_BULK_LINE = 4
RESP_E_BULK_LEN = 5
RESP_E_CRLF = 6
MAX_U64 = (1 << 64) - 1
# A count line, its '*' or '$' and its CRLF included, is at most this long.
RESP_LINE_MAX = 32

_HEADER = struct.Struct(">HI")
_pack = _HEADER.pack
_unpack_from = _HEADER.unpack_from


def _as_bytes(buf: BytesLike) -> BytesLike:
    # Index arithmetic is in bytes, so any other buffer (a memoryview of
    # 'I' items, an array.array...) is seen through a flat byte view.
    if type(buf) is bytes or type(buf) is bytearray:
        return buf
    return memoryview(buf).cast("B")


def check_scan(n: int, start: int, end: int, max_frames: int, max_len: int) -> None:
    """The argument checks every scan makes (the C wrappers too), so a bad
    argument is the same ValueError from either implementation."""
    if not 0 <= start <= end <= n:
        raise ValueError(f"need 0 <= start <= end <= len(buf), got {start}, {end}, {n}")
    if max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    if not 1 <= max_len <= MAX_LENGTH:
        raise ValueError(f"max_len must be in 1..{MAX_LENGTH}, got {max_len}")


def scan_frames(buf: BytesLike, start: int, end: int, max_frames: int, max_len: int) -> ScanResult:
    """Find up to `max_frames` complete frames in `buf[start:end]`.

    Returns `(chans, offs, lens, pos, need)`: per frame its channel, the
    absolute offset of its payload and the payload length; `pos`, the offset
    just past the last frame returned; and `need`, why scanning stopped there:
    0 for "max_frames reached or nothing left", n > 0 for "an incomplete frame
    that will occupy n bytes in all (6 while its header is incomplete)", -1 for
    "the header at pos has a length of 0 or above max_len".
    """
    buf = _as_bytes(buf)
    check_scan(len(buf), start, end, max_frames, max_len)
    chans: list[int] = []
    offs: list[int] = []
    lens: list[int] = []
    pos = start
    need = 0
    count = 0
    while count < max_frames:
        avail = end - pos
        if avail == 0:
            break
        if avail < HEADER_SIZE:
            need = HEADER_SIZE
            break
        chan, length = _unpack_from(buf, pos)
        if length == 0 or length > max_len:
            need = -1
            break
        if length > avail - HEADER_SIZE:
            need = HEADER_SIZE + length
            break
        chans.append(chan)
        offs.append(pos + HEADER_SIZE)
        lens.append(length)
        pos += HEADER_SIZE + length
        count += 1
    return chans, offs, lens, pos, need


def scan_batch(
    buf: BytesLike, start: int, end: int, max_len: int, large: int, max_frames: int
) -> BatchResult:
    """Find up to `max_frames` complete frames in `buf[start:end]` whose
    payload is shorter than `large` bytes: the scan behind a Pipe's batch
    read, which copies them all out in one piece.

    Returns `(chans, starts, ends, pos, need, stop)`: per frame its channel
    and the offsets of the first and one past the last payload byte,
    relative to `start`; `pos`, the absolute offset just past the last frame;
    `stop`, why the scan stopped there, and `need`:

    * STOP_END: 0 if nothing is left, else the size in all of the incomplete
      frame at pos (6 while its header is cut);
    * STOP_LIMIT: 0; max_frames were found, or the next frame would end more
      than 2**32-1 bytes after start (the C twin's offsets are 32-bit);
    * STOP_LARGE: the size in all of the frame at pos, whose payload is
      `large` bytes or more, complete or not;
    * STOP_BAD: -1; the header at pos has a length of 0 or above max_len.
    """
    buf = _as_bytes(buf)
    check_scan(len(buf), start, end, max_frames, max_len)
    if not 0 <= large <= MAX_LENGTH:
        raise ValueError(f"large must be in 0..{MAX_LENGTH}, got {large}")
    chans: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = start
    need = 0
    stop = STOP_LIMIT
    count = 0
    while count < max_frames:
        avail = end - pos
        if avail < HEADER_SIZE:
            stop = STOP_END
            need = HEADER_SIZE if avail else 0
            break
        chan, length = _unpack_from(buf, pos)
        if length == 0 or length > max_len:
            stop = STOP_BAD
            need = -1
            break
        if length >= large:
            stop = STOP_LARGE
            need = HEADER_SIZE + length
            break
        if length > avail - HEADER_SIZE:
            stop = STOP_END
            need = HEADER_SIZE + length
            break
        rel = pos - start
        if rel + HEADER_SIZE + length > MAX_LENGTH:
            break
        chans.append(chan)
        starts.append(rel + HEADER_SIZE)
        ends.append(rel + HEADER_SIZE + length)
        pos += HEADER_SIZE + length
        count += 1
    return chans, starts, ends, pos, need, stop


def find_delim(buf: BytesLike, start: int, end: int, delim: BytesLike) -> int:
    """Return the absolute offset of the first `delim` lying wholly inside
    `buf[start:end]`, or -1."""
    buf = _as_bytes(buf)
    if not 0 <= start <= end <= len(buf):
        raise ValueError(f"need 0 <= start <= end <= len(buf), got {start}, {end}, {len(buf)}")
    if type(delim) is not bytes and type(delim) is not bytearray:
        delim = memoryview(delim).cast("B")
    if len(delim) == 0:
        raise ValueError("delim must not be empty")
    if type(buf) is bytes or type(buf) is bytearray:
        return buf.find(delim, start, end)
    # A memoryview has no find(); copying the range is the simple honest way.
    i = bytes(buf[start:end]).find(delim)
    return i + start if i >= 0 else -1


def encode_header(chan: int, length: int) -> bytes:
    """Return the 6-byte header for a frame of `length` bytes on `chan`."""
    if not 0 <= chan <= MAX_CHANNEL:
        raise ValueError(f"channel must be in 0..{MAX_CHANNEL}, got {chan}")
    if not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"length must be in 0..{MAX_LENGTH}, got {length}")
    return _pack(chan, length)


def encode_frames(chan: int, payloads: Iterable[BytesLike]) -> bytes:
    """Return the frames for `payloads`, all on `chan`, back to back."""
    if not 0 <= chan <= MAX_CHANNEL:
        raise ValueError(f"channel must be in 0..{MAX_CHANNEL}, got {chan}")
    parts: list[BytesLike] = []
    append = parts.append
    for p in payloads:
        if type(p) is not bytes and type(p) is not bytearray:
            p = memoryview(p).cast("B")
        n = len(p)
        if n == 0 or n > MAX_LENGTH:
            raise ValueError(f"payload length must be in 1..{MAX_LENGTH}, got {n}")
        append(_pack(chan, n))
        append(p)
    return b"".join(parts)


def decode_header(buf: BytesLike, pos: int) -> tuple[int, int]:
    """Return `(chan, length)` from the 6 header bytes at `buf[pos:pos+6]`."""
    buf = _as_bytes(buf)
    if not 0 <= pos <= len(buf) - HEADER_SIZE:
        raise ValueError(f"need 6 header bytes at {pos}, buffer holds {len(buf)}")
    return _unpack_from(buf, pos)


def _resp_count(line: bytes) -> int | None:
    # Redis' string2ll: an optional '-', then 1 to 18 digits without a leading
    # zero ("0" is fine, "-0" is not); None for anything else.
    digits = line[1:] if line[:1] == b"-" else line
    if not digits.isdigit() or len(digits) > 18:
        return None
    if digits[:1] == b"0" and (len(digits) != 1 or len(line) != 1):
        return None
    return int(line)


def _resp_header(buf: BytesLike, p: int, end: int) -> tuple[int, int, int]:
    # The count line at buf[p], its '*' or '$' checked by the caller (C's
    # evl__resp_header): (1, offset past its CRLF, count); (0, ...) if its
    # CRLF has not arrived; (-1, ...) if it is longer than RESP_LINE_MAX;
    # (-2, ...) if the count is not a plain decimal. A copy of the line's
    # window serves bytes, bytearray and memoryview alike.
    window = bytes(buf[p : min(p + RESP_LINE_MAX, end)])
    j = window.find(b"\r\n")
    if j < 0:
        return (-1 if end - p >= RESP_LINE_MAX else 0), p, 0
    count = _resp_count(window[1:j])
    if count is None:
        return -2, p, 0
    return 1, p + j + 2, count


def check_resp_scan(
    n: int,
    start: int,
    end: int,
    max_bulk_len: int,
    max_multibulk_len: int,
    large: int,
    max_cmds: int,
    max_args: int,
) -> None:
    """scan_resp()'s argument checks (the C wrapper makes them too)."""
    if not 0 <= start <= end <= n:
        raise ValueError(f"need 0 <= start <= end <= len(buf), got {start}, {end}, {n}")
    if not (
        0 <= max_bulk_len <= MAX_U64 and 0 <= max_multibulk_len <= MAX_U64 and 0 <= large <= MAX_U64
    ):
        raise ValueError(f"max_bulk_len, max_multibulk_len and large must be in 0..{MAX_U64}")
    if max_cmds < 0:
        raise ValueError(f"max_cmds must be >= 0, got {max_cmds}")
    if not 0 <= max_args <= MAX_LENGTH:
        raise ValueError(f"max_args must be in 0..{MAX_LENGTH}, got {max_args}")


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
    """Find the whole RESP multibulk commands in `buf[start:end]`, up to
    `max_cmds` commands holding up to `max_args` arguments in all: the scan
    behind RespParser's fast path (see evl_resp_scan in csrc/evl_codec.h).

    Returns `(argcs, offs, lens, pos, stop, err, at)`: per command its
    argument count; per argument, command after command, its offset relative
    to `start` and its length; `pos`, the absolute offset past the last
    command stored or skipped (empty ones are skipped); `stop`, why the scan
    stopped there (RESP_END, RESP_LIMIT, RESP_INLINE, RESP_LARGE for a bulk
    of `large` bytes or more, RESP_ERROR); `err`, the rule broken (RESP_E_*,
    RESP_E_NONE unless RESP_ERROR); `at`, the absolute offset of the
    offending line or byte (`pos` unless RESP_ERROR).
    """
    buf = _as_bytes(buf)
    check_resp_scan(
        len(buf), start, end, max_bulk_len, max_multibulk_len, large, max_cmds, max_args
    )
    argcs: list[int] = []
    offs: list[int] = []
    lens: list[int] = []
    cmd = at = start
    stop = RESP_END
    err = RESP_E_NONE
    while True:
        p = cmd
        if p == end:
            stop = RESP_END
            break
        if len(argcs) == max_cmds:
            stop = RESP_LIMIT
            break
        if buf[p] != 0x2A:  # '*'
            stop = RESP_INLINE
            break
        r, p, count = _resp_header(buf, p, end)
        if r != 1:
            if r < 0:
                stop, err, at = RESP_ERROR, RESP_E_MBULK_LINE if r == -1 else RESP_E_MBULK_LEN, cmd
            break
        if count <= 0:
            cmd = p  # an empty command: skipped, as Redis does
            continue
        if count > max_multibulk_len:
            stop, err, at = RESP_ERROR, RESP_E_MBULK_LEN, cmd
            break
        if count > max_args - len(offs):
            stop = RESP_LIMIT
            break
        these_offs: list[int] = []
        these_lens: list[int] = []
        for _ in range(count):
            if p == end:
                stop = RESP_END
                break
            if buf[p] != 0x24:  # '$'
                stop, err, at = RESP_ERROR, RESP_E_DOLLAR, p
                break
            r, nxt, blen = _resp_header(buf, p, end)
            if r != 1 or blen < 0 or blen > max_bulk_len:
                if r != 0:
                    err = RESP_E_BULK_LINE if r == -1 else RESP_E_BULK_LEN
                    stop, at = RESP_ERROR, p
                break
            p = nxt
            if blen >= large:
                stop = RESP_LARGE
                break
            if blen + 2 > end - p:
                stop = RESP_END
                break
            if buf[p + blen] != 0x0D or buf[p + blen + 1] != 0x0A:
                stop, err, at = RESP_ERROR, RESP_E_CRLF, p + blen
                break
            if p - start + blen > MAX_LENGTH:
                stop = RESP_LIMIT
                break
            these_offs.append(p - start)
            these_lens.append(blen)
            p += blen + 2
        else:
            argcs.append(count)
            offs += these_offs
            lens += these_lens
            cmd = p
            continue
        break
    return argcs, offs, lens, cmd, stop, err, at if err != RESP_E_NONE else cmd
