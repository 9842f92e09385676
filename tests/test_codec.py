# tests/test_codec.py
#
# The frame codec, run once per implementation: CodecCases is a mixin whose
# cases run as TestPython (evloop._pycodec) and TestC (the cffi extension
# behind evloop.codec's wrappers). TestC is skipped only when the extension
# is not built and EVLOOP_REQUIRE_C is unset; with EVLOOP_REQUIRE_C=1 a
# missing extension is a failure. On top of the mixin, a hypothesis test
# drip-feeds the same generated frame streams (valid and invalid headers, cut
# anywhere, down to one byte at a time) to a reader built on each
# implementation and requires identical results, and a seeded fuzz test does
# the same with random bytes and random arguments.
from __future__ import annotations

import array
import mmap
import os
import random
import struct
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evloop import _pycodec, codec

REQUIRE_C = os.environ.get("EVLOOP_REQUIRE_C", "") not in ("", "0")
PURE = os.environ.get("EVLOOP_PURE_PYTHON", "") not in ("", "0")
MAX32 = 0xFFFFFFFF

IMPLS = [pytest.param(codec.py_impl, id="python")]
if codec.c_impl is not None or REQUIRE_C:
    IMPLS.append(pytest.param(codec.c_impl, id="c"))

needs_c = pytest.mark.skipif(
    codec.c_impl is None and not REQUIRE_C,
    reason=f"C extension evloop._codec not built ({codec.c_import_error})",
)


def hdr(chan: int, length: int) -> bytes:
    return struct.pack(">HI", chan, length)


def frame(chan: int, payload: bytes) -> bytes:
    return hdr(chan, len(payload)) + payload


# Payloads with NUL and high-bit bytes everywhere, including the first and
# last positions, where an off-by-one would show.
PAYLOADS = [b"\x00", b"\xff", b"\x00\xff\x80\x7f\x00", bytes(range(256)), b"\x80" * 7]


class CodecCases:
    impl: object = None

    @pytest.fixture(autouse=True)
    def _require_impl(self) -> None:
        # Only reachable with EVLOOP_REQUIRE_C=1 and no extension: fail, not skip.
        assert self.impl is not None, f"C codec required but missing: {codec.c_import_error}"

    # --- constants and shape ---------------------------------------------

    def test_constants(self) -> None:
        assert self.impl.HEADER_SIZE == 6
        assert self.impl.DEFAULT_MAX_LEN == 64 << 20

    def test_result_types(self) -> None:
        res = self.impl.scan_frames(frame(1, b"x") * 2, 0, 14, 8, 10)
        assert res == ([1, 1], [6, 13], [1, 1], 14, 0)
        assert all(type(x) is list for x in res[:3]) and all(type(x) is int for x in res[3:])
        assert all(type(v) is int for lst in res[:3] for v in lst)

    # --- scan_frames -------------------------------------------------------

    def test_scan_empty(self) -> None:
        for buf in (b"", bytearray(), memoryview(b"")):
            assert self.impl.scan_frames(buf, 0, 0, 10, 100) == ([], [], [], 0, 0)

    def test_scan_nul_and_high_bytes(self) -> None:
        chans = [0, 0xFFFF, 0x8000, 0x00FF, 0x7F00]
        data = b"".join(frame(c, p) for c, p in zip(chans, PAYLOADS, strict=True))
        got = self.impl.scan_frames(data, 0, len(data), 100, 1000)
        offs, pos = [], 0
        for p in PAYLOADS:
            offs.append(pos + 6)
            pos += 6 + len(p)
        assert got == (chans, offs, [len(p) for p in PAYLOADS], len(data), 0)
        assert [data[o : o + n] for o, n in zip(got[1], got[2], strict=True)] == PAYLOADS

    def test_scan_cut_at_every_point(self) -> None:
        frames = [frame(7, b"\x00\xff"), frame(0xFFFF, b"\x80"), frame(0, b"\x00" * 10)]
        data = b"".join(frames)
        bounds = [0]
        for f in frames:
            bounds.append(bounds[-1] + len(f))
        for cut in range(len(data) + 1):
            got = self.impl.scan_frames(data[:cut], 0, cut, 100, 100)
            complete = max(i for i, b in enumerate(bounds) if b <= cut)
            pos = bounds[complete]
            assert len(got[0]) == complete, cut
            assert got[3] == pos, cut
            rest = cut - pos
            if rest == 0:
                want_need = 0
            elif rest < 6:
                want_need = 6
            else:
                want_need = len(frames[complete])
            assert got[4] == want_need, cut

    def test_scan_exactly_one_frame_filling_the_range(self) -> None:
        # The request/response shape, which the C wrapper answers in Python.
        data = b"junk" + frame(0xBEEF, b"\x00\xff\x80ab") + b"tail"
        got = self.impl.scan_frames(data, 4, 4 + 11, 64, 100)
        assert got == ([0xBEEF], [10], [5], 15, 0)
        assert self.impl.scan_frames(bytearray(data), 4, 4 + 11, 1, 100) == got
        assert self.impl.scan_frames(data, 4, 4 + 11, 64, 4)[3:] == (4, -1)

    def test_scan_header_cut_inside_larger_buffer(self) -> None:
        # end, not len(buf), bounds the scan: bytes past end are never read.
        data = frame(3, b"abc") + hdr(4, 1) + b"z" + b"\xff" * 20
        assert self.impl.scan_frames(data, 0, 9, 10, 10) == ([3], [6], [3], 9, 0)
        for end in range(10, 15):
            assert self.impl.scan_frames(data, 0, end, 10, 10) == ([3], [6], [3], 9, 6)
        assert self.impl.scan_frames(data, 0, 15, 10, 10) == ([3], [6], [3], 9, 7)
        assert self.impl.scan_frames(data, 0, 16, 10, 10) == ([3, 4], [6, 15], [3, 1], 16, 0)

    def test_scan_boundary_lengths(self) -> None:
        s = self.impl.scan_frames
        assert s(hdr(1, 0), 0, 6, 10, 100) == ([], [], [], 0, -1)
        assert s(hdr(1, 0), 0, 6, 10, MAX32) == ([], [], [], 0, -1)
        assert s(frame(1, b"\x00"), 0, 7, 10, 1) == ([1], [6], [1], 7, 0)
        assert s(hdr(1, 1), 0, 6, 10, 1) == ([], [], [], 0, 7)
        assert s(hdr(1, 2), 0, 6, 10, 1) == ([], [], [], 0, -1)
        assert s(hdr(1, 100), 0, 6, 10, 100) == ([], [], [], 0, 106)
        assert s(hdr(1, 101), 0, 6, 10, 100) == ([], [], [], 0, -1)
        assert s(frame(2, b"\xff" * 100), 0, 106, 10, 100) == ([2], [6], [100], 106, 0)
        assert s(hdr(1, MAX32), 0, 6, 10, MAX32) == ([], [], [], 0, 6 + MAX32)
        assert s(hdr(1, MAX32), 0, 6, 10, MAX32 - 1) == ([], [], [], 0, -1)
        assert s(hdr(1, MAX32), 0, 6, 10, codec.DEFAULT_MAX_LEN) == ([], [], [], 0, -1)
        dml = codec.DEFAULT_MAX_LEN
        assert s(hdr(1, dml), 0, 6, 1, dml) == ([], [], [], 0, 6 + dml)
        assert s(hdr(1, dml + 1), 0, 6, 1, dml) == ([], [], [], 0, -1)

    # --- scan_batch (the Pipe's batch take) --------------------------------

    def test_batch_offsets_are_relative_and_stop_reasons(self) -> None:
        b = self.impl.scan_batch
        data = b"pre" + frame(1, b"\x00") + frame(2, b"\xff\x80") + hdr(3, 5) + b"ab"
        # Two complete frames, then an incomplete one needing 11 bytes.
        assert b(data, 3, len(data), 100, 1000, 10) == ([1, 2], [6, 13], [7, 15], 18, 11, 0)
        assert b(data, 3, 18, 100, 1000, 10) == ([1, 2], [6, 13], [7, 15], 18, 0, 0)
        assert b(data, 3, 20, 100, 1000, 10) == ([1, 2], [6, 13], [7, 15], 18, 6, 0)
        # max_frames: stopped by the limit, even right at the end.
        assert b(data, 3, 18, 100, 1000, 1) == ([1], [6], [7], 10, 0, 1)
        assert b(data, 3, 18, 100, 1000, 0) == ([], [], [], 3, 0, 1)
        # A large frame stops the batch, complete or not.
        assert b(data, 3, 18, 100, 2, 10) == ([1], [6], [7], 10, 8, 2)
        assert b(data, 3, 18, 100, 1, 10) == ([], [], [], 3, 7, 2)
        # A bad length: the frames before it, then -1.
        bad = frame(1, b"a") + hdr(4, 0) + frame(5, b"b")
        assert b(bad, 0, len(bad), 100, 1000, 10) == ([1], [6], [7], 7, -1, 3)
        assert b(bad, 7, len(bad), 100, 1000, 10) == ([], [], [], 7, -1, 3)
        over = hdr(1, 101)
        assert b(over, 0, 6, 100, 1000, 10) == ([], [], [], 0, -1, 3)
        # Nothing, and a header cut short.
        assert b(b"", 0, 0, 100, 1000, 10) == ([], [], [], 0, 0, 0)
        assert b(b"\x00\x01\x00", 0, 3, 100, 1000, 10) == ([], [], [], 0, 6, 0)

    def test_batch_exactly_one_frame(self) -> None:
        b = self.impl.scan_batch
        data = frame(7, b"\x00" * 64)
        assert b(data, 0, 70, 100, 1000, 10) == ([7], [6], [70], 70, 0, 0)
        assert b(data, 0, 70, 100, 1000, 1) == ([7], [6], [70], 70, 0, 1)
        assert b(data, 0, 70, 63, 1000, 10) == ([], [], [], 0, -1, 3)
        assert b(data, 0, 70, 100, 64, 10) == ([], [], [], 0, 70, 2)
        assert b(data, 0, 70, 100, 65, 10) == ([7], [6], [70], 70, 0, 0)

    def test_batch_payloads_slice_out_of_the_copied_run(self) -> None:
        payloads = [bytes([i]) * (i + 1) for i in range(50)] + [b"\x00", b"\xff" * 300]
        data = b"".join(frame(i, p) for i, p in enumerate(payloads))
        chans, starts, ends, pos, need, stop = self.impl.scan_batch(
            bytearray(data), 0, len(data), 1000, 1000, 1000
        )
        run = data[:pos]
        assert [run[s:e] for s, e in zip(starts, ends, strict=True)] == payloads
        assert chans == list(range(len(payloads))) and (pos, need, stop) == (len(data), 0, 0)

    @pytest.mark.parametrize(
        "args",
        [(-1, 5, 10, 10, 1), (0, 99, 10, 10, 1), (3, 2, 10, 10, 1), (0, 5, 0, 10, 1),
         (0, 5, MAX32 + 1, 10, 1), (0, 5, 10, -1, 1), (0, 5, 10, MAX32 + 1, 1), (0, 5, 10, 10, -1)],
    )  # fmt: skip
    def test_batch_bad_arguments(self, args: tuple[int, int, int, int, int]) -> None:
        with pytest.raises(ValueError):
            self.impl.scan_batch(b"\x00" * 10, *args)

    def test_scan_frames_before_invalid_header_are_returned(self) -> None:
        data = frame(1, b"a") + frame(2, b"bb") + hdr(3, 0) + frame(4, b"d")
        assert self.impl.scan_frames(data, 0, len(data), 10, 10) == (
            [1, 2],
            [6, 13],
            [1, 2],
            15,
            -1,
        )
        # The caller decodes the bad header at pos itself.
        assert self.impl.decode_header(data, 15) == (3, 0)

    def test_scan_max_frames(self) -> None:
        data = frame(1, b"a") * 5 + hdr(9, 0)
        s = self.impl.scan_frames
        assert s(data, 0, len(data), 0, 10) == ([], [], [], 0, 0)
        assert s(data, 7, len(data), 0, 10) == ([], [], [], 7, 0)
        assert s(data, 0, len(data), 1, 10) == ([1], [6], [1], 7, 0)
        assert s(data, 0, len(data), 5, 10) == ([1] * 5, [6, 13, 20, 27, 34], [1] * 5, 35, 0)
        assert s(data, 0, len(data), 6, 10)[3:] == (35, -1)
        assert s(data, 0, len(data), 10**9, 10)[3:] == (35, -1)
        # max_frames reached exactly at end still says 0.
        assert s(data, 0, 35, 5, 10)[3:] == (35, 0)

    def test_scan_many_frames(self) -> None:
        # More frames than any preallocated output array, then fewer again.
        n = 5000
        data = b"".join(frame(i & 0xFFFF, bytes([i & 0xFF])) for i in range(n))
        chans, offs, lens, pos, need = self.impl.scan_frames(data, 0, len(data), n, 1)
        assert chans == list(range(n)) and lens == [1] * n and pos == len(data) and need == 0
        assert offs == [7 * i + 6 for i in range(n)]
        assert self.impl.scan_frames(data, 7, len(data), 2, 1) == ([1, 2], [13, 20], [1, 1], 21, 0)
        assert len(self.impl.scan_frames(data, 0, len(data), n - 1, 1)[0]) == n - 1

    def test_scan_absolute_offsets(self) -> None:
        junk = b"\xff\x00" * 5
        data = junk + frame(5, b"hello") + frame(6, b"\x00") + junk
        start, end = len(junk), len(data) - len(junk)
        got = self.impl.scan_frames(data, start, end, 10, 10)
        assert got == ([5, 6], [start + 6, start + 17], [5, 1], end, 0)

    def test_scan_buffer_types(self) -> None:
        data = frame(1, b"ab") + frame(2, b"c") + b"\x00\x00"
        want = ([1, 2], [6, 14], [2, 1], 15, 6)
        ba = bytearray(data)
        for buf in (data, ba, memoryview(data), memoryview(ba), array.array("B", data)):
            assert self.impl.scan_frames(buf, 0, len(data), 10, 10) == want
        # A memoryview slice is its own buffer, indexed from 0.
        mv = memoryview(b"\xee" * 3 + data)[3:]
        assert self.impl.scan_frames(mv, 0, len(data), 10, 10) == want
        # Offsets are in bytes even for buffers of wider items.
        wide = array.array("H", frame(7, b"ab"))
        assert self.impl.scan_frames(wide, 0, 8, 10, 10) == ([7], [6], [2], 8, 0)

    @pytest.mark.parametrize(
        "args",
        [
            (-1, 5, 1, 10),
            (3, 2, 1, 10),
            (0, 11, 1, 10),
            (11, 11, 1, 10),
            (0, 10, -1, 10),
            (0, 10, 1, 0),
            (0, 10, 1, -5),
            (0, 10, 1, MAX32 + 1),
        ],
    )
    def test_scan_bad_arguments(self, args: tuple[int, int, int, int]) -> None:
        with pytest.raises(ValueError):
            self.impl.scan_frames(bytearray(10), *args)

    def test_scan_leaves_bytearray_resizable(self) -> None:
        buf = bytearray(frame(1, b"x") * 3)
        self.impl.scan_frames(buf, 0, len(buf), 10, 10)
        buf.extend(frame(2, b"y"))  # BufferError if the scan kept an export.
        del buf[:7]
        assert self.impl.scan_frames(buf, 0, len(buf), 10, 10) == (
            [1, 1, 2],
            [6, 13, 20],
            [1, 1, 1],
            21,
            0,
        )
        with pytest.raises(ValueError):
            self.impl.scan_frames(buf, 0, len(buf) + 1, 10, 10)
        buf.clear()
        assert self.impl.scan_frames(buf, 0, 0, 10, 10) == ([], [], [], 0, 0)

    def test_scan_from_threads(self) -> None:
        # cffi drops the GIL during the C call, so threads must not share
        # output arrays. A tiny switch interval makes threads interleave
        # inside and right after that call.
        errors: list[BaseException] = []

        def work(chan: int) -> None:
            data = b"".join(frame(chan, bytes([chan]) * (1 + i % 9)) for i in range(2000))
            want = _pycodec.scan_frames(data, 0, len(data), 2000, 100)
            try:
                for _ in range(100):
                    assert self.impl.scan_frames(data, 0, len(data), 2000, 100) == want
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            threads = [threading.Thread(target=work, args=(c,)) for c in (1, 2, 3, 4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(old)
        assert not errors, errors[0]

    # --- find_delim --------------------------------------------------------

    def test_find_delim(self) -> None:
        data = b"ab\r\ncd\x00\xff\r\n"
        f = self.impl.find_delim
        for buf in (data, bytearray(data), memoryview(data)):
            n = len(buf)
            assert f(buf, 0, n, b"\r\n") == 2
            assert f(buf, 3, n, b"\r\n") == 8
            assert f(buf, 0, n, b"\n") == 3
            assert f(buf, 0, n, b"\x00") == 6
            assert f(buf, 0, n, b"\xff") == 7
            assert f(buf, 0, n, b"\x00\xff\r") == 6
            assert f(buf, 0, n, b"x") == -1
            assert f(buf, 0, 3, b"\r\n") == -1  # straddles end
            assert f(buf, 0, 4, b"\r\n") == 2
            assert f(buf, 3, 9, b"\r\n") == -1  # straddles start and end
            assert f(buf, 2, 4, b"\r\n") == 2
            assert f(buf, 2, 3, b"\r\n") == -1  # longer than the range
            assert f(buf, 0, n, data) == 0
            assert f(buf, 1, n, data) == -1
            assert f(buf, 5, 5, b"d") == -1
            assert f(buf, n, n, b"\n") == -1
            assert f(buf, 0, n, bytearray(b"cd")) == 4
            assert f(buf, 0, n, memoryview(b"cd")) == 4
        assert f(b"", 0, 0, b"\n") == -1

    @pytest.mark.parametrize("args", [(-1, 3, b"a"), (2, 1, b"a"), (0, 4, b"a"), (0, 3, b"")])
    def test_find_delim_bad_arguments(self, args: tuple[int, int, bytes]) -> None:
        with pytest.raises(ValueError):
            self.impl.find_delim(bytearray(b"abc"), *args)

    # --- headers -----------------------------------------------------------

    def test_encode_header(self) -> None:
        e = self.impl.encode_header
        assert e(0, 0) == b"\x00" * 6
        assert e(0xFFFF, MAX32) == b"\xff" * 6
        assert e(0x0102, 0x03040506) == b"\x01\x02\x03\x04\x05\x06"
        assert e(0x8000, 0x80) == b"\x80\x00\x00\x00\x00\x80"
        assert type(e(1, 1)) is bytes

    @pytest.mark.parametrize("args", [(-1, 1), (0x10000, 1), (1, -1), (1, MAX32 + 1)])
    def test_encode_header_out_of_range(self, args: tuple[int, int]) -> None:
        with pytest.raises(ValueError):
            self.impl.encode_header(*args)

    def test_decode_header(self) -> None:
        data = b"\xee" + hdr(0xABCD, MAX32) + b"\x00"
        for buf in (data, bytearray(data), memoryview(data)):
            assert self.impl.decode_header(buf, 1) == (0xABCD, MAX32)
            assert self.impl.decode_header(buf, 2) == (0xCDFF, 0xFFFFFF00)
            for pos in (-1, 3, 8, 100):
                with pytest.raises(ValueError):
                    self.impl.decode_header(buf, pos)
        for cut in range(6):
            with pytest.raises(ValueError):
                self.impl.decode_header(hdr(1, 1)[:cut], 0)

    # --- encode_frames -----------------------------------------------------

    def test_encode_frames(self) -> None:
        e = self.impl.encode_frames
        assert e(1, []) == b""
        assert e(1, [b"\x00"]) == frame(1, b"\x00")
        assert e(0xFFFF, PAYLOADS) == b"".join(frame(0xFFFF, p) for p in PAYLOADS)
        assert type(e(1, [b"a"] * 40)) is bytes
        for n in (1, 15, 16, 17, 100, 1000):
            payloads = [bytes([i & 0xFF, 0, 0xFF])[: 1 + i % 3] for i in range(n)]
            want = b"".join(frame(0x8001, p) for p in payloads)
            assert e(0x8001, payloads) == want, n
            assert e(0x8001, tuple(payloads)) == want, n
            assert e(0x8001, iter(payloads)) == want, n
            assert e(0x8001, [bytearray(p) for p in payloads]) == want, n
            assert e(0x8001, [memoryview(p) for p in payloads]) == want, n

    def test_encode_frames_large(self) -> None:
        # Bigger than the C route takes, and right at the edge of it.
        for size, n in ((65536, 8), (4096, 64), (1 << 20, 2), (255, 1024), (256, 1024)):
            payloads = [bytes([i & 0xFF]) * size for i in range(n)]
            got = self.impl.encode_frames(3, payloads)
            assert got == b"".join(frame(3, p) for p in payloads)

    def test_encode_frames_wide_items(self) -> None:
        # The length in the header is in bytes, not items.
        for n in (1, 20):
            payloads = [array.array("I", [i, 0xFFFFFFFF]) for i in range(n)]
            want = b"".join(frame(9, p.tobytes()) for p in payloads)
            assert self.impl.encode_frames(9, payloads) == want

    def test_encode_frames_roundtrip(self) -> None:
        payloads = [bytes([i]) * (1 + i) for i in range(256)]
        data = self.impl.encode_frames(42, payloads)
        chans, offs, lens, pos, need = self.impl.scan_frames(data, 0, len(data), 1000, 256)
        assert chans == [42] * 256 and pos == len(data) and need == 0
        assert [data[o : o + n] for o, n in zip(offs, lens, strict=True)] == payloads

    @pytest.mark.parametrize("n", [1, 5, 16, 40])
    def test_encode_frames_empty_payload(self, n: int) -> None:
        for where in (0, n - 1):
            payloads = [b"x"] * n
            payloads[where] = b""
            with pytest.raises(ValueError):
                self.impl.encode_frames(1, payloads)

    @pytest.mark.parametrize("chan", [-1, 0x10000])
    def test_encode_frames_bad_channel(self, chan: int) -> None:
        for n in (0, 1, 30):
            with pytest.raises(ValueError):
                self.impl.encode_frames(chan, [b"x"] * n)

    def test_encode_frames_payload_too_long(self) -> None:
        # A lazily mapped region one byte over the limit; it is never touched.
        try:
            big = mmap.mmap(-1, MAX32 + 1)
        except (OSError, OverflowError, ValueError) as e:  # pragma: no cover
            pytest.skip(f"cannot map 4 GiB of address space: {e}")
        try:
            for payloads in ([big], [b"x"] * 20 + [big]):
                with pytest.raises(ValueError):
                    self.impl.encode_frames(1, payloads)
            del payloads
        finally:
            big.close()

    # --- scan_resp (RespParser's fast path) ----------------------------------

    def test_resp_commands_offsets_and_skips(self) -> None:
        r = self.impl.scan_resp
        data = b"xx*0\r\n*2\r\n$3\r\nGET\r\n$4\r\n\x00\xff\r\n\r\n*-1\r\n*1\r\n$0\r\n\r\n"
        got = r(data, 2, len(data), 100, 100, 100, 10, 10)
        assert got == ([2, 1], [12, 21, 40], [3, 4, 0], 44, codec.RESP_END, 0, 44)
        argcs, offs, lens = got[:3]
        assert [data[2 + o : 2 + o + n] for o, n in zip(offs, lens, strict=True)] == [
            b"GET",
            b"\x00\xff\r\n",
            b"",
        ]
        # Limits stop before a command, not after the empty ones that follow.
        assert r(data, 2, len(data), 100, 100, 100, 1, 10)[3:5] == (29, codec.RESP_LIMIT)
        assert r(data, 2, len(data), 100, 100, 100, 10, 2)[3:5] == (34, codec.RESP_LIMIT)
        assert r(data, 2, len(data), 100, 100, 100, 10, 1)[3:5] == (6, codec.RESP_LIMIT)
        assert r(data, 2, len(data), 100, 100, 4, 10, 10)[3:5] == (6, codec.RESP_LARGE)
        assert r(b"*1\r\n$1\r\na\r\nPING\r\n", 0, 17, 9, 9, 9, 9, 9) == (
            [1],
            [8],
            [1],
            11,
            codec.RESP_INLINE,
            0,
            11,
        )
        assert r(b"", 0, 0, 9, 9, 9, 0, 0) == ([], [], [], 0, codec.RESP_END, 0, 0)

    def test_resp_cut_at_every_point(self) -> None:
        data = b"*2\r\n$3\r\nSET\r\n$2\r\n\r\n\r\n*1\r\n$1\r\n\xff\r\n"
        for cut in range(len(data) + 1):
            for buf in (data[:cut], bytearray(data[:cut]), memoryview(data)[:cut]):
                got = self.impl.scan_resp(buf, 0, cut, 9, 9, 9, 9, 9)
                n = 0 if cut < 21 else 1 if cut < len(data) else 2
                assert got[0] == [2, 1][:n] and got[3] == [0, 21, len(data)][n], cut
                assert got[4:] == (codec.RESP_END, 0, got[3]), cut

    @pytest.mark.parametrize(
        "data, err, at",
        [(b"*2\r\n$3\r\nGET\r\n:", codec.RESP_E_DOLLAR, 13),
         (b"*x\r\n", codec.RESP_E_MBULK_LEN, 0), (b"*-0\r\n", codec.RESP_E_MBULK_LEN, 0),
         (b"*01\r\n", codec.RESP_E_MBULK_LEN, 0), (b"*\r\n", codec.RESP_E_MBULK_LEN, 0),
         (b"*11\r\n", codec.RESP_E_MBULK_LEN, 0),
         (b"*1\r\n$-1\r\n", codec.RESP_E_BULK_LEN, 4), (b"*1\r\n$11\r\n", codec.RESP_E_BULK_LEN, 4),
         (b"*1\r\n$3\r\nabcXY", codec.RESP_E_CRLF, 11),
         (b"*" + b"0" * 31, codec.RESP_E_MBULK_LINE, 0),
         (b"*" + b"0" * 28 + b"1\r\n", codec.RESP_E_MBULK_LEN, 0),
         (b"*1\r\n$" + b"9" * 31, codec.RESP_E_BULK_LINE, 4),
         (b"*1\r\n$1\r\na\r\n*1\r\n$1\r\n!\r\r", codec.RESP_E_CRLF, 20)],
    )  # fmt: skip
    def test_resp_rules(self, data: bytes, err: int, at: int) -> None:
        got = self.impl.scan_resp(data, 0, len(data), 10, 10, 10**6, 9, 9)
        assert got[4:] == (codec.RESP_ERROR, err, at)
        assert got[3] == (11 if len(got[0]) else 0)

    def test_resp_counts_at_their_limits(self) -> None:
        r = self.impl.scan_resp
        big = b"*1\r\n$999999999999999999\r\n"
        u64 = (1 << 64) - 1
        assert r(big, 0, len(big), u64, u64, u64, 9, 9)[4:6] == (codec.RESP_END, 0)
        assert r(big, 0, len(big), 10**18 - 1, u64, u64, 9, 9)[4:6] == (codec.RESP_END, 0)
        assert r(big, 0, len(big), 10**18 - 2, u64, u64, 9, 9)[4:6] == (
            codec.RESP_ERROR,
            codec.RESP_E_BULK_LEN,
        )
        over = b"*1\r\n$1000000000000000000\r\n"
        assert r(over, 0, len(over), u64, u64, u64, 9, 9)[5] == codec.RESP_E_BULK_LEN
        assert r(b"*3\r\n", 0, 4, 9, 3, 9, 9, 9)[4:6] == (codec.RESP_END, 0)
        assert r(b"*4\r\n", 0, 4, 9, 3, 9, 9, 9)[5] == codec.RESP_E_MBULK_LEN

    @pytest.mark.parametrize(
        "args",
        [(-1, 5, 9, 9, 9, 9, 9), (3, 2, 9, 9, 9, 9, 9), (0, 11, 9, 9, 9, 9, 9),
         (0, 5, -1, 9, 9, 9, 9), (0, 5, 9, 1 << 64, 9, 9, 9), (0, 5, 9, 9, -1, 9, 9),
         (0, 5, 9, 9, 9, -1, 9), (0, 5, 9, 9, 9, 9, -1), (0, 5, 9, 9, 9, 9, MAX32 + 1)],
    )  # fmt: skip
    def test_resp_bad_arguments(self, args: tuple[int, ...]) -> None:
        with pytest.raises(ValueError):
            self.impl.scan_resp(b"*0\r\n*0\r\n", *args)


class TestPython(CodecCases):
    impl = codec.py_impl


@needs_c
class TestC(CodecCases):
    impl = codec.c_impl


@needs_c
class TestCFunctions:
    """The C entry points called directly, including the two the wrappers
    leave to struct (evl_encode_header, evl_decode_header)."""

    @pytest.fixture(autouse=True)
    def _c(self) -> None:
        assert codec.c_impl is not None, f"C codec required but missing: {codec.c_import_error}"
        self.ffi = codec.c_impl.ffi
        self.lib = codec.c_impl.lib

    def test_encode_header(self) -> None:
        dst = self.ffi.new("uint8_t[7]", [0x11] * 7)
        assert self.lib.evl_encode_header(dst, 5, 1, 2) == -1
        assert bytes(self.ffi.buffer(dst)) == b"\x11" * 7
        assert self.lib.evl_encode_header(dst, 6, 0xABCD, 0x80FF0001) == 6
        assert bytes(self.ffi.buffer(dst)) == b"\xab\xcd\x80\xff\x00\x01\x11"
        assert self.lib.evl_encode_header(self.ffi.NULL, 6, 1, 2) == -1

    def test_decode_header(self) -> None:
        chan = self.ffi.new("uint16_t *")
        length = self.ffi.new("uint32_t *")
        data = b"\x00" + hdr(0xFFFF, MAX32)
        assert self.lib.evl_decode_header(data, 7, 1, chan, length) == 6
        assert (chan[0], length[0]) == (0xFFFF, MAX32)
        for pos in (2, 7, 8, 2**63):
            assert self.lib.evl_decode_header(data, 7, pos, chan, length) == -1

    def test_scan_rejects_bad_arguments(self) -> None:
        ffi, lib = self.ffi, self.lib
        out = [ffi.new(t, 4) for t in ("uint16_t[]", "uint32_t[]", "size_t[]")]
        pos, need = ffi.new("size_t *", 99), ffi.new("int64_t *", 99)
        data = frame(1, b"x")
        assert lib.evl_scan_frames(data, 7, 0, 7, 10, *out, 4, pos, need) == 1
        assert (pos[0], need[0]) == (7, 0)
        pos[0] = need[0] = 99
        for start, end, max_len in ((3, 2, 10), (0, 8, 10), (0, 7, 0)):
            assert lib.evl_scan_frames(data, 7, start, end, max_len, *out, 4, pos, need) == -1
        assert (pos[0], need[0]) == (99, 99)

    def test_find_and_encode_reject_bad_arguments(self) -> None:
        ffi, lib = self.ffi, self.lib
        assert lib.evl_find_delim(b"abc", 3, 0, 3, b"", 0) == -2
        assert lib.evl_find_delim(b"abc", 3, 2, 1, b"a", 1) == -2
        assert lib.evl_find_delim(b"abc", 3, 0, 4, b"a", 1) == -2
        assert lib.evl_find_delim(b"abc", 3, 0, 3, b"bc", 2) == 1
        dst = ffi.new("uint8_t[]", 20)
        assert lib.evl_encode_frames(dst, 20, 1, b"abc", 3, [1, 2], 2) == 15
        assert lib.evl_encode_frames(dst, 14, 1, b"abc", 3, [1, 2], 2) == -1
        assert lib.evl_encode_frames(dst, 20, 1, b"abc", 3, [1, 1], 2) == -1
        assert lib.evl_encode_frames(dst, 20, 1, b"abc", 3, [3, 0], 2) == -1


# --- the module-level selection ---------------------------------------------


def test_selected_implementation() -> None:
    if PURE or codec.c_impl is None:
        assert codec.IMPLEMENTATION == "python"
        assert codec.scan_frames is _pycodec.scan_frames
    else:
        assert codec.IMPLEMENTATION == "c"
        assert codec.scan_frames is codec.c_impl.scan_frames
    if REQUIRE_C:
        assert codec.c_impl is not None
    impl = codec.c_impl if codec.IMPLEMENTATION == "c" else codec.py_impl
    for name in ("scan_frames", "find_delim", "encode_header", "encode_frames", "decode_header"):
        assert getattr(codec, name) is getattr(impl, name)
        assert callable(getattr(codec.py_impl, name))
    assert codec.HEADER_SIZE == 6 and codec.DEFAULT_MAX_LEN == 64 << 20


def _import_codec_without_extension(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Blocking the module in sys.modules makes its import fail as if unbuilt.
    code = (
        "import sys; sys.modules['evloop._codec'] = None\n"
        "import evloop.codec as c; print(c.IMPLEMENTATION, c.c_impl)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVLOOP_")}
    env.update(env_extra)
    root = os.path.dirname(os.path.dirname(os.path.abspath(codec.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )


def test_fallback_without_extension() -> None:
    r = _import_codec_without_extension({})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["python", "None"]


def test_require_c_makes_missing_extension_fatal() -> None:
    r = _import_codec_without_extension({"EVLOOP_REQUIRE_C": "1"})
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "EVLOOP_REQUIRE_C" in r.stderr


# --- both implementations on the same input ------------------------------------


def read_stream(impl: object, chunks: list[bytes], max_len: int, max_frames: int) -> list[tuple]:
    """A reader like a Pipe's: append each chunk to a bytearray, scan,
    consume whole frames, compact now and then, stop at a bad header."""
    buf = bytearray()
    start = 0
    log: list[tuple] = []
    for chunk in chunks:
        buf += chunk
        while True:
            chans, offs, lens, pos, need = impl.scan_frames(
                buf, start, len(buf), max_frames, max_len
            )
            log.append(("scan", len(chans), pos - start, need))
            log.extend(
                ("frame", c, bytes(buf[o : o + n]))
                for c, o, n in zip(chans, offs, lens, strict=True)
            )
            start = pos
            if need == -1:
                log.append(("bad", impl.decode_header(buf, pos)))
                return log
            if need == 0 and pos < len(buf):
                continue  # stopped by max_frames: more may be ready
            break
        if start > 32:
            del buf[:start]
            start = 0
    log.append(("left", bytes(buf[start:])))
    return log


def read_stream_batched(
    impl: object, chunks: list[bytes], max_len: int, max_frames: int, large: int
) -> list[tuple]:
    """A reader like the Pipe's batch take: scan_batch, copy the run of
    complete frames out in one piece and slice payloads from the copy; a
    large frame is taken alone once it is whole."""
    buf = bytearray()
    log: list[tuple] = []
    for chunk in chunks:
        buf += chunk
        while True:
            chans, starts, ends, pos, need, stop = impl.scan_batch(
                buf, 0, len(buf), max_len, large, max_frames
            )
            log.append(("scan", len(chans), pos, need, stop))
            run = bytes(buf[:pos])
            log.extend(("frame", c, run[a:b]) for c, a, b in zip(chans, starts, ends, strict=True))
            del buf[:pos]
            if stop == codec.STOP_BAD:
                log.append(("bad", impl.decode_header(buf, 0)))
                return log
            if stop == codec.STOP_LARGE and len(buf) >= need:
                log.append(("frame", impl.decode_header(buf, 0)[0], bytes(buf[6:need])))
                del buf[:need]
                continue
            if stop == codec.STOP_LIMIT:
                continue
            break
    log.append(("left", bytes(buf)))
    return log


def model_stream(frames: list[tuple[int, bytes]], tail: bytes, max_len: int) -> list[tuple]:
    """What any correct reader must deliver, ignoring how it was chunked."""
    out: list[tuple] = [("frame", c, p) for c, p in frames]
    if len(tail) >= 6:
        chan, length = struct.unpack(">HI", tail[:6])
        if length == 0 or length > max_len:
            out.append(("bad", (chan, length)))
            return out
    out.append(("left", tail))
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[tuple[int, bytes]], bytes, list[bytes], int, int]:
    max_len = draw(st.sampled_from([1, 2, 5, 16, 100, 1 << 16, 64 << 20, MAX32]))
    payload = st.binary(min_size=1, max_size=min(max_len, 300))
    frames = draw(
        st.lists(st.tuples(st.integers(0, 0xFFFF), payload), max_size=20),
    )
    # What follows the valid frames: nothing, a header with a bad length
    # (0, max_len + 1, 0xFFFFFFFF) and maybe more, or an incomplete frame.
    kind = draw(st.sampled_from(["none", "zero", "over", "huge", "partial", "noise"]))
    chan = draw(st.integers(0, 0xFFFF))
    if kind == "none":
        tail = b""
    elif kind == "zero":
        tail = hdr(chan, 0) + draw(st.binary(max_size=8))
    elif kind == "over" and max_len < MAX32:
        tail = hdr(chan, max_len + 1) + draw(st.binary(max_size=8))
    elif kind in ("over", "huge"):
        tail = hdr(chan, MAX32) + draw(st.binary(max_size=8))
    elif kind == "partial":
        whole = frame(chan, draw(payload))
        tail = whole[: draw(st.integers(1, len(whole) - 1))]
    else:
        tail = draw(st.binary(min_size=1, max_size=20))
    data = b"".join(frame(c, p) for c, p in frames) + tail
    # Cut the stream: one byte at a time, or at random points.
    if draw(st.booleans()):
        chunks = [data[i : i + 1] for i in range(len(data))]
    else:
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
        bounds = [0, *cuts, len(data)]
        chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    max_frames = draw(st.sampled_from([1, 2, 3, 64, 1000]))
    return frames, tail, chunks, max_len, max_frames


def _valid_prefix_tail(frames: list[tuple[int, bytes]], tail: bytes, max_len: int):
    # "noise" may itself begin with valid frames; let the model see them.
    chans, offs, lens, pos, need = _pycodec.scan_frames(tail, 0, len(tail), 10**6, max_len)
    extra = [(c, tail[o : o + n]) for c, o, n in zip(chans, offs, lens, strict=True)]
    return frames + extra, tail[pos:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_streams_identical_across_implementations(stream) -> None:
    frames, tail, chunks, max_len, max_frames = stream
    assert b"".join(chunks) == b"".join(frame(c, p) for c, p in frames) + tail
    frames, tail = _valid_prefix_tail(frames, tail, max_len)
    want = model_stream(frames, tail, max_len)
    logs = {}
    for param in IMPLS:
        impl = param.values[0]
        assert impl is not None, "C codec required but missing"
        log = read_stream(impl, chunks, max_len, max_frames)
        assert [e for e in log if e[0] != "scan"] == want
        logs[param.id] = log
    # Not just the same frames: the same answer to every single scan.
    assert len({repr(v) for v in logs.values()}) == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([1, 2, 17, 300, MAX32]))
def test_batched_streams_identical_across_implementations(stream, large) -> None:
    frames, tail, chunks, max_len, max_frames = stream
    frames, tail = _valid_prefix_tail(frames, tail, max_len)
    want = model_stream(frames, tail, max_len)
    logs = {}
    for param in IMPLS:
        impl = param.values[0]
        assert impl is not None, "C codec required but missing"
        log = read_stream_batched(impl, chunks, max_len, max_frames, large)
        assert [e for e in log if e[0] != "scan"] == want
        logs[param.id] = log
    assert len({repr(v) for v in logs.values()}) == 1


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_random_bytes_identical(seed: int) -> None:
    rng = random.Random(seed)
    impls = [p.values[0] for p in IMPLS]
    assert all(i is not None for i in impls), "C codec required but missing"
    for _ in range(1500):
        n = rng.randrange(0, 200)
        if rng.random() < 0.5:
            data = rng.randbytes(n)
        else:
            # Mostly-plausible headers so that scans get somewhere.
            parts = []
            while sum(map(len, parts)) < n:
                length = rng.choice([0, 1, 2, 7, 30, 255, 0xFFFFFFFF, rng.randrange(1 << 32)])
                parts.append(hdr(rng.randrange(1 << 16), length) + rng.randbytes(rng.randrange(40)))
            data = b"".join(parts)[:n]
        buf = rng.choice([bytes, bytearray, memoryview])(data)
        end = rng.randrange(0, len(data) + 1)
        start = rng.randrange(0, end + 1)
        max_frames = rng.choice([0, 1, 2, 5, 100])
        max_len = rng.choice([1, 6, 30, 255, 1 << 20, 64 << 20, MAX32, rng.randrange(1, 1 << 32)])
        results = {repr(i.scan_frames(buf, start, end, max_frames, max_len)) for i in impls}
        assert len(results) == 1, (data, start, end, max_frames, max_len)
        large = rng.choice([0, 1, 7, 40, 1 << 16, MAX32])
        results = {repr(i.scan_batch(buf, start, end, max_len, large, max_frames)) for i in impls}
        assert len(results) == 1, ("batch", data, start, end, max_len, large, max_frames)
        delim = rng.choice(
            [b"\x00", b"\xff", b"\x00\x00", b"\x00\x01\x00", rng.randbytes(rng.randrange(1, 4))]
        )
        results = {i.find_delim(buf, start, end, delim) for i in impls}
        assert len(results) == 1 and results.pop() == bytes(data).find(delim, start, end)
        if data and rng.random() < 0.3:
            cut = [data[i : i + rng.randrange(1, 50)] for i in range(0, len(data), 50)]
            chan = rng.randrange(1 << 16)
            outs = {i.encode_frames(chan, cut) for i in impls}
            assert len(outs) == 1


# --- RESP: both scanners on the same streams ----------------------------------


def resp_cmd(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


@st.composite
def resp_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes], tuple[int, ...]]:
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["cmd", "cmd", "cmd", "inline", "empty", "junk"]))
        if kind == "cmd":
            parts.append(resp_cmd(draw(st.lists(st.binary(max_size=40), min_size=1, max_size=5))))
        elif kind == "inline":
            parts.append(b"PING\r\n")
        elif kind == "empty":
            parts.append(draw(st.sampled_from([b"*0\r\n", b"*-1\r\n"])))
        else:
            parts.append(draw(st.binary(max_size=40)))
    data = b"".join(parts)
    if data and draw(st.booleans()):
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    if draw(st.booleans()):
        chunks = [data[i : i + 1] for i in range(len(data))]
    else:
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
        bounds = [0, *cuts, len(data)]
        chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    limits = (
        draw(st.sampled_from([0, 3, 40, 512 << 20])),  # max_bulk_len
        draw(st.sampled_from([1, 3, 1 << 20])),  # max_multibulk_len
        draw(st.sampled_from([0, 5, 41, 1 << 16])),  # large
        draw(st.sampled_from([0, 1, 2, 64])),  # max_cmds
        draw(st.sampled_from([0, 1, 4, 256])),  # max_args
    )
    return data, chunks, limits


def read_resp(impl: object, chunks: list[bytes], limits: tuple[int, ...]) -> list[tuple]:
    """A reader like RespParser's fast path: append, scan from where the last
    scan stopped, keep whole commands, stop at anything else."""
    buf = bytearray()
    pos = 0
    log: list[tuple] = []
    for chunk in chunks:
        buf += chunk
        while True:
            argcs, offs, lens, nxt, stop, err, at = impl.scan_resp(buf, pos, len(buf), *limits)
            log.append(("scan", argcs, offs, lens, nxt, stop, err, at))
            pos = nxt
            if stop == codec.RESP_LIMIT and argcs:
                continue
            break
        if stop in (codec.RESP_ERROR, codec.RESP_INLINE, codec.RESP_LARGE):
            break
    return log


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resp_streams())
def test_resp_streams_identical_across_implementations(stream) -> None:
    data, chunks, limits = stream
    logs = {}
    for param in IMPLS:
        impl = param.values[0]
        assert impl is not None, "C codec required but missing"
        logs[param.id] = read_resp(impl, chunks, limits)
    assert len({repr(v) for v in logs.values()}) == 1
    # Whatever was cut where, the whole buffer scanned at once agrees with
    # the commands the drip-feed found.
    log = logs["python"]
    found = [a for e in log for a in e[1]]
    once = _pycodec.scan_resp(data, 0, len(data), *limits[:3], 10**6, MAX32)
    if limits[3] and limits[4] >= 256:
        assert found == once[0][: len(found)]


@pytest.mark.parametrize("seed", range(3))
def test_resp_fuzz_random_bytes_identical(seed: int) -> None:
    rng = random.Random(seed)
    impls = [p.values[0] for p in IMPLS]
    assert all(i is not None for i in impls), "C codec required but missing"
    alphabet = b"*$\r\n0123456789-x"
    for _ in range(1500):
        n = rng.randrange(0, 120)
        if rng.random() < 0.4:
            data = bytes(rng.choice(alphabet) for _ in range(n))
        else:
            args = [rng.randbytes(rng.randrange(0, 12)) for _ in range(rng.randrange(1, 4))]
            data = b"".join(resp_cmd(args) for _ in range(rng.randrange(1, 5)))[: n + 20]
        buf = rng.choice([bytes, bytearray, memoryview])(data)
        end = rng.randrange(0, len(data) + 1)
        start = rng.randrange(0, end + 1)
        limits = (
            rng.choice([0, 1, 5, 11, 512 << 20, (1 << 64) - 1]),
            rng.choice([0, 1, 2, 3, 1 << 20, (1 << 64) - 1]),
            rng.choice([0, 1, 6, 1 << 16, (1 << 64) - 1]),
            rng.choice([0, 1, 3, 100]),
            rng.choice([0, 1, 2, 7, 1000]),
        )
        results = {repr(i.scan_resp(buf, start, end, *limits)) for i in impls}
        assert len(results) == 1, (data, start, end, limits)
