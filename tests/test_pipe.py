# The Pipe suite. `make test` runs it twice: with the C codec (EVLOOP_REQUIRE_C=1)
# and with the pure-Python twin (EVLOOP_PURE_PYTHON=1).
from __future__ import annotations

import array
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections import Counter

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import evloop
from evloop import codec

HDR = struct.Struct(">HI")


def frame(chan: int, payload: bytes) -> bytes:
    return HDR.pack(chan, len(payload)) + payload


def test_codec_selected_as_the_environment_says():
    if os.environ.get("EVLOOP_PURE_PYTHON") == "1":
        assert codec.IMPLEMENTATION == "python"
    elif os.environ.get("EVLOOP_REQUIRE_C") == "1":
        assert codec.IMPLEMENTATION == "c"


def pipe_pair(loop, **kw):
    a, b = evloop.conn_pair(loop)
    got: list[tuple[int, bytes]] = []
    pa = evloop.Pipe(a, **kw)
    pb = evloop.Pipe(b, lambda c, p: got.append((c, p)), **kw)
    return pa, pb, got


@pytest.mark.parametrize("size", [1, 64, 65535, 65536, 1 << 20, evloop.DEFAULT_MAX_LEN])
def test_round_trip_every_size_class(loop, size):
    pa, pb, got = pipe_pair(loop)
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    pa.write_frame(7, payload)
    pa.write_frame(8, b"\x00after")
    assert loop.run_until(lambda: len(got) == 2, timeout=20)
    assert got[0][0] == 7 and got[0][1] == payload
    assert got[1] == (8, b"\x00after")
    # Payload lifetime: independent objects; large ones received in place.
    assert type(got[0][1]) is (bytes if size < evloop.pipe.LARGE_PAYLOAD else bytearray)


def test_large_payload_is_received_straight_into_its_own_buffer(loop):
    a, b = evloop.conn_pair(loop)
    got = []
    evloop.Pipe(b, lambda c, p: got.append(p))
    payload = os.urandom(4 << 20)
    a.write(frame(1, payload))
    assert loop.run_until(lambda: got, timeout=10)
    assert got[0] == payload
    # The Conn's own buffer never had to hold the frame.
    assert b._rbuf is None or len(b._rbuf) <= 1 << 20


def test_every_split_of_the_header_and_payload(loop):
    a_sock, b_sock = socket.socketpair()
    got = []
    pipe = evloop.Pipe(evloop.Conn(loop, b_sock), lambda c, p: got.append((c, p)))
    stream = frame(0xABCD, b"\x00\xffpay\x80load") + frame(0, b"\x01") + frame(0xFFFF, b"z" * 300)
    expect = [(0xABCD, b"\x00\xffpay\x80load"), (0, b"\x01"), (0xFFFF, b"z" * 300)]
    sent = 0
    for cut in range(1, len(stream)):
        for piece in (stream[:cut], stream[cut:]):
            a_sock.sendall(piece)
            sent += len(piece)
            assert loop.run_until(lambda s=sent: pipe.conn.bytes_in == s, timeout=5)
        assert loop.run_until(lambda: len(got) == 3, timeout=5)
        assert got == expect, f"cut at {cut}"
        got.clear()
    # And one byte at a time.
    for byte in stream:
        a_sock.send(bytes([byte]))
        sent += 1
        assert loop.run_until(lambda s=sent: pipe.conn.bytes_in == s, timeout=5)
    assert loop.run_until(lambda: len(got) == 3, timeout=5)
    assert got == expect
    a_sock.close()


def test_interleaved_channels_arrive_in_order_per_channel(loop):
    pa, pb, got = pipe_pair(loop)
    for i in range(3000):
        pa.write_frame(i % 7, struct.pack(">I", i) * (1 + i % 5))
    assert loop.run_until(lambda: len(got) == 3000, timeout=10)
    per_chan: dict[int, list[int]] = {}
    for chan, payload in got:
        per_chan.setdefault(chan, []).append(struct.unpack_from(">I", payload)[0])
    for chan, seqs in per_chan.items():
        assert seqs == sorted(seqs) and all(s % 7 == chan for s in seqs)


def test_write_frames_batch_and_buffer_types(loop):
    pa, pb, got = pipe_pair(loop)
    pa.write_frames([(1, b"a"), (2, bytearray(b"bb")), (3, memoryview(b"ccc"))])
    pa.write_frame(4, memoryview(b"\x00" * 70000))
    pa.write_frame(5, bytearray(b"e" * 70000))
    assert loop.run_until(lambda: len(got) == 5, timeout=5)
    assert got[:3] == [(1, b"a"), (2, b"bb"), (3, b"ccc")]
    assert got[3] == (4, b"\x00" * 70000) and got[4] == (5, b"e" * 70000)


@pytest.mark.parametrize(
    "chan, payload, match",
    [
        (-1, b"x", "outside 0..65535"),
        (65536, b"x", "outside 0..65535"),
        (1, b"", "empty payload"),
        (1, b"x" * 1001, "exceeds max_len 1000"),
    ],
)
def test_write_frame_refuses_bad_frames_before_the_wire(loop, chan, payload, match):
    pa, pb, got = pipe_pair(loop, max_len=1000)
    with pytest.raises(ValueError, match=match):
        pa.write_frame(chan, payload)
    with pytest.raises(ValueError, match=match):
        pa.write_frames([(1, b"ok"), (chan, payload)])
    assert pa.conn.write_buffered == 0 and pa.frames_out == 0


@pytest.mark.parametrize("length", [0, 1001, 0xFFFFFFFF])
def test_bad_length_is_a_protocol_error_that_closes_only_that_conn(loop, length):
    # A healthy pipe on the same loop must be untouched.
    ha, hb, healthy = pipe_pair(loop)
    a_sock, b_sock = socket.socketpair()
    got, errors, closes = [], [], []
    evloop.Pipe(
        evloop.Conn(loop, b_sock),
        lambda c, p: got.append((c, p)),
        on_error=errors.append,
        on_close=closes.append,
        max_len=1000,
    )
    good = frame(3, b"good") + frame(4, b"also good")
    a_sock.sendall(good + HDR.pack(0x0102, length) + b"garbage that must never be delivered")
    assert loop.run_until(lambda: closes, timeout=5)
    assert got == [(3, b"good"), (4, b"also good")]  # frames before it were delivered
    (exc,) = errors
    assert isinstance(exc, evloop.ProtocolError)
    assert (exc.channel, exc.length, exc.offset) == (0x0102, length, len(good))
    assert "channel 258" in str(exc) and f"length {length}" in str(exc)
    assert closes == [exc]
    ha.write_frame(1, b"still fine")
    assert loop.run_until(lambda: healthy == [(1, b"still fine")], timeout=5)
    a_sock.close()


def test_protocol_error_in_pull_mode_is_raised_by_read_frame(loop):
    a_sock, b_sock = socket.socketpair()
    pipe = evloop.Pipe(evloop.Conn(loop, b_sock), max_len=10)
    a_sock.sendall(frame(1, b"ok") + HDR.pack(9, 11) + b"x" * 11)
    assert loop.run_until(lambda: pipe.conn.bytes_in == 8 + 6 + 11, timeout=5)
    assert pipe.read_frame() == (1, b"ok")
    with pytest.raises(evloop.ProtocolError) as info:
        pipe.read_frame()
    assert info.value.length == 11 and info.value.channel == 9
    assert pipe.closed
    a_sock.close()


@pytest.mark.parametrize("tail", [b"\x00", HDR.pack(1, 10)[:5], HDR.pack(1, 10) + b"12345"])
def test_stream_ending_inside_a_frame_is_reported(loop, tail):
    a_sock, b_sock = socket.socketpair()
    got, errors, closes = [], [], []
    evloop.Pipe(
        evloop.Conn(loop, b_sock),
        lambda c, p: got.append(p),
        on_error=errors.append,
        on_close=closes.append,
    )
    a_sock.sendall(frame(1, b"complete") + tail)
    a_sock.close()
    assert loop.run_until(lambda: closes, timeout=5)
    assert got == [b"complete"]
    assert isinstance(errors[0], evloop.TruncatedFrameError)
    assert errors[0].length == len(tail) and errors[0].offset == 6 + 8


@pytest.mark.parametrize(
    "tail, chan",
    [
        (HDR.pack(7, 1 << 20), 7),  # a large frame's header, then nothing
        (HDR.pack(7, 1 << 20) + b"x" * 1000, 7),  # and part of its payload
        (HDR.pack(7, 100) + b"x" * 10, 7),  # a small frame cut in its payload
        (HDR.pack(7, 100)[:3], -1),  # a header cut
    ],
)
def test_truncation_names_where_the_frame_began(loop, tail, chan):
    a_sock, b_sock = socket.socketpair()
    errors, closes = [], []
    conn = evloop.Conn(loop, b_sock)
    evloop.Pipe(conn, lambda c, p: None, on_error=errors.append, on_close=closes.append)
    first = frame(1, b"whole")
    a_sock.sendall(first)
    assert loop.run_until(lambda: conn.bytes_in == len(first), timeout=5)
    a_sock.sendall(tail)
    assert loop.run_until(lambda: conn.bytes_in == len(first) + len(tail), timeout=5)
    a_sock.close()
    assert loop.run_until(lambda: closes, timeout=5)
    (exc,) = errors
    assert isinstance(exc, evloop.TruncatedFrameError)
    assert (exc.offset, exc.length, exc.channel) == (len(first), len(tail), chan)


def test_truncated_large_frame_is_reported(loop):
    a_sock, b_sock = socket.socketpair()
    errors, closes = [], []
    evloop.Pipe(evloop.Conn(loop, b_sock), print, on_error=errors.append, on_close=closes.append)
    a_sock.sendall(HDR.pack(1, 1 << 20) + b"x" * 100_000)
    a_sock.close()
    assert loop.run_until(lambda: closes, timeout=5)
    assert isinstance(errors[0], evloop.TruncatedFrameError)


def test_clean_eof_after_frames_closes_without_error(loop):
    a_sock, b_sock = socket.socketpair()
    got, closes = [], []
    evloop.Pipe(evloop.Conn(loop, b_sock), lambda c, p: got.append(p), on_close=closes.append)
    a_sock.sendall(b"".join(frame(1, b"%d" % i) for i in range(500)))
    a_sock.close()
    assert loop.run_until(lambda: closes, timeout=5)
    assert len(got) == 500 and closes == [None]  # nothing lost to the EOF


def test_on_frame_exception_is_reported_and_the_pipe_goes_on(loop):
    got = []

    def on_frame(chan, payload):
        if payload == b"bad":
            raise RuntimeError("handler failed")
        got.append(payload)

    a, b = evloop.conn_pair(loop)
    pa = evloop.Pipe(a)
    evloop.Pipe(b, on_frame)
    for p in (b"one", b"bad", b"two"):
        pa.write_frame(1, p)
    assert loop.run_until(lambda: len(got) == 2, timeout=5)
    assert got == [b"one", b"two"]
    loop.errors.claim(RuntimeError)


def test_pull_mode_read_frame_keeps_partial_state(loop):
    a_sock, b_sock = socket.socketpair()
    ready = []
    pipe = evloop.Pipe(evloop.Conn(loop, b_sock), on_readable=ready.append)
    data = frame(5, b"hello") + frame(6, b"world")
    a_sock.sendall(data[:4])
    assert loop.run_until(lambda: pipe.conn.bytes_in == 4, timeout=5)
    assert pipe.read_frame() is None and not ready
    a_sock.sendall(data[4:13])
    assert loop.run_until(lambda: ready, timeout=5)
    assert pipe.read_frame() == (5, b"hello")
    assert pipe.read_frame() is None
    a_sock.sendall(data[13:])
    assert loop.run_until(lambda: pipe.frames_ready or pipe.conn.read_buffered == 11, timeout=5)
    assert pipe.read_frame() == (6, b"world")
    a_sock.close()


def test_buffered_frames_are_never_stranded_with_budget_1():
    with evloop.Loop(budget=1) as lp:
        a_sock, b_sock = socket.socketpair()
        got = []
        evloop.Pipe(evloop.Conn(lp, b_sock), lambda c, p: got.append(p))
        # 300 frames arrive in one read, then the peer goes quiet for good.
        a_sock.sendall(b"".join(frame(1, b"%03d" % i) for i in range(300)))
        assert lp.run_until(lambda: len(got) == 300, timeout=5)
        assert got == [b"%03d" % i for i in range(300)]
        a_sock.close()


def _flooders(lp, n, payload=b"f" * 64):
    """n Pipes whose peers keep their write buffers topped up every turn."""
    counts = Counter()
    order = []
    senders = []
    for i in range(n):
        a, b = evloop.conn_pair(lp, high_water=256 * 1024)
        pa = evloop.Pipe(a)
        evloop.Pipe(b, lambda c, p, i=i: (counts.update((i,)), order.append(i)))
        senders.append(pa)

    def pump():
        for pa in senders:
            while pa.conn.writable:
                pa.write_frame(1, payload)
        lp.call_soon(pump)

    return counts, order, senders, pump


@pytest.mark.parametrize("budget", [1, 64])
def test_ten_flooding_pipes_get_equal_shares(budget):
    with evloop.Loop(budget=budget) as lp:
        counts, order, senders, pump = _flooders(lp, 10)
        lp.call_soon(pump)
        assert lp.run_until(lambda: len(order) >= 90_000, timeout=30)
        # Measure once every pipe is flowing, over a later window of at least
        # a hundred rounds (a round gives each Pipe min(quantum, budget)).
        window = Counter(order[10_000:90_000])
        mean = sum(window.values()) / 10
        assert len(window) == 10
        spread = (max(window.values()) - min(window.values())) / mean
        assert spread < 0.03, f"shares {sorted(window.values())} differ by {spread:.1%}"


@pytest.mark.parametrize(
    "budget, quantum", [(1, 64), (16, 64), (64, 64), (256, 64), (4096, 1), (4096, 16), (4096, 64)]
)
def test_a_quiet_pipe_waits_a_bounded_number_of_deliveries_while_others_flood(budget, quantum):
    with evloop.Loop(budget=budget, quantum=quantum) as lp:
        counts, order, senders, pump = _flooders(lp, 10)
        qa, qb = evloop.conn_pair(lp)
        quiet_sender = evloop.Pipe(qa)
        marks = {}

        def on_quiet(chan, payload):
            marks["delivered"] = len(order)

        evloop.Pipe(qb, on_quiet)

        def send_quiet():
            quiet_sender.write_frame(9, b"quiet")
            marks["sent"] = len(order)

        lp.call_soon(pump)
        assert lp.run_until(lambda: len(order) >= 5_000, timeout=30)
        lp.call_soon(send_quiet)
        assert lp.run_until(lambda: "delivered" in marks, timeout=10)
        # The frame leaves at the end of the turn it was written in (which
        # may still serve up to `budget` frames); the next turn's epoll sees
        # it, and the Pipe joins the round-robin behind at most the 10
        # flooders, each served a quantum (or what is left of the budget).
        waited = marks["delivered"] - marks["sent"]
        share = min(quantum, budget)
        bound = budget + 11 * share
        assert waited <= bound, f"quiet frame waited {waited} deliveries (bound {bound})"


_WRITER = textwrap.dedent(
    """
    import socket, struct, sys
    import evloop

    fd, total = int(sys.argv[1]), int(sys.argv[2])
    loop = evloop.Loop()
    pipe = evloop.Pipe(evloop.Conn(loop, socket.socket(fileno=fd)))
    pack = struct.Struct(">Q").pack
    state = {"seq": 0}

    def pump():
        seq = state["seq"]
        conn = pipe.conn
        while seq < total and conn.writable:
            pipe.write_frame(seq & 3, pack(seq))
            seq += 1
        state["seq"] = seq
        if seq < total:
            conn.on_resume_writing = pump
        else:
            pipe.close()

    loop.call_soon(pump)
    loop.run_until(lambda: pipe.closed, timeout=120)
    loop.close()
    """
)


def test_a_million_small_frames_between_two_processes(loop):
    total = 1_000_000
    a_sock, b_sock = socket.socketpair()
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(b_sock.fileno()), str(total)],
        pass_fds=(b_sock.fileno(),),
    )
    b_sock.close()
    expected = [0, 1, 2, 3]  # next sequence number per channel
    state = {"n": 0, "bad": None}
    unpack = struct.Struct(">Q").unpack

    def on_frame(chan, payload):
        (seq,) = unpack(payload)
        if seq != expected[chan] and state["bad"] is None:
            state["bad"] = (chan, seq, expected[chan])
        expected[chan] = seq + 4
        state["n"] += 1

    closes = []
    evloop.Pipe(evloop.Conn(loop, a_sock), on_frame, on_close=closes.append)
    assert loop.run_until(lambda: closes, timeout=50)
    assert child.wait(10) == 0
    assert state["bad"] is None, f"lost or reordered: {state['bad']}"
    assert state["n"] == total and closes == [None]


@pytest.mark.parametrize("budget", [1, 2, 17])
def test_a_lone_flooding_pipe_is_on_the_ready_list_at_most_once(budget):
    with evloop.Loop(budget=budget) as lp:
        counts, order, senders, pump = _flooders(lp, 1)
        seen = []

        def watch():
            seen.append(lp.statistics().ready_sources)
            lp.call_soon(watch)

        lp.call_soon(pump)
        lp.call_soon(watch)
        assert lp.run_until(lambda: len(order) >= 20_000, timeout=30)
        assert max(seen) <= 1, f"ready list grew to {max(seen)}"


def test_large_frames_are_queued_by_reference_even_on_the_fast_path(loop):
    pa, pb, got = pipe_pair(loop)
    pa.write_frame(1, b"small first")  # opens the Conn's tail for appends
    big = bytes(70_000)
    pa.write_frame(2, big)
    assert any(item is big for item in pa.conn.write_buffer.chunks)
    assert loop.run_until(lambda: len(got) == 2, timeout=5)
    assert got[1] == (2, big)


def test_setting_on_frame_late_delivers_frames_already_buffered(loop):
    a, b = evloop.conn_pair(loop)
    evloop.Pipe(a).write_frames([(1, b"early"), (2, b"bird")])
    late = evloop.Pipe(b)  # pull mode while the frames arrive
    assert loop.run_until(lambda: late.frames_ready == 2, timeout=5)
    got = []
    late.on_frame = lambda c, p: got.append((c, p))  # no more bytes will come
    assert loop.run_until(lambda: len(got) == 2, timeout=5)
    assert got == [(1, b"early"), (2, b"bird")]


@pytest.mark.parametrize("payload", ["text", 12345, None, [1, 2]])
def test_non_bytes_payloads_never_put_a_header_on_the_wire(loop, payload):
    pa, pb, got = pipe_pair(loop)
    big = "x" * 100_000 if payload == "text" else payload
    for bad in (payload, big):
        with pytest.raises(TypeError, match="bytes-like|has no len"):
            pa.write_frame(1, bad)
        with pytest.raises(TypeError, match="bytes-like|has no len"):
            pa.write_frames([(1, b"fine"), (2, bad)])
    assert pa.conn.write_buffered == 0
    pa.write_frame(1, b"still in sync")
    pa.write_frame(2, array.array("H", [1, 2]))  # any buffer is accepted
    assert loop.run_until(lambda: len(got) == 2, timeout=5)
    assert got == [(1, b"still in sync"), (2, array.array("H", [1, 2]).tobytes())]


def test_pull_mode_keeps_every_large_frame_until_it_is_read(loop):
    a, b = evloop.conn_pair(loop)
    sender = evloop.Pipe(a)
    puller = evloop.Pipe(b)  # pull mode: nobody reads for a while
    first, second = os.urandom(70_000), os.urandom(3 << 20)  # second > the read buffer
    sender.write_frame(1, first)
    sender.write_frame(2, second)
    sender.write_frame(3, b"small after")
    assert loop.run_until(lambda: puller.frames_ready, timeout=5)
    loop.run_until(lambda: False, timeout=0.1)  # more arrives, up to the read limit
    frames = []
    while len(frames) < 3:
        frame = puller.read_frame()
        if frame is None:
            assert loop.run_until(lambda: puller.frames_ready, timeout=5), len(frames)
            continue
        frames.append((frame[0], len(frame[1]), bytes(frame[1])))
    expect = [(1, len(first), first), (2, len(second), second), (3, 11, b"small after")]
    assert [f[:2] for f in frames] == [e[:2] for e in expect]
    assert all(f[2] == e[2] for f, e in zip(frames, expect, strict=True)), "payload mismatch"


# -- regressions found in review: each failed before its fix ---------------------


def test_write_frames_over_the_cap_queues_nothing(loop):
    a, b = evloop.conn_pair(loop, high_water=100_000, write_cap=150_000)
    tx = evloop.Pipe(a)
    got = []
    evloop.Pipe(b, lambda c, p: got.append((c, len(p))))
    with pytest.raises(evloop.BufferFullError):
        tx.write_frames([(1, bytes(100_000)), (2, bytes(100_000))])
    assert a.write_buffered == 0
    tx.write_frames([(3, b"in sync")] * 3)
    assert loop.run_until(lambda: len(got) == 3, timeout=5)
    assert got == [(3, 7)] * 3


def test_pause_callback_cannot_land_inside_a_frame(loop):
    a, b = evloop.conn_pair(loop, high_water=50_000)
    tx = evloop.Pipe(a)
    a.on_pause_writing = lambda: tx.write_frame(0, b"PAUSED")
    got, errors = [], []
    evloop.Pipe(b, lambda c, p: got.append((c, len(p))), on_error=errors.append)
    tx.write_frame(1, b"z" * 49_990)
    tx.write_frame(2, b"y" * 100_000)  # crosses the watermark
    assert loop.run_until(lambda: len(got) == 3 or errors, timeout=5)
    assert not errors and got == [(1, 49_990), (2, 100_000), (0, 6)]


def test_small_frame_bigger_than_read_limit_is_still_received(loop):
    raw, s = socket.socketpair()
    conn = evloop.Conn(loop, s, read_limit=16 * 1024)
    got = []
    evloop.Pipe(conn, lambda c, p: got.append(len(p)))
    data = frame(1, b"x" * 40_000)
    raw.sendall(data[:17_000])
    assert loop.run_until(lambda: conn.bytes_in == 17_000, timeout=5)
    raw.sendall(data[17_000:])
    assert loop.run_until(lambda: got, timeout=5)
    assert got == [40_000]
    raw.close()


def test_no_frames_are_delivered_after_close_from_on_frame(loop):
    a, b = evloop.conn_pair(loop)
    tx = evloop.Pipe(a)
    got = []

    def on_frame(chan, payload):
        got.append(payload)
        rx.write_frame(1, b"reply")  # leaves unflushed data, so close() must wait
        rx.close()

    rx = evloop.Pipe(b, on_frame)
    tx.write_frames([(1, b"first"), (1, b"after-1"), (1, b"after-2")])
    assert loop.run_until(lambda: b.closed, timeout=5)
    assert got == [b"first"]


def test_large_payload_in_pull_mode_is_resizable_in_on_readable(loop):
    a, b = evloop.conn_pair(loop)
    resized = []

    def on_readable(pipe):
        frame_ = pipe.read_frame()
        if frame_ is not None:
            frame_[1].extend(b"!")  # would raise BufferError if a view were alive
            resized.append(len(frame_[1]))

    evloop.Pipe(b, on_readable=on_readable)
    evloop.Pipe(a).write_frame(1, bytes(100_000))
    assert loop.run_until(lambda: resized, timeout=5)
    assert resized == [100_001]


# -- garbage in: every outcome is frames, a clean close or a clear error --------


_valid_frames = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.binary(min_size=1, max_size=300)), max_size=12
).map(lambda fs: b"".join(frame(c, p) for c, p in fs))
_streams = st.one_of(
    st.binary(max_size=3000),  # garbage from the first byte
    st.tuples(_valid_frames, st.binary(max_size=40)).map(lambda t: t[0] + t[1]),  # then garbage
    _valid_frames,  # all good
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=_streams,
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=20),
    max_len=st.sampled_from([1, 7, 100, 70_000, evloop.DEFAULT_MAX_LEN]),
)
def test_random_bytes_over_a_real_socket(data, cuts, max_len):
    with evloop.Loop() as lp:
        errors_in_loop = []
        lp.set_exception_handler(lambda exc, cb: errors_in_loop.append(exc))
        a_sock, b_sock = socket.socketpair()
        got, errors, closes = [], [], []
        evloop.Pipe(
            evloop.Conn(lp, b_sock),
            lambda c, p: got.append((c, bytes(p))),
            on_error=errors.append,
            on_close=closes.append,
            max_len=max_len,
        )
        pos = 0
        try:
            for cut in [*cuts, len(data)]:
                a_sock.sendall(data[pos : pos + cut])
                pos += cut
                lp.run_until(lambda: False, timeout=0)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the Pipe already hung up on a bad header
        a_sock.close()
        assert lp.run_until(lambda: closes, timeout=5), "the Pipe never closed"
        assert not errors_in_loop, errors_in_loop
        assert len(closes) == 1 and len(errors) <= 1
        # Whatever was delivered is exactly the stream's prefix, frame by frame.
        rebuilt = b"".join(frame(c, p) for c, p in got)
        assert data.startswith(rebuilt)
        if errors:
            assert isinstance(errors[0], evloop.ProtocolError)
            assert errors[0].offset == len(rebuilt)
            assert closes == [errors[0]]
        else:
            assert rebuilt == data and closes == [None]
        event(f"{len(got) > 0 and 'frames' or 'no frames'}, {errors and 'error' or 'clean'}")


@pytest.mark.parametrize("size", [evloop.pipe.LARGE_PAYLOAD, 70_000, 200_000])
def test_large_frames_read_ahead_whole_then_eof_are_all_delivered(loop, size):
    # Several large frames that arrive whole in one read are copied out one
    # by one; the last of them must not be left behind when EOF follows.
    a_sock, b_sock = socket.socketpair()
    frames = [struct.pack(">HI", i, size) + bytes([i]) * size for i in range(40)]
    writer = threading.Thread(target=lambda: (a_sock.sendall(b"".join(frames)), a_sock.close()))
    got, errors, closes = [], [], []
    evloop.Pipe(
        evloop.Conn(loop, b_sock),
        lambda c, p: got.append((c, len(p), p[:1])),
        on_error=errors.append,
        on_close=closes.append,
    )
    writer.start()
    assert loop.run_until(lambda: closes, timeout=20)
    writer.join(10)
    assert not errors and closes == [None]
    assert got == [(i, size, bytes([i])) for i in range(40)]
