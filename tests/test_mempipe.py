# The FrameEndpoint contract, run once against a socket Pipe (conn_pair) and
# once against an in-process mempipe: code written against one must run
# unchanged on the other. Then what only a mempipe promises (no copy).
from __future__ import annotations

from typing import Any

import pytest

import evloop
from evloop.endpoint import FrameEndpoint
from evloop.mempipe import MemPipe, mempipe_pair

HIGH = 64 * 1024


class EndpointCases:
    """Each test gets self.a (writer side) and self.b (reader side)."""

    def make(self, loop: evloop.Loop, **kw: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def pair(self, loop, **kw):
        a, b = self.make(loop, **kw)
        assert isinstance(a, FrameEndpoint) and isinstance(b, FrameEndpoint)
        return a, b

    def close_both(self, loop, a, b):
        a.close()
        b.close()
        assert loop.run_until(lambda: a.closed and b.closed, timeout=5)

    def test_frames_arrive_in_order_with_nul_and_high_bytes(self, loop):
        a, b = self.pair(loop)
        got: list[tuple[int, bytes]] = []
        b.on_frame = lambda c, p: got.append((c, bytes(p)))
        frames = [(0, b"\x00"), (65535, b"\xff" * 3), (7, bytes(range(256))), (1, b"x" * 70000)]
        for chan, data in frames:
            a.write_frame(chan, data)
        assert loop.run_until(lambda: len(got) == 4, timeout=5)
        assert got == frames
        self.close_both(loop, a, b)

    def test_multi_part_and_write_frames(self, loop):
        a, b = self.pair(loop)
        got: list[tuple[int, bytes]] = []
        b.on_frame = lambda c, p: got.append((c, bytes(p)))
        a.write_frame(3, b"id:", bytearray(b"\x00\x01"), memoryview(b"body"))
        a.write_frames([(4, b"one"), (5, bytearray(b"two"))])
        assert loop.run_until(lambda: len(got) == 3, timeout=5)
        assert got == [(3, b"id:\x00\x01body"), (4, b"one"), (5, b"two")]
        self.close_both(loop, a, b)

    def test_bad_frames_are_refused_before_anything_is_written(self, loop):
        a, b = self.pair(loop)
        got: list[int] = []
        b.on_frame = lambda c, p: got.append(c)
        with pytest.raises(ValueError):
            a.write_frame(65536, b"x")
        with pytest.raises(ValueError):
            a.write_frame(-1, b"x")
        with pytest.raises(ValueError):
            a.write_frame(1, b"")
        with pytest.raises(TypeError):
            a.write_frame(1, "text")  # type: ignore[arg-type]
        with pytest.raises((ValueError, TypeError)):
            a.write_frames([(1, b"ok"), (2, b"")])
        a.write_frame(9, b"last")
        assert loop.run_until(lambda: got, timeout=5)
        loop.run_until(lambda: False, timeout=0.01)  # nothing else may come
        assert got == [9]
        self.close_both(loop, a, b)

    def test_never_delivered_inside_write_frame(self, loop):
        a, b = self.pair(loop)
        got: list[bytes] = []
        b.on_frame = lambda c, p: got.append(bytes(p))
        a.write_frame(1, b"later")
        assert got == []
        assert loop.run_until(lambda: got, timeout=5)
        self.close_both(loop, a, b)

    def test_handler_that_writes_back_does_not_recurse(self, loop):
        a, b = self.pair(loop)
        depth = [0, 0]
        got: list[int] = []

        def echo(c: int, p: Any) -> None:
            depth[0] += 1
            depth[1] = max(depth[1], depth[0])
            if c < 50:
                b.write_frame(c + 1, p)
            depth[0] -= 1

        def back(c: int, p: Any) -> None:
            got.append(c)
            if c < 50:
                a.write_frame(c + 1, p)

        b.on_frame = echo
        a.on_frame = back
        a.write_frame(0, b"ping")
        assert loop.run_until(lambda: got and got[-1] >= 49, timeout=5)
        assert depth[1] == 1
        self.close_both(loop, a, b)

    def test_payload_is_independent_of_the_writers_buffer(self, loop):
        a, b = self.pair(loop)
        got: list[Any] = []
        b.on_frame = lambda c, p: got.append(p)
        buf = bytearray(b"original")
        a.write_frame(1, buf)
        buf[:] = b"changed!"
        assert loop.run_until(lambda: got, timeout=5)
        assert bytes(got[0]) == b"original"
        self.close_both(loop, a, b)

    def test_high_watermark_and_when_writable(self, loop):
        a, b = self.pair(loop, high_water=HIGH)
        got = [0]

        def count(c: int, p: Any) -> None:
            got[0] += len(p)

        assert a.writable
        sent = 0
        while a.writable:
            a.write_frame(1, b"x" * 4096)
            sent += 4096
            assert sent < 100 * HIGH, "writable never turned False"
        woke: list[bool] = []
        h = a.when_writable(lambda: woke.append(a.writable))
        cancelled = a.when_writable(lambda: woke.append("cancelled"))  # type: ignore[arg-type]
        cancelled.cancel()
        b.on_frame = count
        assert loop.run_until(lambda: woke, timeout=5)
        assert woke == [True] and h is not None
        assert loop.run_until(lambda: got[0] == sent, timeout=5)
        self.close_both(loop, a, b)

    def test_pause_and_resume_reading(self, loop):
        a, b = self.pair(loop)
        got: list[bytes] = []
        b.on_frame = lambda c, p: got.append(bytes(p))
        b.pause_reading()
        a.write_frame(1, b"held")
        loop.run_until(lambda: False, timeout=0.02)
        assert got == []
        b.resume_reading()
        assert loop.run_until(lambda: got == [b"held"], timeout=5)
        self.close_both(loop, a, b)

    def test_close_delivers_everything_then_on_close_once_each(self, loop):
        a, b = self.pair(loop)
        events: list[Any] = []
        b.on_frame = lambda c, p: events.append(("frame", bytes(p)))
        b.on_close = lambda exc: events.append(("b closed", exc))
        a.on_close = lambda exc: events.append(("a closed", exc))
        for i in range(100):
            a.write_frame(1, b"%d" % i)
        a.close()
        with pytest.raises(evloop.ConnClosedError):
            a.write_frame(1, b"after close")
        assert loop.run_until(lambda: a.closed and b.closed, timeout=5)
        loop.run_until(lambda: len(events) == 102, timeout=5)
        frames = [e for e in events if e[0] == "frame"]
        assert frames == [("frame", b"%d" % i) for i in range(100)]
        assert events.index(("b closed", None)) == len(events) - 1 or events[-1] == (
            "a closed",
            None,
        )
        b_close = events.index(("b closed", None))
        assert all(events.index(f) < b_close for f in frames)
        assert events.count(("a closed", None)) == 1 and events.count(("b closed", None)) == 1

    def test_abort_closes_at_once(self, loop):
        a, b = self.pair(loop)
        closed: list[Any] = []
        a.on_close = closed.append
        b.on_frame = lambda c, p: None
        a.abort()
        assert a.closed
        assert loop.run_until(lambda: closed and b.closed, timeout=5)
        assert closed == [None]

    def test_statistics_count_frames_and_payload(self, loop):
        a, b = self.pair(loop)
        got: list[int] = []
        b.on_frame = lambda c, p: got.append(c)
        a.write_frame(1, b"abc")
        a.write_frame(2, b"de", b"f")
        assert loop.run_until(lambda: len(got) == 2, timeout=5)
        sa, sb = a.statistics(), b.statistics()
        assert (sa.frames_out, sa.payload_out) == (2, 6)
        assert (sb.frames_in, sb.payload_in) == (2, 6)
        self.close_both(loop, a, b)

    def test_fair_with_other_ready_sources(self, loop):
        # A flooding endpoint does not starve another one.
        a, b = self.pair(loop)
        c, d = self.pair(loop)
        order: list[str] = []
        b.on_frame = lambda ch, p: order.append("flood")
        d.on_frame = lambda ch, p: order.append("quiet")
        for _ in range(500):
            a.write_frame(1, b"f")
        c.write_frame(1, b"q")
        assert loop.run_until(lambda: "quiet" in order and len(order) == 501, timeout=5)
        # Behind at most one quantum of the flood (the quiet frame came
        # later in the same turn).
        assert order.index("quiet") <= min(loop.quantum, loop.budget)
        self.close_both(loop, a, b)
        self.close_both(loop, c, d)


class TestSocketPipe(EndpointCases):
    def make(self, loop, high_water=1 << 20):
        ca, cb = evloop.conn_pair(loop, high_water=high_water)
        return evloop.Pipe(ca), evloop.Pipe(cb)


class TestMemPipe(EndpointCases):
    def make(self, loop, high_water=1 << 20):
        return mempipe_pair(loop, high_water=high_water)


# -- what only the mempipe promises ---------------------------------------------


def test_bytes_are_passed_by_reference(loop):
    a, b = mempipe_pair(loop)
    got: list[Any] = []
    b.on_frame = lambda c, p: got.append(p)
    payload = b"y" * 100_000
    a.write_frame(1, payload)
    a.write_frame(2, memoryview(payload))
    assert loop.run_until(lambda: len(got) == 2, timeout=5)
    assert got[0] is payload and got[1] is payload
    a.close()
    assert loop.run_until(lambda: b.closed, timeout=5)


def test_write_cap_refuses_and_queues_nothing(loop):
    a, b = mempipe_pair(loop, high_water=10, write_cap=100)
    a.write_frame(1, b"x" * 60)
    assert not a.writable
    with pytest.raises(evloop.BufferFullError):
        a.write_frame(1, b"x" * 60)
    assert a.write_buffered == 60
    with pytest.raises(ValueError):
        mempipe_pair(loop, high_water=10, low_water=20)
    a.close()
    b.close()


def test_writing_to_a_closed_peer_is_an_error(loop):
    a, b = mempipe_pair(loop)
    b.close()
    with pytest.raises(evloop.ConnClosedError):
        a.write_frame(1, b"nobody")
    assert loop.run_until(lambda: a.closed, timeout=5)


def test_closing_with_unread_frames_resets_the_peer(loop):
    a, b = mempipe_pair(loop)
    reasons: list[Any] = []
    a.on_close = reasons.append
    a.write_frame(1, b"unread")
    b.close()  # b never delivered a's frame
    assert loop.run_until(lambda: reasons, timeout=5)
    assert isinstance(reasons[0], ConnectionResetError)


def test_loop_close_aborts_mempipes(loop):
    a, b = mempipe_pair(loop)
    assert isinstance(a, MemPipe)
    loop.close()
    assert a.closed and b.closed


def test_mempipe_ends_have_the_coroutine_methods(loop):
    from evloop import tasks

    a, b = mempipe_pair(loop)

    async def main() -> tuple[int, Any]:
        await a.send(3, b"via ", b"coroutines")
        return await b.recv()

    assert tasks.run_until_complete(loop, main()) == (3, b"via coroutines")
    a.close()
    assert loop.run_until(lambda: b.closed, timeout=5)
