from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import textwrap

import pytest

import evloop
from tests.conftest import drain


def _echo(conn: evloop.Conn) -> None:
    def on_data(c: evloop.Conn) -> None:
        view = c.read()
        c.write(bytes(view))
        n = len(view)
        view.release()
        c.consume(n)

    conn.on_data = on_data


def test_tcp_echo_with_connect(loop):
    server = evloop.listen_tcp(loop, "127.0.0.1", 0, _echo)
    results = []
    evloop.connect_tcp(loop, "127.0.0.1", server.port, lambda c, e: results.append((c, e)))
    assert loop.run_until(lambda: results, timeout=5)
    conn, err = results[0]
    assert err is None
    got = bytearray()
    conn.on_data = lambda c: drain(c, got)
    conn.write(b"hello tcp")
    assert loop.run_until(lambda: got == b"hello tcp", timeout=5)
    conn.close()
    server.close()


def test_unix_listener(loop, tmp_path):
    path = str(tmp_path / "s.sock")
    server = evloop.listen_unix(loop, path, _echo)
    results = []
    evloop.connect_unix(loop, path, lambda c, e: results.append((c, e)))
    assert loop.run_until(lambda: results, timeout=5)
    conn, err = results[0]
    got = bytearray()
    conn.on_data = lambda c: drain(c, got)
    conn.write(b"hello unix")
    assert loop.run_until(lambda: got == b"hello unix", timeout=5)
    server.close()
    assert not os.path.exists(path)


def test_connect_refused_is_a_clear_error(loop):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    results = []
    evloop.connect_tcp(loop, "127.0.0.1", port, lambda c, e: results.append((c, e)))
    assert loop.run_until(lambda: results, timeout=5)
    conn, err = results[0]
    assert conn is None and isinstance(err, evloop.ConnectError)
    assert isinstance(err.__cause__, ConnectionRefusedError)


def test_connect_timeout(loop):
    # A listener that never accepts, its backlog filled: further SYNs are
    # dropped, so the connect can only time out.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(lsock.getsockname())
            fillers.append(s)
        results = []
        evloop.connect_tcp(
            loop, "127.0.0.1", lsock.getsockname()[1], lambda c, e: results.append((c, e)),
            timeout=0.3,
        )  # fmt: skip
        assert loop.run_until(lambda: results, timeout=10)
        conn, err = results[0]
        if conn is not None:  # the kernel let it through after all: not a timeout case
            conn.abort()
            pytest.fail("connect unexpectedly succeeded; backlog was not full")
        assert isinstance(err, evloop.ConnectError) and "timed out" in str(err)
    finally:
        for s in fillers:
            s.close()
        lsock.close()


def test_500_concurrent_connections_every_byte_accounted(loop):
    n_conns = 500
    per_conn = 20_000
    server = evloop.listen_tcp(loop, "127.0.0.1", 0, _echo, backlog=1024)
    received: dict[int, bytearray] = {}
    expected: dict[int, bytes] = {}
    closed = []
    connected = []

    def on_connect(i, conn, err):
        assert err is None, err
        connected.append(i)
        data = os.urandom(per_conn)
        expected[i] = data
        received[i] = bytearray()

        def on_data(c):
            drain(c, received[i])
            if len(received[i]) == per_conn:
                c.close()

        conn.on_data = on_data
        conn.on_close = closed.append
        for off in range(0, per_conn, 1000):
            conn.write(data[off : off + 1000])

    for i in range(n_conns):
        evloop.connect_tcp(loop, "127.0.0.1", server.port, lambda c, e, i=i: on_connect(i, c, e))
    assert loop.run_until(lambda: len(closed) == n_conns, timeout=30)
    assert sorted(connected) == list(range(n_conns))
    assert all(received[i] == expected[i] for i in range(n_conns))
    assert closed == [None] * n_conns
    assert server.accepted == n_conns
    server.close()


def test_conn_pair(loop):
    a, b = evloop.conn_pair(loop)
    got = bytearray()
    b.on_data = lambda c: drain(c, got)
    a.write(b"pair")
    assert loop.run_until(lambda: got == b"pair", timeout=5)


_EMFILE_SCRIPT = textwrap.dedent(
    """
    import os, resource, socket, sys
    import evloop

    loop = evloop.Loop()
    served = []
    server = evloop.listen_tcp(loop, "127.0.0.1", 0, served.append)
    clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    nfds = len(os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nfds + 3, hard))
    ok = loop.run_until(lambda: server.resource_errors > 0, timeout=10)
    assert ok, "accept never hit EMFILE"
    assert not server.accepting
    # While out of fds the listener must not spin the loop.
    before = loop.statistics().iterations
    loop.run_until(lambda: False, timeout=0.3)
    spins = loop.statistics().iterations - before
    assert spins < 30, f"loop spun {spins} times while out of fds"
    for c in served:
        c.abort()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    ok = loop.run_until(lambda: server.accepted == 20, timeout=10)
    assert ok, f"only {server.accepted} accepted after the limit was lifted"
    print("EMFILE-OK", server.resource_errors, spins)
    loop.close()
    """
)


def test_emfile_backs_off_and_recovers():
    # In a child process: lowering RLIMIT_NOFILE here would disturb pytest.
    out = subprocess.run(
        [sys.executable, "-c", _EMFILE_SCRIPT], capture_output=True, text=True, timeout=50
    )
    assert out.returncode == 0, out.stderr
    assert "EMFILE-OK" in out.stdout


def test_rlimit_module_available():
    # Guard for the test above: it needs RLIMIT_NOFILE to be settable.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft > 64 and hard >= soft


def test_connect_unix_to_a_full_backlog_is_an_error_not_a_dead_conn(loop, tmp_path):
    path = str(tmp_path / "full.sock")
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen(0)  # never accepts
    try:
        results = []
        for _ in range(3):
            evloop.connect_unix(loop, path, lambda c, e: results.append((c, e)), timeout=0.5)
        assert loop.run_until(lambda: len(results) == 3, timeout=5)
        for conn, err in results:
            if conn is not None:
                assert conn.socket.getpeername() == path  # really connected
                conn.abort()
            else:
                assert isinstance(err, evloop.ConnectError)
        assert any(conn is None for conn, _ in results)
    finally:
        lsock.close()
