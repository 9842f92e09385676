# Regression tests for issue 9's Conn/Pipe defects: each promise the README
# makes about faults, tried from the failure side.
#
#   1. a reset or EPIPE with a write pending must not cost the peer's input;
#   5. a non-contiguous memoryview must never corrupt the stream;
#   7. a Conn closed by a socket error must not live until a full GC;
#   8. a raising on_eof must not leak the Conn or its fd.
from __future__ import annotations

import gc
import socket
import struct
import weakref

import pytest

import evloop

HDR = struct.Struct(">HI")


def frames(n: int, size: int = 10) -> bytes:
    return b"".join(HDR.pack(i % 7, size) + bytes([i % 251]) * size for i in range(n))


def echo_server_conn(loop: evloop.Loop, sock: socket.socket, **conn_kwargs):
    """The README's echo server, on one accepted socket: every frame goes
    back on its channel. Returns (conn, frames seen, close reasons)."""
    seen: list[int] = []
    closed: list[BaseException | None] = []
    conn = evloop.Conn(loop, sock, **conn_kwargs)
    pipe = evloop.Pipe(conn)

    def on_frame(chan: int, payload: bytes | bytearray) -> None:
        seen.append(chan)
        pipe.write_frame(chan, payload)

    pipe.on_frame = on_frame
    pipe.on_close = closed.append
    return conn, seen, closed


def test_unix_peer_that_closes_after_sending_gets_all_its_input_processed(loop):
    # Defect 1: the first turn's replies fail with EPIPE (the peer is gone);
    # that used to abort the Conn and drop the 1,936 frames still queued.
    ours, theirs = socket.socketpair()
    conn, seen, closed = echo_server_conn(loop, ours)
    theirs.sendall(frames(2000))
    theirs.close()
    assert loop.run_until(lambda: closed, timeout=10)
    assert len(seen) == 2000
    assert closed[0] is None or isinstance(closed[0], OSError)


@pytest.mark.parametrize("budget, quantum", [(1, 1), (7, 3), (1024, 64)])
def test_send_failure_with_a_backlog_of_frames_still_delivers_them_all(budget, quantum):
    # The Pipe holds a batch it has not delivered yet (and has stopped the
    # Conn reading meanwhile) when the replies fail: the batch, and what is
    # still in the kernel, must all be delivered before the close.
    with evloop.Loop(budget=budget, quantum=quantum) as lp:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        conn, seen, closed = echo_server_conn(lp, ours)
        data = frames(20_000)
        sent = theirs.send(data)
        while sent < len(data):
            lp.run_once(0)
            try:
                sent += theirs.send(data[sent:])
            except BlockingIOError:
                pass
        theirs.close()
        assert lp.run_until(lambda: closed, timeout=20)
        assert len(seen) == 20_000
        assert seen == [i % 7 for i in range(20_000)]


def test_tcp_peer_that_resets_after_sending_gets_all_its_input_processed(loop):
    lsock = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lsock.getsockname())
    ours, _ = lsock.accept()
    lsock.close()
    conn, seen, closed = echo_server_conn(loop, ours)
    client.sendall(frames(2000))
    # Wait until every byte reached our socket, then reset: RST, not FIN.
    assert loop.run_until(lambda: conn.statistics().bytes_in > 0, timeout=5)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    assert loop.run_until(lambda: closed, timeout=10)
    assert len(seen) == 2000
    assert isinstance(closed[0], ConnectionResetError) or closed[0] is None


def test_paused_reader_with_a_write_backlog_keeps_what_the_peer_sent(loop):
    # A Conn that is not reading, with writes the peer never reads, sees the
    # peer close: the flush fails (EPIPE), and everything the peer sent must
    # still be delivered once reading resumes.
    ours, theirs = socket.socketpair()
    got = bytearray()
    closed: list[BaseException | None] = []

    def on_data(c: evloop.Conn) -> None:
        v = c.read()
        got.extend(v)
        c.consume(len(v))
        v.release()

    conn = evloop.Conn(loop, ours, on_data=on_data, on_close=closed.append)
    conn.pause_reading()
    conn.write(b"w" * (4 << 20))  # far more than the peer's buffer
    loop.run_until(lambda: conn.write_buffered < (4 << 20), timeout=5)
    theirs.sendall(b"i" * 100_000)
    theirs.close()
    # The flush fails with EPIPE / ECONNRESET while we are paused.
    assert loop.run_until(lambda: conn.write_buffered == 0, timeout=5)
    assert not closed
    conn.resume_reading()
    assert loop.run_until(lambda: closed, timeout=5)
    assert bytes(got) == b"i" * 100_000
    assert isinstance(closed[0], OSError)


def test_writes_after_a_failed_send_are_dropped_and_the_close_says_why(loop):
    ours, theirs = socket.socketpair()
    conn, seen, closed = echo_server_conn(loop, ours)
    theirs.sendall(frames(300))
    theirs.close()
    assert loop.run_until(lambda: closed, timeout=10)
    assert len(seen) == 300
    assert not loop.errors  # no write raised into the loop handler 300 times
    assert conn.statistics().write_buffered == 0


@pytest.mark.parametrize("size", [6, 200_001])
def test_non_contiguous_memoryview_is_sent_as_its_bytes(loop, size):
    # Defect 5: a strided view left a phantom header (small) or wedged the
    # Conn for good (large).
    a, b = evloop.conn_pair(loop)
    pa = evloop.Pipe(a)
    got: list[bytes] = []
    evloop.Pipe(b, lambda c, p: got.append(bytes(p)))
    raw = bytes(range(256)) * (size // 256 + 1)
    view = memoryview(raw[:size])[::2]
    pa.write_frame(3, view)
    pa.write_frame(4, b"after")
    assert loop.run_until(lambda: len(got) == 2, timeout=10)
    assert got == [view.tobytes(), b"after"]
    a.close()
    loop.run_until(lambda: b.closed, timeout=5)


def test_non_contiguous_memoryview_through_conn_write(loop):
    a, b = evloop.conn_pair(loop)
    got = bytearray()
    b.on_data = lambda c: (got.extend(c.read()), c.consume(c.read_buffered))
    raw = bytes(range(256)) * 1000
    a.write(memoryview(raw)[::3])
    a.writev([b"<", memoryview(raw)[1::5], b">"])
    expect = raw[::3] + b"<" + raw[1::5] + b">"
    assert loop.run_until(lambda: len(got) == len(expect), timeout=10)
    assert bytes(got) == expect
    a.close()
    loop.run_until(lambda: b.closed, timeout=5)


def test_conn_closed_by_a_socket_error_is_freed_without_a_gc(loop):
    # Defect 7: the stored exception's traceback referenced the Conn, so
    # every Conn ended by an error lived until a full collection.
    gc.collect()
    gc.disable()
    try:
        refs = []
        for _ in range(20):
            ours, theirs = socket.socketpair()
            closed: list[BaseException | None] = []
            conn, seen, closed = echo_server_conn(loop, ours)
            theirs.sendall(frames(100))
            theirs.close()
            assert loop.run_until(lambda closed=closed: closed, timeout=5)
            refs.append(weakref.ref(conn))
            del conn, seen, closed
        loop.run_once(0)
        alive = [r for r in refs if r() is not None]
        assert not alive, (
            f"{len(alive)} of 20 Conns survive without a GC: {gc.get_referrers(alive[0]())}"
        )
    finally:
        gc.enable()


def test_a_raising_on_eof_still_closes_the_conn_once(loop):
    # Defect 8: on_close never ran and the fd leaked.
    a, b = evloop.conn_pair(loop)
    closes: list[BaseException | None] = []

    def on_eof(conn: evloop.Conn) -> bool:
        raise RuntimeError("on_eof failed")

    b.on_eof = on_eof
    b.on_close = closes.append
    a.close()
    assert loop.run_until(lambda: closes, timeout=5)
    loop.run_once(0)
    assert len(closes) == 1 and b.closed and b.fd == -1
    loop.errors.claim(RuntimeError)


def test_a_raising_on_data_leaves_the_conn_open_and_working(loop):
    a, b = evloop.conn_pair(loop)
    calls: list[int] = []

    def on_data(conn: evloop.Conn) -> None:
        calls.append(conn.read_buffered)
        conn.consume(conn.read_buffered)
        if len(calls) == 1:
            raise RuntimeError("first on_data fails")

    b.on_data = on_data
    a.write(b"one")
    assert loop.run_until(lambda: calls, timeout=5)
    a.write(b"two")
    assert loop.run_until(lambda: len(calls) == 2, timeout=5)
    assert not b.closed
    loop.errors.claim(RuntimeError)
    a.close()
    loop.run_until(lambda: b.closed, timeout=5)
