from __future__ import annotations

import array
import os
import socket
import struct

import pytest

import evloop
from tests.conftest import drain


def test_many_small_writes_in_one_turn_leave_in_one_send(loop):
    a, b = evloop.conn_pair(loop)
    got = bytearray()
    b.on_data = lambda c: drain(c, got)
    for i in range(1000):
        a.write(b"%04d" % i)
    assert a.statistics().sends == 0  # write() itself makes no syscall
    assert loop.run_until(lambda: len(got) == 4000, timeout=5)
    assert a.statistics().sends == 1
    assert bytes(got) == b"".join(b"%04d" % i for i in range(1000))


def test_writes_are_flushed_before_the_loop_sleeps(loop):
    # A write made from a timer must not wait for some unrelated event.
    a, b = evloop.conn_pair(loop)
    got = bytearray()
    b.on_data = lambda c: drain(c, got)
    loop.call_later(0.01, a.write, b"ping")
    assert loop.run_until(lambda: got == b"ping", timeout=5)


def test_large_writes_are_queued_by_reference(loop):
    a, b = evloop.conn_pair(loop, start_reading=False)
    big = b"L" * (1 << 20)
    a.write(b"small")
    a.write(big)
    assert any(item is big for item in a.write_buffer.chunks)
    mutable = bytearray(b"M" * (1 << 17))
    a.write(mutable)
    mutable[:] = b"X" * len(mutable)  # the queued copy is unaffected
    got = bytearray()
    b.on_data = lambda c: drain(c, got)
    b.resume_reading()
    assert loop.run_until(lambda: len(got) == 5 + len(big) + (1 << 17), timeout=5)
    assert got.endswith(b"M" * (1 << 17))


def test_watermarks_against_a_peer_that_does_not_read(loop):
    a_sock, b_sock = socket.socketpair()
    events = []
    a = evloop.Conn(
        loop,
        a_sock,
        high_water=256 * 1024,
        low_water=64 * 1024,
        on_pause_writing=lambda: events.append("pause"),
        on_resume_writing=lambda: events.append("resume"),
    )
    chunk = b"w" * 4096
    written = 0
    while a.writable:
        a.write(chunk)
        written += len(chunk)
    assert events == ["pause"]
    assert a.write_buffered > 256 * 1024
    for _ in range(256):  # writes are still accepted while paused, up to the cap
        a.write(chunk)
        written += len(chunk)
    # The peer does not read: the buffer stays put, EPOLLOUT is held.
    loop.run_until(lambda: False, timeout=0.05)
    assert not a.writable and a.write_buffered > 64 * 1024
    assert a._events & evloop.EVENT_WRITE
    # Now the peer reads everything; we resume and every byte arrives.
    b = evloop.Conn(loop, b_sock)
    got = bytearray()
    b.on_data = lambda c: drain(c, got)
    assert loop.run_until(lambda: len(got) == written, timeout=5)
    assert events == ["pause", "resume"] and a.writable
    assert not a._events & evloop.EVENT_WRITE  # EPOLLOUT dropped once drained


def test_hard_cap_refuses_the_write_and_keeps_the_conn(loop):
    a, b = evloop.conn_pair(loop, high_water=1000, write_cap=4096, start_reading=False)
    a.write(b"x" * 4000)
    with pytest.raises(evloop.BufferFullError, match="cap is 4096"):
        a.write(b"y" * 100)
    assert a.write_buffered == 4000 and not a.closed
    a.write(b"z" * 96)  # exactly to the cap is fine


def test_peer_reset_mid_write_reaches_on_close_once(loop):
    accepted = []
    server = evloop.listen_tcp(loop, "127.0.0.1", 0, accepted.append)
    client = socket.create_connection(("127.0.0.1", server.port))
    assert loop.run_until(lambda: accepted, timeout=5)
    conn = accepted[0]
    closes = []
    conn.on_close = closes.append
    for _ in range(64):
        conn.write(b"d" * 65536)  # more than the kernel buffers
    loop.run_until(lambda: conn.bytes_out > 0, timeout=5)
    # RST: linger 0 then close, with unread data pending.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    assert loop.run_until(lambda: closes, timeout=5)
    loop.run_until(lambda: False, timeout=0.05)
    assert len(closes) == 1
    assert isinstance(closes[0], (ConnectionResetError, BrokenPipeError))
    assert conn.closed and conn.fd == -1
    with pytest.raises(evloop.ConnClosedError):
        conn.write(b"more")
    server.close()


def test_close_after_flush_delivers_every_byte(loop):
    a, b = evloop.conn_pair(loop)
    payload = os.urandom(3 * 1024 * 1024)
    got = bytearray()
    b_closed = []
    a_closed = []
    b.on_data = lambda c: drain(c, got)
    b.on_close = b_closed.append
    a.on_close = a_closed.append
    for i in range(0, len(payload), 1000):
        a.write(payload[i : i + 1000])
    a.close()
    assert a.closing
    with pytest.raises(evloop.ConnClosedError):
        a.write(b"late")
    assert loop.run_until(lambda: b_closed and a_closed, timeout=10)
    assert bytes(got) == payload
    assert a_closed == [None] and b_closed == [None]


def test_abort_discards_and_closes_now(loop):
    a, b = evloop.conn_pair(loop)
    closed = []
    a.on_close = closed.append
    a.write(b"never sent")
    a.abort()
    assert a.closed and a.fd == -1
    got = bytearray()
    b.on_data = lambda c: drain(c, got)
    b_closed = []
    b.on_close = b_closed.append
    assert loop.run_until(lambda: b_closed and closed, timeout=5)
    assert got == b"" and closed == [None]


def test_half_close(loop):
    a, b = evloop.conn_pair(loop)
    got_b = bytearray()
    got_a = bytearray()
    eofs = []

    def b_eof(conn):
        eofs.append(conn)
        conn.write(b"reply after your EOF")
        conn.close()
        return True

    b.on_data = lambda c: drain(c, got_b)
    b.on_eof = b_eof
    a.on_data = lambda c: drain(c, got_a)
    a.on_eof = lambda c: True  # keep a open to see the whole reply
    a.write(b"request")
    a.shutdown_write()
    with pytest.raises(evloop.ConnClosedError):
        a.write(b"x")
    assert loop.run_until(lambda: got_a == b"reply after your EOF", timeout=5)
    assert got_b == b"request" and eofs == [b]
    a.close()


def test_eof_closes_by_default_exactly_once(loop):
    a, b = evloop.conn_pair(loop)
    closes = []
    b.on_close = closes.append
    a.close()
    assert loop.run_until(lambda: closes, timeout=5)
    loop.run_until(lambda: False, timeout=0.02)
    assert closes == [None] and b.at_eof


def test_read_back_pressure_bounds_memory(loop):
    a, b = evloop.conn_pair(loop, read_limit=128 * 1024)
    b.on_data = lambda c: None  # consumes nothing...
    b.on_read_limit = lambda c: None  # ...on purpose: back-pressure, not a stall
    total = 4 * 1024 * 1024
    chunk = b"f" * 65536
    for _ in range(total // len(chunk)):
        a.write(chunk)
    assert loop.run_until(lambda: b.read_buffered >= 128 * 1024, timeout=5)
    for _ in range(5):
        loop.run_once(0)
    # b stopped reading near its limit; the rest waits in the kernel and a's buffer.
    assert b.read_buffered < 128 * 1024 + b.read_size
    assert not b._events & evloop.EVENT_READ
    got = bytearray()
    b.on_data = lambda c: drain(c, got)
    drain(b, got)  # consuming resumes reading
    assert loop.run_until(lambda: len(got) == total, timeout=10)


def test_pause_and_resume_reading(loop):
    a, b = evloop.conn_pair(loop)
    got = bytearray()
    b.on_data = lambda c: drain(c, got)
    b.pause_reading()
    a.write(b"while paused")
    assert loop.run_until(lambda: a.write_buffered == 0, timeout=5)
    for _ in range(5):
        loop.run_once(0)
    assert got == b""  # it is in b's kernel buffer, not delivered
    b.resume_reading()
    assert loop.run_until(lambda: got == b"while paused", timeout=5)


def test_hup_while_paused_does_not_spin(loop):
    a, b = evloop.conn_pair(loop, read_limit=1024)
    b.on_data = lambda c: None
    b.on_read_limit = lambda c: None  # holding input back on purpose
    a.write(b"z" * 8192)
    a.close()
    loop.run_until(lambda: b.read_buffered >= 1024 and a.closed, timeout=5)
    # HUP fires even with an empty interest mask: the Conn must leave the
    # epoll set while it is not reading, or every poll returns at once.
    assert loop.run_until(lambda: not loop.is_registered(b.fd), timeout=5)
    got = bytearray()
    closed = []
    b.on_close = closed.append
    b.on_data = lambda c: drain(c, got)
    drain(b, got)
    assert loop.run_until(lambda: closed, timeout=5)
    assert len(got) == 8192


def test_readline_and_read_until(loop):
    a, b = evloop.conn_pair(loop)
    lines = []

    def on_data(c):
        while (line := c.readline()) is not None:
            lines.append(line)

    b.on_data = on_data
    a.write(b"one\ntw")
    assert loop.run_until(lambda: lines == [b"one\n"], timeout=5)
    a.write(b"o\r\nthree\n")
    assert loop.run_until(lambda: len(lines) == 3, timeout=5)
    assert lines == [b"one\n", b"two\r\n", b"three\n"]
    b.on_data = None
    a.write(b"abc||def")
    assert loop.run_until(lambda: b.read_buffered == 8, timeout=5)
    assert b.read_until(b"||") == b"abc||"
    assert b.read_until(b"||") is None


def test_read_until_limit(loop):
    a, b = evloop.conn_pair(loop)
    b.on_data = None
    a.write(b"x" * 100)
    assert loop.run_until(lambda: b.read_buffered == 100, timeout=5)
    with pytest.raises(evloop.ReadLimitError, match="within 50 bytes"):
        b.readline(limit=50)
    assert b.read_buffered == 100  # nothing was lost
    assert b.readline(limit=200) is None


def test_counters(loop):
    a, b = evloop.conn_pair(loop)
    got = bytearray()
    b.on_data = lambda c: drain(c, got)
    a.write(b"12345")
    a.write(b"678")
    assert loop.run_until(lambda: len(got) == 8, timeout=5)
    sa, sb = a.statistics(), b.statistics()
    assert (sa.bytes_out, sa.writes, sa.sends) == (8, 2, 1)
    assert sb.bytes_in == 8 and sb.reads >= 1


def test_conn_on_a_pipe(loop):
    r, w = os.pipe()
    reader = evloop.Conn(loop, r)
    writer = evloop.Conn(loop, w, start_reading=False)
    got = bytearray()
    closed = []
    reader.on_data = lambda c: drain(c, got)
    reader.on_close = closed.append
    data = os.urandom(300_000)
    writer.write(data[:1000])
    writer.write(data[1000:])
    writer.close()
    assert loop.run_until(lambda: closed, timeout=5)
    assert bytes(got) == data and closed == [None]


def test_read_into_receives_straight_into_the_target(loop):
    a, b = evloop.conn_pair(loop)
    payload = os.urandom(500_000)
    target = bytearray(len(payload))
    done = []
    b.on_data = None
    a.write(payload[:10])
    assert loop.run_until(lambda: b.read_buffered == 10, timeout=5)
    b.read_into(memoryview(target), lambda: done.append(1))
    a.write(payload[10:])
    assert loop.run_until(lambda: done, timeout=5)
    assert target == payload and b.read_buffered == 0


def test_fd_passing(loop):
    s1, s2 = socket.socketpair()
    x = evloop.Conn(loop, s1)
    y = evloop.Conn(loop, s2, receive_fds=True)
    r, w = os.pipe()
    x.write(b"a")
    x.write_fds(b"F", [w])
    os.close(w)  # the Conn holds its own dup until sent
    got = bytearray()
    y.on_data = lambda c: drain(c, got)
    assert loop.run_until(lambda: got == b"aF", timeout=5)
    fd = y.pop_fd()
    assert fd is not None and y.pop_fd() is None
    os.write(fd, b"through the passed fd")
    os.close(fd)
    assert os.read(r, 100) == b"through the passed fd"
    os.close(r)
    with pytest.raises(ValueError, match="at least one byte"):
        x.write_fds(b"", [0])


def test_bad_conn_settings():
    with evloop.Loop() as lp:
        a, b = socket.socketpair()
        try:
            with pytest.raises(ValueError, match="low_water"):
                evloop.Conn(lp, a, high_water=10, low_water=20)
        finally:
            a.close()
            b.close()


def test_read_into_reads_ahead_and_reports_what_followed(loop):
    # One readv() finishes the target and reads what follows into the
    # Conn's buffer; on_data then sees those bytes without another event.
    a, b = evloop.conn_pair(loop)
    head = os.urandom(100_000)
    tail = b"what came next"
    a.write(head + tail)
    target = bytearray(len(head))
    seen = bytearray()
    done = []
    b.on_data = None
    b.read_into(memoryview(target), lambda: done.append(1))
    b.on_data = lambda c: drain(c, seen)
    assert loop.run_until(lambda: done and seen == tail, timeout=5)
    assert target == head


def test_read_buffer_is_lazy_grows_under_load_and_is_given_back(loop):
    a, b = evloop.conn_pair(loop, read_size=256 * 1024, read_limit=4 << 20)
    got = bytearray()
    sizes = set()

    def on_data(c):
        sizes.add(len(c.read_buffer()[0]))
        drain(c, got)

    b.on_data = on_data
    assert b._rbuf is None  # an idle Conn holds no read buffer
    a.write(os.urandom(3 << 20))
    assert loop.run_until(lambda: len(got) == 3 << 20, timeout=10)
    assert max(sizes) == 256 * 1024  # grew to read_size, not beyond
    # A trickle after the flood: the big buffer goes, a small one is
    # borrowed for the read and handed back.
    a.write(b"tiny")
    assert loop.run_until(lambda: len(got) == (3 << 20) + 4, timeout=10)
    loop.run_once(0)
    assert b._rbuf is None


def test_bad_writes_leave_the_buffer_untouched(loop):
    a, b = evloop.conn_pair(loop)
    for bad in ("text", 5, None):
        with pytest.raises(TypeError):
            a.write(bad)
    assert a.write_buffered == 0
    a.write(b"ok")  # opens the tail: the fast path must refuse too
    with pytest.raises(TypeError):
        a.write("text")
    assert a.write_buffered == 2


def test_conn_of_a_closed_socket_is_refused(loop):
    s = socket.socket()
    s.close()
    with pytest.raises(ValueError, match="closed socket"):
        evloop.Conn(loop, s)


# -- regressions found in review: each failed before its fix ---------------------


def test_pipe_writer_whose_reader_died_reports_epipe(loop):
    r, w = os.pipe()
    closed = []
    c = evloop.Conn(loop, w, start_reading=False, on_close=closed.append)
    c.write(b"x" * 200_000)
    loop.run_until(lambda: c._events & evloop.EVENT_WRITE, timeout=5)  # the pipe is full
    os.close(r)
    assert loop.run_until(lambda: closed, timeout=5)
    assert isinstance(closed[0], BrokenPipeError)


def test_shutdown_write_on_a_pipe_sends_eof(loop):
    r, w = os.pipe()
    reader = evloop.Conn(loop, r)
    got, closes = bytearray(), []
    reader.on_data = lambda c: drain(c, got)
    reader.on_close = closes.append
    writer = evloop.Conn(loop, w, start_reading=False)
    writer.write(b"last words")
    writer.shutdown_write()
    assert loop.run_until(lambda: closes, timeout=5)
    assert got == b"last words" and writer.closed


def test_write_counts_bytes_not_items(loop):
    a, b = evloop.conn_pair(loop, start_reading=False)
    a.write(b"open the tail")
    a.write(array.array("I", [1, 2, 3]))  # 3 items, 12 bytes
    assert a.write_buffered == 13 + 12
    got = bytearray()
    b.on_data = lambda c: drain(c, got)
    b.resume_reading()
    assert loop.run_until(lambda: len(got) == 25, timeout=5)
    assert a.write_buffered == 0


def test_closing_another_conn_in_the_same_batch_needs_no_rebuild(loop):
    others = [evloop.conn_pair(loop) for _ in range(50)]
    (a1, a2), (b1, b2) = evloop.conn_pair(loop), evloop.conn_pair(loop)

    def kill(other):
        def on_data(conn):
            conn.consume(conn.read_buffered)
            other.abort()

        return on_data

    a1.on_data, b1.on_data = kill(b1), kill(a1)
    a2.write(b"x")
    b2.write(b"y")  # both readable in the same epoll batch
    assert loop.run_until(lambda: a1.closed or b1.closed, timeout=5)
    loop.run_until(lambda: False, timeout=0.02)
    assert loop.statistics().epoll_rebuilds == 0
    assert len(others) == 50


def test_fast_path_past_the_watermark_still_respects_the_cap(loop):
    a, b = evloop.conn_pair(loop, high_water=100, low_water=50, write_cap=1000, start_reading=False)
    paused = []
    a.on_pause_writing = lambda: paused.append(1)
    a.write(b"x" * 60)
    a.write(b"x" * 60)  # crosses the watermark: announced once
    for _ in range(14):
        a.write(b"y" * 60)  # past it: fast path, no second announcement
    assert paused == [1] and a.write_buffered == 960
    with pytest.raises(evloop.BufferFullError):
        a.write(b"z" * 60)  # the cap still holds on the fast path
    assert a.write_buffered == 960


def test_reset_while_back_pressured_delivers_everything_first(loop):
    # The peer sends more than our read limit, then closes with bytes of ours
    # unread (a reset). Every byte it sent must still reach the consumer,
    # and on_close reports the reset afterwards.
    a_sock, b_sock = socket.socketpair()
    conn = evloop.Conn(loop, b_sock, read_limit=64 * 1024)
    got, closes = bytearray(), []
    conn.on_data = lambda c: None  # consume nothing yet...
    conn.on_read_limit = lambda c: None  # ...on purpose: back-pressure
    conn.on_close = closes.append
    conn.write(b"never read by the peer")
    loop.run_until(lambda: conn.bytes_out > 0, timeout=5)
    data = os.urandom(150_000)
    a_sock.setblocking(False)
    sent = 0
    while sent < len(data):
        try:
            sent += a_sock.send(data[sent:])
        except BlockingIOError:
            loop.run_once(0)
    a_sock.close()  # with unread data: a reset
    # Not reading (at its limit), the Conn parks on the hang-up.
    assert loop.run_until(lambda: not loop.is_registered(conn.fd), timeout=5)
    conn.on_data = lambda c: drain(c, got)
    drain(conn, got)
    assert loop.run_until(lambda: closes, timeout=5)
    assert bytes(got) == data
    assert isinstance(closes[0], ConnectionResetError)
