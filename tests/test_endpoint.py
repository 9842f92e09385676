# The frame-endpoint seam: Pipe implements FrameEndpoint; ChannelMux splits
# one endpoint by channel and never drops a frame silently.
from __future__ import annotations

import pytest

import evloop
from evloop.endpoint import ChannelMux, FrameEndpoint


def test_pipe_is_a_frame_endpoint(loop):
    a, b = evloop.conn_pair(loop)
    pa, pb = evloop.Pipe(a), evloop.Pipe(b)
    assert isinstance(pa, FrameEndpoint) and isinstance(pb, FrameEndpoint)
    pa.close()
    pb.close()
    loop.run_until(lambda: a.closed and b.closed, timeout=5)


def test_mux_routes_by_channel_and_reports_the_unrouted(loop):
    a, b = evloop.conn_pair(loop)
    pa, pb = evloop.Pipe(a), evloop.Pipe(b)
    got: list[tuple[str, int, bytes]] = []
    mux = ChannelMux(pb)
    mux.route(1, lambda c, p: got.append(("one", c, bytes(p))))
    mux.route(7, lambda c, p: got.append(("seven", c, bytes(p))))
    with pytest.raises(ValueError):
        mux.route(1, lambda c, p: None)
    pa.write_frame(7, b"x")
    pa.write_frame(1, b"y")
    pa.write_frame(3, b"lost?")
    pa.write_frame(1, b"z")
    loop.run_until(lambda: len(got) == 3, timeout=5)
    assert got == [("seven", 7, b"x"), ("one", 1, b"y"), ("one", 1, b"z")]
    exc = loop.errors.claim(evloop.UnroutableFrame)
    assert exc.channel == 3 and mux.unrouted == 1
    pa.close()
    loop.run_until(lambda: b.closed, timeout=5)


def test_mux_default_takes_the_rest(loop):
    a, b = evloop.conn_pair(loop)
    pa, pb = evloop.Pipe(a), evloop.Pipe(b)
    rest: list[int] = []
    mux = ChannelMux(pb, default=lambda c, p: rest.append(c))
    mux.route(0, lambda c, p: rest.append(-1))
    for chan in (0, 5, 65535):
        pa.write_frame(chan, b"p")
    loop.run_until(lambda: len(rest) == 3, timeout=5)
    assert rest == [-1, 5, 65535]
    pa.close()
    loop.run_until(lambda: b.closed, timeout=5)


def test_multi_part_frame_is_one_frame(loop):
    a, b = evloop.conn_pair(loop)
    pa = evloop.Pipe(a)
    got: list[tuple[int, bytes]] = []
    evloop.Pipe(b, lambda c, p: got.append((c, bytes(p))))
    pa.write_frame(9, b"id:", bytearray(b"\x00\xff"), memoryview(b"payload"))
    pa.write_frame(9, b"one")
    loop.run_until(lambda: len(got) == 2, timeout=5)
    assert got == [(9, b"id:\x00\xffpayload"), (9, b"one")]
    with pytest.raises(TypeError):
        pa.write_frame(9, b"ok", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pa.write_frame(9, b"", b"")
    pa.close()
    loop.run_until(lambda: b.closed, timeout=5)


def test_read_frame_refused_while_on_frame_is_set(loop):
    # Re-entry: a pull from inside on_frame used to deliver a frame twice and
    # then raise ValueError into the loop.
    a, b = evloop.conn_pair(loop)
    pa = evloop.Pipe(a)
    seen: list[bytes] = []
    refused: list[BaseException] = []

    def on_frame(chan: int, payload: bytes | bytearray) -> None:
        seen.append(bytes(payload))
        try:
            pb.read_frame()
        except RuntimeError as exc:
            refused.append(exc)

    pb = evloop.Pipe(b, on_frame)
    for i in range(4):
        pa.write_frame(0, b"x%d" % i)
    loop.run_until(lambda: len(seen) == 4, timeout=5)
    assert seen == [b"x0", b"x1", b"x2", b"x3"]
    assert len(refused) == 4 and "push mode" in str(refused[0])
    assert pb.statistics().frames_in == 4
    pa.close()
    loop.run_until(lambda: b.closed, timeout=5)


def test_when_writable_wakes_every_waiter_once(loop):
    a, b = evloop.conn_pair(loop, high_water=1024, low_water=0)
    b.pause_reading()
    pa = evloop.Pipe(a)
    woken: list[str] = []
    pa.when_writable(lambda: woken.append("now"))  # writable: called soon
    loop.run_until(lambda: woken, timeout=5)
    while pa.writable:
        pa.write_frame(0, b"z" * 512)
    pa.write_frame(0, b"z" * (4 << 20))  # more than the kernel will take
    for name in ("x", "y"):
        pa.when_writable(lambda name=name: woken.append(name))
    cancelled = pa.when_writable(lambda: woken.append("cancelled"))
    cancelled.cancel()
    for _ in range(5):
        loop.run_once(0)
    assert a.write_buffered > 1024 and not pa.writable
    assert woken == ["now"]  # still paused: the peer is not reading
    b.resume_reading()
    b.on_data = lambda c: c.consume(c.read_buffered)
    loop.run_until(lambda: len(woken) == 3, timeout=5)
    assert woken == ["now", "x", "y"]
    a.close()
    loop.run_until(lambda: b.closed, timeout=5)
