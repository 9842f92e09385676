# tests/test_session.py
#
# evloop.session from the failure side: faults every ~1,000 messages, a
# peer SIGKILLed and restarted, a SIGSTOPped peer, a wrong key, both sides
# dialing at once, garbage on the session channel. Real sockets and real
# processes; a VirtualClock wherever keepalive or backoff timing is the
# point, so those tests are fast and deterministic.
from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import evloop
from evloop.errors import (
    AuthenticationError,
    BufferFullError,
    ConnClosedError,
    ConnectError,
    KeepaliveTimeout,
    ProtocolError,
    SessionError,
    SessionProtocolError,
    SessionReset,
    TruncatedFrameError,
)
from evloop.future import Future
from evloop.session import SESSION_CHANNEL, Messenger, Policy, wire
from evloop.testing import VirtualClock

from .conftest import LoopErrors, open_fds
from .spawn_helpers import zombie_children

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HDR = struct.Struct(">HI")
SEQ = struct.Struct(">Q")


def make_loop(clock: VirtualClock | None = None) -> evloop.Loop:
    lp = evloop.Loop(clock=clock)
    errors = LoopErrors()
    lp.set_exception_handler(lambda exc, cb: errors.append((exc, cb)))
    lp.errors = errors  # type: ignore[attr-defined]
    return lp


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock(autojump_threshold=0)


@pytest.fixture
def vloop(vclock: VirtualClock) -> Iterator[evloop.Loop]:
    """The `loop` fixture's leak checks, on a VirtualClock."""
    before = open_fds()
    lp = make_loop(vclock)
    yield lp
    lp.close()
    leaked = {fd: what for fd, what in open_fds().items() if fd not in before}
    assert not leaked, f"fds left open after Loop.close(): {leaked}"
    assert not lp.errors, f"unexpected exceptions in loop callbacks: {list(lp.errors)}"  # type: ignore[attr-defined]


def pair(loop: evloop.Loop, a_kwargs=None, b_kwargs=None, transport="tcp", tmp_path=None):
    """Messenger a (dials) and b (listens), b recording what it gets."""
    if transport == "tcp":
        addr = "tcp:127.0.0.1:0"
    else:
        addr = f"unix:{tmp_path}/b.sock"
    got: list[tuple[int, bytes]] = []
    b = Messenger(loop, addr, **(b_kwargs or {}))
    b.on_message = lambda s, c, p: got.append((c, bytes(p)))
    a = Messenger(loop, None, **(a_kwargs or {}))
    return a, b, got


def settle(loop: evloop.Loop, m: Messenger) -> None:
    """Run until every session of m has nothing pending."""
    assert loop.run_until(
        lambda: all(s.statistics().pending_bytes == 0 for s in m.sessions()), timeout=20
    ), [s.statistics() for s in m.sessions()]


# -- basics ---------------------------------------------------------------------


def test_messages_arrive_in_order_and_are_acknowledged(loop):
    a, b, got = pair(loop)
    for i in range(5000):
        a.send_message(b.address, i % 3, SEQ.pack(i))
    assert loop.run_until(lambda: len(got) == 5000, timeout=20)
    assert [SEQ.unpack(p)[0] for _, p in got] == list(range(5000))
    assert [c for c, _ in got] == [i % 3 for i in range(5000)]
    settle(loop, a)
    st = a.session(b.address).statistics()
    assert (st.out_seq, st.acked, st.unacked, st.queued, st.state) == (5000, 5000, 0, 0, "open")
    assert b.session(a.address).statistics().in_seq == 5000
    assert a.is_connected(b.address) and b.is_connected(a.address)
    a.close()
    b.close()


def test_unix_transport_and_replies(loop, tmp_path):
    a, b, got = pair(loop, transport="unix", tmp_path=tmp_path)
    b.on_message = lambda s, c, p: s.send(c, p[::-1])
    back: list[bytes] = []
    a.on_message = lambda s, c, p: back.append(p)
    a.send_message(b.address, 7, b"hello")
    assert loop.run_until(lambda: back, timeout=10)
    assert back == [b"olleh"]
    a.close()
    b.close()
    assert not os.path.exists(str(tmp_path / "b.sock"))


def test_unix_transport_survives_injected_faults(loop, tmp_path):
    a, b, got = pair(loop, a_kwargs={"inject_socket_failures": 97}, transport="unix",
                     tmp_path=tmp_path)  # fmt: skip
    for i in range(3000):
        a.send_message(b.address, 1, SEQ.pack(i))
    assert loop.run_until(lambda: len(got) == 3000, timeout=30)
    assert [SEQ.unpack(p)[0] for _, p in got] == list(range(3000))
    assert a.injected >= 30
    a.close()
    b.close()


def test_large_messages_cross_faults_intact(loop):
    a, b, got = pair(loop, a_kwargs={"inject_socket_failures": 5})
    sizes = [10, 100_000, 7, 2 << 20, 64 * 1024, 1, 300_000] * 3
    payloads = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    for p in payloads:
        a.send_message(b.address, 2, p)
    assert loop.run_until(lambda: len(got) == len(payloads), timeout=30)
    assert [p for _, p in got] == payloads
    assert a.injected >= 3
    a.close()
    b.close()


def test_closing_while_dialing_and_backing_off_leaves_nothing_behind(loop):
    # A dial in flight, a session backing off, a handshake half done: close()
    # releases them all (the fixture checks fds; the loop has no timers left).
    lsock = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    m = Messenger(loop, None, policy=Policy.lossless_client())
    m.send_message(f"tcp:127.0.0.1:{lsock.getsockname()[1]}", 1, b"x")
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    m.send_message(f"tcp:127.0.0.1:{dead.getsockname()[1]}", 1, b"y")  # refused
    assert loop.run_until(lambda: m.statistics().links == 1, timeout=10)
    assert loop.run_until(lambda: all(s.state == "connecting" for s in m.sessions()), timeout=10)
    m.close()
    assert loop.statistics().timers == 0, loop.statistics()
    assert m.statistics().sessions == 0
    dead.close()
    lsock.close()


def test_local_delivery_uses_no_socket_and_keeps_priority_order(loop):
    m = Messenger(loop, "tcp:127.0.0.1:0")
    got: list[bytes] = []
    m.on_message = lambda s, c, p: got.append(p)
    fds = len(open_fds())
    m.send_message(m.address, 1, b"low1", priority=10)
    m.send_message(m.address, 1, b"low2", priority=10)
    m.send_message(m.address, 1, b"high", priority=200)
    assert got == []  # never delivered synchronously
    assert loop.run_until(lambda: len(got) == 3, timeout=5)
    assert got == [b"high", b"low1", b"low2"]
    assert len(open_fds()) == fds
    assert m.is_connected(m.address)
    assert m.session(m.address).statistics().messages_in == 3
    assert m.connect(m.address).local  # never dials itself
    assert m.statistics().links == 0
    m.close()


def test_bad_arguments_are_refused_before_anything_is_queued(loop):
    a, b, _ = pair(loop)
    with pytest.raises(ValueError, match="channel"):
        a.send_message(b.address, SESSION_CHANNEL, b"x")
    with pytest.raises(ValueError, match="channel"):
        a.send_message(b.address, -1, b"x")
    with pytest.raises(ValueError, match="payload of 0 bytes"):
        a.send_message(b.address, 1, b"")
    with pytest.raises(TypeError, match="bytes-like"):
        a.send_message(b.address, 1, "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        a.send_message(b.address, 1, b"x", priority=256)
    with pytest.raises(ValueError, match="address"):
        a.send_message("somewhere", 1, b"x")
    with pytest.raises(SessionError, match="no address to dial"):
        a.send_message("anon:1234", 1, b"x")
    with pytest.raises(ValueError, match="keepalive_interval"):
        Messenger(loop, None, keepalive_interval=0)
    s = a.session(b.address)
    assert s is not None and s.statistics().queued == 0
    srv = Messenger(loop, None, policy=Policy.stateless_server())
    with pytest.raises(SessionError, match="server policy never dials"):
        srv.send_message(b.address, 1, b"x")
    srv.close()
    a.close()
    b.close()
    with pytest.raises(ConnClosedError):
        a.send_message(b.address, 1, b"x")


def test_send_cap_and_writable(loop):
    a, b, got = pair(loop, a_kwargs={"high_water": 4096, "send_cap": 8192})
    s = a.connect(b.address)
    for _ in range(7):  # 7 frames of 1030 bytes (a frame counts its 6-byte header)
        s.send(1, b"x" * 1024)
    assert not s.writable
    with pytest.raises(BufferFullError):
        s.send(1, b"x" * 1024)
    woke: list[bool] = []
    s.when_writable(lambda: woke.append(True))
    assert loop.run_until(lambda: woke, timeout=10)
    assert s.writable
    assert loop.run_until(lambda: len(got) == 7, timeout=10)
    a.close()
    b.close()


def test_policy_presets_are_cephs():
    flags = lambda p: (p.lossy, p.server, p.standby, p.resetcheck)  # noqa: E731
    assert flags(Policy.stateful_server()) == (False, True, True, True)
    assert flags(Policy.stateless_server()) == (True, True, False, False)
    assert flags(Policy.lossless_peer()) == (False, False, True, False)
    assert flags(Policy.lossless_peer_reuse()) == (False, False, True, True)
    assert flags(Policy.lossy_client()) == (True, False, False, False)
    assert flags(Policy.lossless_client()) == (False, False, False, True)
    with pytest.raises(ValueError):
        Policy(throttle_messages=0)


# -- lossless replay across faults ------------------------------------------------


def test_100k_messages_across_injected_faults_two_processes():
    # The shipped example: two processes over TCP, a fault every 1,000.
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "session_faults.py"),
         "--frames", "100000", "--fail-every", "1000"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert (r["delivered"], r["lost"], r["duplicated"], r["reordered"]) == (100000, 0, 0, 0)
    assert r["reconnects"] >= 100 and r["faults_injected"] >= 100


def test_both_directions_survive_faults_on_both_sides(loop):
    # Both sides inject faults and both dial (lossless_peer): every
    # reconnect is also a simultaneous-dial race.
    n = 20000
    kw = {"policy": Policy.lossless_peer(), "inject_socket_failures": 700}
    a = Messenger(loop, "tcp:127.0.0.1:0", **kw)
    b = Messenger(loop, "tcp:127.0.0.1:0", **{**kw, "inject_socket_failures": 900})
    got_a: list[int] = []
    got_b: list[int] = []
    a.on_message = lambda s, c, p: got_a.append(SEQ.unpack(p)[0])
    b.on_message = lambda s, c, p: got_b.append(SEQ.unpack(p)[0])
    for i in range(n):
        a.send_message(b.address, 1, SEQ.pack(i))
        b.send_message(a.address, 1, SEQ.pack(i))
    assert loop.run_until(lambda: len(got_a) >= n and len(got_b) >= n, timeout=60), (
        len(got_a), len(got_b), a.sessions(), b.sessions(),
    )  # fmt: skip
    assert got_a == list(range(n)) and got_b == list(range(n))
    assert a.injected >= 10 and b.injected >= 10
    assert a.session(b.address).statistics().reconnects >= 10
    a.close()
    b.close()


def test_peer_closing_first_then_reconnecting_replaces_the_old_connection(loop):
    # The accepting side still holds its old connection when the dialer
    # (which saw the fault first) reconnects: the old one is replaced and
    # nothing it carried is lost or delivered twice.
    a, b, got = pair(loop, a_kwargs={"policy": Policy.lossless_client()},
                     b_kwargs={"policy": Policy.stateful_server()})  # fmt: skip
    s = a.connect(b.address)
    assert loop.run_until(lambda: s.is_connected, timeout=10)
    for round_ in range(20):
        for i in range(100):
            s.send(1, SEQ.pack(round_ * 100 + i))
        loop.run_until(lambda: s.statistics().unacked > 0 or s.statistics().pending_bytes == 0,
                       timeout=10)  # fmt: skip
        s.conn.abort()  # a dies; b does not know yet
    assert loop.run_until(lambda: len(got) == 2000, timeout=20), len(got)
    assert [SEQ.unpack(p)[0] for _, p in got] == list(range(2000))
    assert b.statistics().sessions == 1
    a.close()
    b.close()


# -- process faults -------------------------------------------------------------


class Peer:
    """tests/session_peer.py in a child process."""

    def __init__(self, address: str, policy: str, key: str | None = None):
        argv = [sys.executable, str(HERE / "session_peer.py"), address, policy]
        if key is not None:
            argv.append(key)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        assert self.address.startswith(("tcp:", "unix:")), self.address

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for p in started:
        p.stop()
    assert not zombie_children()


def test_sigkilled_peer_restarted_reports_a_reset_and_new_messages_flow(peers):
    clock = VirtualClock(autojump_threshold=0.05)
    loop = make_loop(clock)
    try:
        peer = Peer("tcp:127.0.0.1:0", "stateful_server")
        peers.append(peer)
        m = Messenger(loop, None, policy=Policy.lossless_client())
        echoes: list[bytes] = []
        resets: list[int] = []
        m.on_message = lambda s, c, p: echoes.append(p)
        m.on_remote_reset = lambda s, dropped: resets.append(dropped)
        for i in range(100):
            m.send_message(peer.address, 1, SEQ.pack(i))
        assert loop.run_until(lambda: len(echoes) == 100, timeout=30)
        s = m.session(peer.address)
        peer.kill(signal.SIGKILL)
        peer.proc.wait()
        for i in range(100, 110):
            m.send_message(peer.address, 1, SEQ.pack(i))  # queued for the dead peer
        assert loop.run_until(lambda: not s.is_connected, timeout=30)
        clock.autojump_threshold = 0.01  # the dead peer refuses: back off on virtual time
        assert loop.run_until(lambda: s.statistics().state == "connecting", timeout=30)
        peer2 = Peer(peer.address, "stateful_server")  # same port, a new incarnation
        peers.append(peer2)
        clock.autojump_threshold = 0.05
        assert loop.run_until(lambda: resets, timeout=60), s.statistics()
        # resetcheck: what was queued for the old incarnation is discarded.
        assert resets == [10]
        assert s.statistics().remote_resets == 1 and s.statistics().dropped == 10
        echoes.clear()
        for i in range(50):
            m.send_message(peer.address, 1, SEQ.pack(1000 + i))
        assert loop.run_until(lambda: len(echoes) == 50, timeout=30)
        assert [SEQ.unpack(p)[0] for p in echoes] == list(range(1000, 1050))
        m.close()
    finally:
        loop.close()


def test_keepalive_declares_a_sigstopped_peer_dead_within_its_window(peers):
    # A generous autojump threshold while the live peer answers, a few ms
    # once it is stopped: the window is then crossed on virtual time.
    clock = VirtualClock(autojump_threshold=0.5)
    loop = make_loop(clock)
    try:
        peer = Peer("tcp:127.0.0.1:0", "stateful_server")
        peers.append(peer)
        m = Messenger(loop, None, policy=Policy.lossless_client(),
                      keepalive_interval=1.0, keepalive_misses=3)  # fmt: skip
        faults: list[tuple[float, BaseException]] = []
        m.on_fault = lambda s, exc: faults.append((loop.time(), exc))
        echoes: list[bytes] = []
        m.on_message = lambda s, c, p: echoes.append(p)
        m.send_message(peer.address, 1, b"ping")
        assert loop.run_until(lambda: echoes, timeout=30)
        s = m.session(peer.address)
        assert loop.run_until(lambda: s.rtt is not None, timeout=30)
        assert 0 <= s.rtt < 1.0 and s.last_keepalive_ack is not None
        peer.kill(signal.SIGSTOP)
        stopped_at = loop.time()
        clock.autojump_threshold = 0.005
        assert loop.run_until(lambda: faults, timeout=30)
        when, exc = faults[0]
        assert isinstance(exc, KeepaliveTimeout), exc
        assert exc.timeout == 3.0
        # Declared dead between N and N+1 intervals after it went silent.
        assert 3.0 - 1e-6 <= when - stopped_at <= 4.0 + 1e-6, when - stopped_at
        m.close()
    finally:
        loop.close()


def test_wrong_key_is_refused_on_both_sides_before_any_message(loop):
    a, b, got = pair(loop, a_kwargs={"key": b"right"}, b_kwargs={"key": b"wrong"})
    errors: list[BaseException] = []
    refused: list[BaseException] = []
    b.on_error = errors.append
    a.on_refused = lambda s, exc: refused.append(exc)
    for i in range(10):
        a.send_message(b.address, 1, SEQ.pack(i))
    assert loop.run_until(lambda: refused and errors, timeout=10)
    assert got == []
    assert isinstance(errors[0], AuthenticationError) and "wrong key" in str(errors[0])
    exc = refused[0]
    assert isinstance(exc, SessionReset) and exc.dropped == 10
    assert isinstance(exc.__cause__, AuthenticationError)
    assert "peer refused us" in str(exc.__cause__) and "wrong key" in str(exc.__cause__)
    assert a.session(b.address) is None  # closed, not retried
    assert b.statistics().sessions == 0
    a.close()
    b.close()


def test_key_on_one_side_only_is_refused_on_both(loop):
    a, b, got = pair(loop, a_kwargs={"key": "k"})
    errors: list[BaseException] = []
    refused: list[BaseException] = []
    b.on_error = errors.append
    a.on_refused = lambda s, exc: refused.append(exc)
    a.on_error = errors.append
    a.send_message(b.address, 1, b"x")
    assert loop.run_until(lambda: refused and errors, timeout=10)
    assert got == []
    assert any("mismatch" in str(e) for e in errors), errors
    assert isinstance(refused[0].__cause__, AuthenticationError)
    a.close()
    b.close()


def test_matching_keys_authenticate_over_two_processes(loop, peers):
    peer = Peer("tcp:127.0.0.1:0", "stateful_server", key="s3cret")
    peers.append(peer)
    m = Messenger(loop, None, policy=Policy.lossless_client(), key="s3cret")
    echoes: list[bytes] = []
    m.on_message = lambda s, c, p: echoes.append(p)
    m.send_message(peer.address, 3, b"authenticated")
    assert loop.run_until(lambda: echoes, timeout=20)
    assert echoes == [b"authenticated"]
    m.close()


# -- races, policies, priorities ----------------------------------------------------


@pytest.mark.parametrize("round_", range(3))
def test_both_sides_dialing_at_once_converge_to_one_connection(loop, round_):
    a = Messenger(loop, "tcp:127.0.0.1:0")
    b = Messenger(loop, "tcp:127.0.0.1:0")
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    a.on_message = lambda s, c, p: got_a.append(p)
    b.on_message = lambda s, c, p: got_b.append(p)
    for i in range(100):  # in the same turn: both dial
        a.send_message(b.address, 1, SEQ.pack(i))
        b.send_message(a.address, 1, SEQ.pack(i))
    assert loop.run_until(lambda: len(got_a) == 100 and len(got_b) == 100, timeout=20)
    assert loop.run_until(
        lambda: a.statistics().links == 1 and b.statistics().links == 1, timeout=10
    ), (a.statistics(), b.statistics())
    assert [SEQ.unpack(p)[0] for p in got_a] == list(range(100))
    assert [SEQ.unpack(p)[0] for p in got_b] == list(range(100))
    assert a.statistics().races + b.statistics().races >= 1
    # The connection dialed by the lower address won, on both sides.
    low, high = sorted((a, b), key=lambda m: m.address)
    assert low.session(high.address)._link.role == "connector"
    assert high.session(low.address)._link.role == "acceptor"
    sa, sb = a.session(b.address), b.session(a.address)
    assert sa.statistics().faults == 0 and sb.statistics().faults == 0
    a.close()
    b.close()


def test_lossy_session_drops_on_fault_and_says_so(loop):
    a, b, got = pair(loop, a_kwargs={"policy": Policy.lossy_client()},
                     b_kwargs={"policy": Policy.stateless_server()})  # fmt: skip
    resets: list[BaseException] = []
    a.on_reset = lambda s, exc: resets.append(exc)
    s = a.connect(b.address)
    assert loop.run_until(lambda: s.is_connected, timeout=10)
    for i in range(100):
        s.send(1, SEQ.pack(i))
    s.conn.abort()  # before the end-of-turn pull handed them over
    assert loop.run_until(lambda: resets, timeout=10)
    exc = resets[0]
    assert isinstance(exc, SessionReset) and exc.dropped == 100
    assert "100 messages dropped" in str(exc)
    assert s.closed and a.session(b.address) is None
    with pytest.raises(ConnClosedError):
        s.send(1, b"x")
    # A new send is a new session, and it flows.
    a.send_message(b.address, 1, b"after")
    assert loop.run_until(lambda: got and got[-1] == (1, b"after"), timeout=10)
    assert all(p == b"after" for _, p in got)
    a.close()
    b.close()


def test_priorities_reorder_only_what_is_not_yet_sent(loop):
    a, b, got = pair(loop, a_kwargs={"window": 4096})
    s = a.connect(b.address)
    assert loop.run_until(lambda: s.is_connected, timeout=10)
    # In one turn: nothing is sent before the end-of-turn pull, so all
    # highs overtake all lows.
    for i in range(50):
        s.send(1, b"L%03d" % i, priority=10)
    for i in range(50):
        s.send(1, b"H%03d" % i, priority=200)
    assert loop.run_until(lambda: len(got) == 100, timeout=10)
    assert [p for _, p in got] == [b"H%03d" % i for i in range(50)] + [
        b"L%03d" % i for i in range(50)
    ]
    got.clear()
    # Now stall the receiver: lows fill the kernel and the window; those
    # are sent (numbered). Highs sent later overtake only the lows still
    # queued.
    bs = b.session(a.address)
    bs.conn.pause_reading()
    base = s.statistics().out_seq
    payload = b"x" * 1000
    i = 0
    while s.statistics().queued < 200:
        for _ in range(100):
            s.send(1, b"L%05d" % i + payload, priority=10)
            i += 1
        loop.run_until(lambda: False, timeout=0.01)
    sent_before = s.statistics().out_seq - base
    lows = i
    for j in range(20):
        s.send(1, b"H%05d" % j, priority=200)
    bs.conn.resume_reading()
    assert loop.run_until(lambda: len(got) == lows + 20, timeout=20)
    order = [p[:6] for _, p in got]
    expect = (
        [b"L%05d" % k for k in range(sent_before)]
        + [b"H%05d" % j for j in range(20)]
        + [b"L%05d" % k for k in range(sent_before, lows)]
    )
    assert order == expect
    assert sent_before < lows - 100  # the highs did overtake many lows
    a.close()
    b.close()


def test_throttle_stops_reading_instead_of_buffering(loop):
    held: list[Future] = []

    def handler(s, c, p):
        f: Future = Future(loop)
        held.append(f)
        return f

    policy = Policy.stateful_server().with_throttle(messages=10)
    a, b, _ = pair(loop, a_kwargs={"policy": Policy.lossless_client()},
                   b_kwargs={"policy": policy})  # fmt: skip
    b.on_message = handler
    for _i in range(5000):
        a.send_message(b.address, 1, b"y" * 200)
    assert loop.run_until(lambda: len(held) == 10, timeout=10)
    loop.run_until(lambda: False, timeout=0.2)  # nothing more arrives
    assert len(held) == 10
    bs = b.session(a.address)
    assert not bs.conn.reading
    th = b.throttle(policy)
    assert th is not None and th.statistics().messages == 10 and th.statistics().paused == 1
    assert a.session(b.address).statistics().pending_bytes > 0
    # Releasing the held messages resumes reading.
    while len(held) < 5000:
        for f in held:
            if not f.done():
                f.set_result(None)
        assert loop.run_until(lambda: any(not f.done() for f in held) or len(held) == 5000,
                              timeout=10)  # fmt: skip
    for f in held:
        if not f.done():
            f.set_result(None)
    settle(loop, a)
    assert th.statistics().messages == 0
    a.close()
    b.close()


def test_mark_down_discards_and_the_peer_sees_a_reset(loop):
    a = Messenger(loop, "tcp:127.0.0.1:0", policy=Policy.lossless_peer_reuse())
    b = Messenger(loop, "tcp:127.0.0.1:0", policy=Policy.lossless_peer_reuse())
    got: list[bytes] = []
    b.on_message = lambda s, c, p: got.append(p)
    resets: list[int] = []
    a.on_remote_reset = lambda s, n: resets.append(n)
    a.send_message(b.address, 1, b"one")
    assert loop.run_until(lambda: got, timeout=10)
    assert b.mark_down(a.address) == 0
    assert b.session(a.address) is None
    a.send_message(b.address, 1, b"two")  # queued for b's old incarnation
    assert loop.run_until(lambda: resets, timeout=10)
    # resetcheck: the reset is reported with what it discarded (Ceph's
    # was_session_reset); the application resends what it must.
    assert resets == [1] and got == [b"one"]
    a.send_message(b.address, 1, b"three")
    assert loop.run_until(lambda: len(got) == 2, timeout=10)
    assert got == [b"one", b"three"]
    a.close()
    b.close()


# -- keepalive, idle and backoff on virtual time ------------------------------------


def test_idle_connection_closes_and_resumes_on_the_next_send(vloop):
    a, b, got = pair(vloop, a_kwargs={"idle_timeout": 10.0, "keepalive_interval": 1.0},
                     b_kwargs={"idle_timeout": 30.0})  # fmt: skip
    a.send_message(b.address, 1, b"first")
    assert vloop.run_until(lambda: got, timeout=5)
    s = a.session(b.address)
    t0 = vloop.time()
    assert vloop.run_until(lambda: not s.is_connected, timeout=60)
    assert 10.0 <= vloop.time() - t0 <= 11.0 + 1e-6
    assert s.state == "standby" and a.statistics().idle_closes == 1
    assert vloop.run_until(lambda: not b.session(a.address).is_connected, timeout=5)
    a.send_message(b.address, 1, b"second")
    assert vloop.run_until(lambda: len(got) == 2, timeout=5)
    st = s.statistics()
    assert st.opens == 2 and st.remote_resets == 0 and st.faults == 0
    a.close()
    b.close()


def test_reconnect_backoff_doubles_to_its_cap(vloop):
    accepts: list[float] = []

    def on_conn(conn):
        accepts.append(vloop.time())
        conn.abort()  # never finishes a handshake

    srv = evloop.listen_tcp(vloop, "127.0.0.1", 0, on_conn)
    m = Messenger(vloop, None, policy=Policy.lossless_client(),
                  initial_backoff=0.2, max_backoff=2.0)  # fmt: skip
    m.send_message(f"tcp:127.0.0.1:{srv.port}", 1, b"x")
    assert vloop.run_until(lambda: len(accepts) >= 8, timeout=60)
    gaps = [round(b - a, 6) for a, b in zip(accepts, accepts[1:], strict=False)]
    assert gaps[:7] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0], gaps
    s = m.session(f"tcp:127.0.0.1:{srv.port}")
    assert s.statistics().queued == 1 and s.statistics().opens == 0
    m.close()
    srv.close()


def test_keepalive_measures_rtt_and_timeouts_are_settings(vloop):
    a, b, got = pair(vloop, a_kwargs={"keepalive_interval": 2.0},
                     b_kwargs={"keepalive_interval": None})  # fmt: skip
    a.send_message(b.address, 1, b"x")
    assert vloop.run_until(lambda: got, timeout=5)
    s = a.session(b.address)
    t0 = vloop.time()
    assert vloop.run_until(lambda: s.last_keepalive_ack is not None, timeout=10)
    assert vloop.time() - t0 == pytest.approx(2.0, abs=1e-6)
    assert s.rtt == 0.0  # virtual time does not move while the peer answers
    a.close()
    b.close()


# -- bad input on the session channel ------------------------------------------------


class Raw:
    """A hand-written session peer on a plain socket (a second
    implementation of docs/session.md, as small as it gets)."""

    def __init__(self, loop: evloop.Loop, address: str):
        host, port = address[4:].rsplit(":", 1)
        self.loop = loop
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setblocking(False)
        self.buf = b""
        self.nonce = os.urandom(32)
        self.closed = False

    def send_frame(self, chan: int, payload: bytes) -> None:
        self.sock.sendall(HDR.pack(chan, len(payload)) + payload)

    def pump(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    self.closed = True
                    return
                self.buf += data
        except BlockingIOError:
            pass
        except ConnectionResetError:
            self.closed = True

    def frames(self) -> list[tuple[int, bytes]]:
        out = []
        while len(self.buf) >= 6:
            chan, n = HDR.unpack_from(self.buf)
            if len(self.buf) < 6 + n:
                break
            out.append((chan, self.buf[6 : 6 + n]))
            self.buf = self.buf[6 + n :]
        return out

    def wait_frame(self, timeout: float = 10) -> tuple[int, bytes]:
        got: list[tuple[int, bytes]] = []

        def ready() -> bool:
            self.pump()
            got.extend(self.frames())
            return bool(got) or self.closed

        assert self.loop.run_until(ready, timeout=timeout)
        assert got, "connection closed without a frame"
        return got[0]

    def wait_closed(self, timeout: float = 10) -> list[tuple[int, bytes]]:
        got: list[tuple[int, bytes]] = []

        def done() -> bool:
            self.pump()
            got.extend(self.frames())
            return self.closed

        assert self.loop.run_until(done, timeout=timeout)
        return got

    def handshake(
        self, address: str, cookie: int = 7, known: int = 0, in_seq: int = 0
    ) -> wire.Accept:
        chan, hello = self.wait_frame()
        assert chan == SESSION_CHANNEL and hello[0] == wire.HELLO and hello[1:5] == b"evls"
        self.send_frame(SESSION_CHANNEL, struct.pack(">B4sBB32s", 1, b"evls", 1, 0, self.nonce))
        body = struct.pack(">BQQQB", 2, cookie, known, in_seq, 0) + bytes([4]) + b"peer"
        body += struct.pack(">H", len(address)) + address.encode()
        self.send_frame(SESSION_CHANNEL, body + b"\0")
        chan, acc = self.wait_frame()
        assert chan == SESSION_CHANNEL, acc
        if acc[0] == wire.REFUSE:
            raise SessionProtocolError("peer refused us: " + wire.decode_refuse(acc, "")[1])
        return wire.decode_accept(acc, "")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def guarded(loop):
    """Messenger b with a healthy session to a, and a list of b's errors."""
    a, b, got = pair(loop, a_kwargs={"policy": Policy.lossless_client()},
                     b_kwargs={"policy": Policy.stateful_server(), "handshake_timeout": 0.5})  # fmt: skip
    errors: list[BaseException] = []
    b.on_error = errors.append
    a.send_message(b.address, 1, b"before")
    assert loop.run_until(lambda: got, timeout=10)
    yield a, b, got, errors
    # Only the bad connection was closed: the good session still flows.
    a.send_message(b.address, 1, b"after")
    assert loop.run_until(lambda: got[-1] == (1, b"after"), timeout=10)
    assert a.session(b.address).statistics().faults == 0
    a.close()
    b.close()


@pytest.mark.parametrize(
    "junk, kind, match",
    [
        (os.urandom(3) + b"\xff\xff\xff\xff" + os.urandom(100), ProtocolError, "bad frame length"),
        (HDR.pack(1, 5) + b"hello", SessionProtocolError, "before the session handshake"),
        (
            HDR.pack(SESSION_CHANNEL, 5) + b"\x01evlX",
            SessionProtocolError,
            "not an evloop session peer",
        ),
        (
            HDR.pack(SESSION_CHANNEL, 9) + b"\x01evls\x01\x00ab",
            SessionProtocolError,
            "truncated or padded",
        ),
        (
            HDR.pack(SESSION_CHANNEL, 3) + b"\x77ab",
            SessionProtocolError,
            "unknown session control kind",
        ),
        (HDR.pack(SESSION_CHANNEL, 4000) + b"\x01" * 4000, SessionProtocolError, "the limit is"),
        (
            HDR.pack(SESSION_CHANNEL, 39) + struct.pack(">B4sBB32s", 1, b"evls", 9, 0, b"n" * 32),
            SessionProtocolError,
            "version 9",
        ),
    ],
    ids=[
        "garbage",
        "data-first",
        "bad-magic",
        "short-hello",
        "unknown-kind",
        "oversized",
        "version",
    ],
)
def test_garbage_on_the_session_channel_closes_only_that_connection(
    loop, guarded, junk, kind, match
):
    a, b, got, errors = guarded
    raw = Raw(loop, b.address)
    raw.sock.sendall(junk)
    frames = raw.wait_closed()
    assert loop.run_until(lambda: errors, timeout=10)
    assert isinstance(errors[0], kind) and match in str(errors[0]), errors[0]
    # The refusal says why, when the stream still allowed a reply.
    refusals = [p for c, p in frames if c == SESSION_CHANNEL and p[:1] == b"\x05"]
    if kind is SessionProtocolError:
        assert refusals and match.encode() in refusals[0]
    raw.close()


def test_truncated_handshake_is_reported(loop, guarded):
    a, b, got, errors = guarded
    raw = Raw(loop, b.address)
    raw.sock.sendall(HDR.pack(SESSION_CHANNEL, 39) + b"\x01evls")  # cut inside HELLO
    raw.sock.shutdown(socket.SHUT_WR)
    raw.wait_closed()
    assert loop.run_until(lambda: errors, timeout=10)
    assert isinstance(errors[0], TruncatedFrameError)
    raw.close()


def test_silent_peer_times_out_in_the_handshake(loop, guarded):
    a, b, got, errors = guarded
    raw = Raw(loop, b.address)
    raw.send_frame(SESSION_CHANNEL, struct.pack(">B4sBB32s", 1, b"evls", 1, 0, raw.nonce))
    frames = raw.wait_closed()  # b's handshake_timeout is 0.5 s
    assert loop.run_until(lambda: errors, timeout=10)
    assert isinstance(errors[0], ConnectError) and "not finished within 0.5 s" in str(errors[0])
    assert any(p[:1] == b"\x05" for c, p in frames if c == SESSION_CHANNEL)
    raw.close()


def test_absurd_sequence_numbers_are_refused(loop, guarded):
    a, b, got, errors = guarded
    raw = Raw(loop, b.address)
    acc = raw.handshake("tcp:127.0.0.1:1")
    assert not acc.resumed and acc.in_seq == 0
    raw.send_frame(SESSION_CHANNEL, struct.pack(">BQ", wire.ACK, 10**6))  # nothing was sent
    frames = raw.wait_closed()
    assert loop.run_until(lambda: errors, timeout=10)
    assert isinstance(errors[0], SessionProtocolError)
    assert "ACK 1000000 for messages never sent" in str(errors[0])
    assert any(b"never sent" in p for c, p in frames if c == SESSION_CHANNEL)
    raw.close()
    # A resume claiming more than b ever sent.
    errors.clear()
    raw = Raw(loop, b.address)
    with pytest.raises(SessionProtocolError, match="peer refused us: peer resumes after"):
        raw.handshake("tcp:127.0.0.1:1", cookie=7, known=acc.cookie, in_seq=10**9)
    raw.wait_closed()
    assert loop.run_until(lambda: errors, timeout=10)
    assert "resumes after message 1000000000" in str(errors[0])
    raw.close()


def test_a_refusal_on_an_open_session_is_a_fault_with_the_peers_reason(loop):
    a, b, got = pair(loop, a_kwargs={"policy": Policy.lossless_client()},
                     b_kwargs={"policy": Policy.stateful_server()})  # fmt: skip
    faults: list[BaseException] = []
    a.on_fault = lambda s, exc: faults.append(exc)
    a.send_message(b.address, 1, b"x")
    assert loop.run_until(lambda: got, timeout=10)
    s = a.session(b.address)
    s._link.send_control(b"\x77nonsense")  # an unknown kind, on an open session
    assert loop.run_until(lambda: faults, timeout=10)
    # b reported the bad frame; a faulted with b's reason (b's finding, not
    # reported again on a's side).
    assert isinstance(faults[0], SessionProtocolError)
    assert "peer refused us: unknown session control kind 0x77" in str(faults[0])
    assert loop.run_until(lambda: loop.errors, timeout=10)
    exc = loop.errors.claim(SessionProtocolError)
    assert "unknown session control kind 0x77" in str(exc) and not loop.errors
    a.send_message(b.address, 1, b"y")
    assert loop.run_until(lambda: len(got) == 2, timeout=10)
    a.close()
    b.close()


def test_a_fault_in_the_middle_of_a_batch_loses_and_repeats_nothing(loop):
    # b receives, in one read: 3 messages, a bad control frame, 3 more. It
    # delivers the first 3, refuses the connection, discards the rest; the
    # resume point it announces must be exactly 3.
    a, b, got = pair(loop, a_kwargs={"policy": Policy.lossless_client(), "initial_backoff": 0.01},
                     b_kwargs={"policy": Policy.stateful_server()})  # fmt: skip
    b.on_error = lambda exc: None
    s = a.connect(b.address)
    assert loop.run_until(lambda: s.is_connected, timeout=10)
    for i in range(3):
        s.send(1, SEQ.pack(i))
    s._pull()  # into the Conn now, ahead of what follows
    s._link.send_control(b"\x77")
    for i in range(3, 6):
        s.send(1, SEQ.pack(i))
    s._pull()
    assert loop.run_until(lambda: len(got) == 6, timeout=10), got
    assert [SEQ.unpack(p)[0] for _, p in got] == list(range(6))
    bs = b.session(a.address)
    assert bs.statistics().in_seq == 6 and bs.statistics().opens == 2
    a.close()
    b.close()


def _accept_raw(loop, lsock) -> Raw:
    conns: list[socket.socket] = []

    def accepted() -> bool:
        try:
            conns.append(lsock.accept()[0])
        except BlockingIOError:
            pass
        return bool(conns)

    assert loop.run_until(accepted, timeout=10)
    raw = Raw.__new__(Raw)
    raw.loop, raw.sock, raw.buf, raw.nonce, raw.closed = loop, conns[0], b"", os.urandom(32), False
    raw.sock.setblocking(False)
    return raw


def test_a_bogus_resume_from_the_acceptor_is_refused_and_redialed(loop):
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.setblocking(False)
    m = Messenger(loop, None, policy=Policy.lossless_client(), initial_backoff=0.05)
    errors: list[BaseException] = []
    m.on_error = errors.append
    s = m.connect(f"tcp:127.0.0.1:{lsock.getsockname()[1]}")
    s.send(1, b"kept")
    raw = _accept_raw(loop, lsock)
    raw.wait_frame()  # HELLO
    raw.send_frame(SESSION_CHANNEL, b"\x01evls\x01\x00" + raw.nonce)
    raw.wait_frame()  # CONNECT
    raw.send_frame(SESSION_CHANNEL, struct.pack(">BQQB", wire.ACCEPT, 5, 0, 1) + b"\0")
    frames = raw.wait_closed()
    assert any(b"ACCEPT resumes a session we never had" in p for _, p in frames)
    assert isinstance(errors[0], SessionProtocolError)
    raw.close()
    # The message is still queued, and the session dials again after its backoff.
    raw2 = _accept_raw(loop, lsock)
    assert raw2.wait_frame()[1][:1] == b"\x01"
    assert s.statistics().queued == 1 and s.state == "connecting"
    m.close()
    raw2.close()
    lsock.close()


def test_a_hand_written_peer_sees_byte_exact_data_frames(loop):
    # docs/session.md as a second implementation: accept a messenger's
    # connection on a plain socket, handshake with HMAC, check data frames
    # are the seed's chan|len|payload exactly, acknowledge them.
    key = b"shared"
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.setblocking(False)
    m = Messenger(loop, None, key=key, policy=Policy.lossless_client())
    s = m.connect(f"tcp:127.0.0.1:{lsock.getsockname()[1]}")
    payloads = [b"a", b"\x00\xff" * 40, os.urandom(1024)]
    for i, p in enumerate(payloads):
        s.send(i + 1, p)
    conns: list[socket.socket] = []

    def accepted() -> bool:
        try:
            conns.append(lsock.accept()[0])
        except BlockingIOError:
            pass
        return bool(conns)

    assert loop.run_until(accepted, timeout=10)
    raw = Raw.__new__(Raw)
    raw.loop, raw.sock, raw.buf, raw.nonce, raw.closed = loop, conns[0], b"", os.urandom(32), False
    raw.sock.setblocking(False)
    chan, hello = raw.wait_frame()
    their_nonce = hello[7:39]
    assert hello[:7] == b"\x01evls\x01\x01" and len(hello) == 39
    raw.send_frame(SESSION_CHANNEL, b"\x01evls\x01\x01" + raw.nonce)
    chan, connect = raw.wait_frame()
    c = wire.decode_connect(connect, "")
    want = hmac.new(key, b"C" + raw.nonce + their_nonce + c.body, hashlib.sha256).digest()
    assert hmac.compare_digest(want, c.proof)
    assert (c.in_seq, c.known, c.address) == (0, 0, m.address)
    body = struct.pack(">BQQB", wire.ACCEPT, 99, 0, 0)
    proof = hmac.new(key, b"A" + their_nonce + raw.nonce + body, hashlib.sha256).digest()
    raw.send_frame(SESSION_CHANNEL, body + bytes([32]) + proof)
    expect = b"".join(HDR.pack(i + 1, len(p)) + p for i, p in enumerate(payloads))

    def have_all() -> bool:
        raw.pump()
        return len(raw.buf) >= len(expect)

    assert loop.run_until(have_all, timeout=10)
    assert raw.buf[: len(expect)] == expect  # no session bytes in data frames
    raw.send_frame(SESSION_CHANNEL, struct.pack(">BQ", wire.ACK, 3))
    assert loop.run_until(lambda: s.statistics().acked == 3, timeout=10)
    assert s.statistics().pending_bytes == 0
    m.close()
    raw.close()
    lsock.close()
