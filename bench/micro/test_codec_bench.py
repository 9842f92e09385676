# bench/test_codec_bench.py
#
# Microbenchmarks of the frame codec, C and pure Python side by side on the
# same workload (`make microbench`, or `pytest bench --benchmark-only`).
# Frames are 64 bytes on the wire (6-byte header + 58-byte payload), the size
# where per-frame overhead rather than copying dominates.
from __future__ import annotations

import struct

import pytest

from evloop import codec

FRAME = 64
PAYLOAD = FRAME - codec.HEADER_SIZE

IMPLS = [
    pytest.param(codec.py_impl, id="python"),
    pytest.param(
        codec.c_impl,
        id="c",
        marks=pytest.mark.skipif(codec.c_impl is None, reason="C extension not built"),
    ),
]


def make_stream(n: int) -> bytearray:
    return bytearray(
        b"".join(
            struct.pack(">HI", i & 0xFFFF, PAYLOAD) + bytes([i & 0xFF]) * PAYLOAD for i in range(n)
        )
    )


def decode_all(impl, buf: bytearray, max_frames: int) -> list[bytes]:
    """What a reader does per wakeup: scan in batches and copy payloads out."""
    out: list[bytes] = []
    pos, end = 0, len(buf)
    with memoryview(buf) as view:
        while pos < end:
            chans, offs, lens, pos, need = impl.scan_frames(
                buf, pos, end, max_frames, codec.DEFAULT_MAX_LEN
            )
            out += [bytes(view[o : o + n]) for o, n in zip(offs, lens, strict=True)]
            if need:
                break
    return out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [64, 1024])
def test_decode(benchmark, impl, n: int) -> None:
    buf = make_stream(n)
    out = benchmark(decode_all, impl, buf, 64)
    assert len(out) == n and out[-1] == bytes([(n - 1) & 0xFF]) * PAYLOAD


@pytest.mark.parametrize("impl", IMPLS)
def test_scan_incomplete(benchmark, impl) -> None:
    # The per-call floor: a reader woken up with half a frame.
    buf = make_stream(1)[:40]
    assert benchmark(impl.scan_frames, buf, 0, len(buf), 64, codec.DEFAULT_MAX_LEN)[4] == FRAME


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [1, 64, 1024])
def test_encode(benchmark, impl, n: int) -> None:
    payloads = [bytes([i & 0xFF]) * PAYLOAD for i in range(n)]
    out = benchmark(impl.encode_frames, 7, payloads)
    assert len(out) == n * FRAME


@pytest.mark.parametrize("impl", IMPLS)
def test_find_delim(benchmark, impl) -> None:
    buf = bytearray(b"x" * 4094 + b"\r\n")
    assert benchmark(impl.find_delim, buf, 0, len(buf), b"\r\n") == 4094
