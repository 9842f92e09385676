# run_daemon() and Server.shutdown(): a daemon's whole shutdown in one call.
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

import evloop
from evloop.testing import VirtualClock


def test_server_shutdown_stops_accepting_and_drains_conns(loop):
    got: list[bytes] = []
    conns: list[evloop.Conn] = []
    server = evloop.listen_tcp(loop, "127.0.0.1", 0, conns.append)
    port = server.port
    client = socket.create_connection(("127.0.0.1", port))
    assert loop.run_until(lambda: conns, timeout=5)
    conns[0].write(b"goodbye" * 1000)  # queued, not yet sent
    done: list[evloop.Server] = []
    server.shutdown(5, done.append)
    assert server.closed and not server.accepting
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert loop.run_until(lambda: done, timeout=5)
    client.settimeout(5)
    while chunk := client.recv(65536):
        got.append(chunk)
    assert b"".join(got) == b"goodbye" * 1000  # drained before the close
    assert conns[0].closed and server.statistics().live == 0
    client.close()


def test_server_shutdown_aborts_what_is_left_at_the_deadline():
    clock = VirtualClock(autojump_threshold=0.01)
    with evloop.Loop(clock=clock) as lp:
        conns: list[evloop.Conn] = []
        server = evloop.listen_tcp(lp, "127.0.0.1", 0, conns.append)
        client = socket.create_connection(("127.0.0.1", server.port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert lp.run_until(lambda: conns, timeout=5)
        conns[0].write(b"x" * (8 << 20))  # the client never reads: stuck
        closes: list[BaseException | None] = []
        conns[0].on_close = closes.append
        done: list[evloop.Server] = []
        t0 = lp.time()
        server.shutdown(30, done.append)
        assert lp.run_until(lambda: done, timeout=60)
        assert lp.time() - t0 >= 30 and conns[0].closed
        assert repr(server).startswith("<Server 127.0.0.1:")
        client.close()


_DAEMON = textwrap.dedent(
    """
    import sys, evloop

    loop = evloop.Loop()
    def on_client(conn):
        pipe = evloop.Pipe(conn)
        pipe.on_frame = pipe.write_frame
    server = evloop.listen_tcp(loop, "127.0.0.1", 0, on_client)
    print(server.port, flush=True)
    status = evloop.run_daemon(
        loop, server, deadline=float(sys.argv[1]),
        on_signal=lambda signum: print("shutting down", flush=True),
    )
    loop.close()
    print("exit", status, flush=True)
    sys.exit(status)
    """
)


def _start_daemon(deadline: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _DAEMON, str(deadline)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def test_a_daemon_exits_0_on_sigterm_after_serving():
    proc, port = _start_daemon(5)
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(b"\x00\x01\x00\x00\x00\x02hi")
        assert c.recv(8) == b"\x00\x01\x00\x00\x00\x02hi"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert c.recv(8) == b""  # the server side closed its Conn
        assert proc.stdout is not None
        assert proc.stdout.read().split() == ["shutting", "down", "exit", "0"]
        c.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


def test_a_second_signal_aborts_and_exits_1():
    proc, port = _start_daemon(60)
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Make the server's Conn stuck: a big echo the client never reads.
        frame = b"\x00\x01" + (1 << 20).to_bytes(4, "big") + b"z" * (1 << 20)
        c.sendall(frame * 32)
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "shutting down\n"
        proc.send_signal(signal.SIGINT)  # while the stuck Conn is being drained
        assert proc.wait(10) == 1
    finally:
        c.close()
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


def test_run_daemon_refuses_a_bad_deadline(loop):
    with pytest.raises(ValueError):
        evloop.run_daemon(loop, deadline=0)
    assert os.getpid() > 0
