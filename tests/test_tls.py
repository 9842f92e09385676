# evloop.tls: TLSConn on real sockets in one process (echo with back-pressure
# in both directions, handshake failures and timeouts on one connection
# only, hostname checks, close_notify). curl and openssl s_client against
# the HTTPS daemon are in test_http.py.
from __future__ import annotations

import socket
import ssl
import subprocess

import pytest

from tests.daemon_helpers import need  # isort: skip

import evloop
from evloop.tls import TLSConn, client_context, server_context, tls_client, tls_server


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    out = subprocess.run(
        [need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(crt), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return str(crt), str(key)


def echo_server(loop, cert, **kw):
    closed: list = []

    def on_conn(conn):
        def echo(c):
            c.write(bytes(c.read()))
            c.consume(c.read_buffered)

        conn.on_data = echo
        conn.on_close = closed.append

    server = evloop.listen_tcp(
        loop, "127.0.0.1", 0, on_conn, conn_factory=tls_server(server_context(*cert), **kw)
    )
    return server, closed


def connect(loop, port, ctx, hostname="localhost", **kw):
    result: list = []
    evloop.connect_tcp(
        loop, "127.0.0.1", port, lambda c, e: result.append((c, e)),
        conn_factory=tls_client(ctx, hostname), **kw,
    )  # fmt: skip
    assert loop.run_until(lambda: result, timeout=5)
    conn, err = result[0]
    assert err is None
    return conn


def test_echo_large_both_ways(loop, cert):
    server, closed = echo_server(loop, cert)
    client = connect(loop, server.port, client_context(cert[0]), high_water=256 * 1024)
    assert isinstance(client, TLSConn)
    data = bytes(range(256)) * (5 * 4096)  # 5 MiB, written before the handshake is done
    got = bytearray()
    client.on_data = lambda c: (got.extend(c.read()), c.consume(c.read_buffered))
    client.write(data)
    assert loop.run_until(lambda: len(got) == len(data), timeout=30)
    assert got == data and client.handshake_done
    assert client.ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    client.close()
    assert loop.run_until(lambda: closed, timeout=5)
    assert closed == [None]  # close_notify, then EOF: an orderly close
    server.close()


def test_plain_client_fails_only_its_connection(loop, cert):
    server, closed = echo_server(loop, cert)
    plain = socket.create_connection(("127.0.0.1", server.port))
    plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert loop.run_until(lambda: closed, timeout=5)
    assert isinstance(closed[0], evloop.TLSError)
    assert isinstance(closed[0].__cause__, ssl.SSLError)
    plain.close()
    client = connect(loop, server.port, client_context(cert[0]))
    got = bytearray()
    client.on_data = lambda c: (got.extend(c.read()), c.consume(c.read_buffered))
    client.write(b"still fine")
    assert loop.run_until(lambda: got == b"still fine", timeout=5)
    client.close()
    assert loop.run_until(lambda: len(closed) == 2, timeout=5)
    server.close()


def test_handshake_timeout(loop, cert):
    server, closed = echo_server(loop, cert, handshake_timeout=0.2)
    silent = socket.create_connection(("127.0.0.1", server.port))
    assert loop.run_until(lambda: closed, timeout=5)
    assert isinstance(closed[0], evloop.TLSError) and closed[0].reason == "TIMEOUT"
    silent.close()
    server.close()


def test_client_rejects_wrong_hostname(loop, cert):
    server, closed = echo_server(loop, cert)
    client = connect(loop, server.port, client_context(cert[0]), hostname="not-this-host")
    errors: list = []
    client.on_close = errors.append
    assert loop.run_until(lambda: errors, timeout=5)
    assert isinstance(errors[0], evloop.TLSError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(errors[0])
    assert loop.run_until(lambda: closed, timeout=5)
    server.close()


def test_pipe_over_tls(loop, cert):
    # Frames over TLS: the Pipe's fast path must not append plaintext to the
    # ciphertext queue.
    frames: list = []

    def on_conn(conn):
        p = evloop.Pipe(conn)
        p.on_frame = p.write_frame

    server = evloop.listen_tcp(
        loop, "127.0.0.1", 0, on_conn, conn_factory=tls_server(server_context(*cert))
    )
    client = connect(loop, server.port, client_context(cert[0]))
    pipe = evloop.Pipe(client, lambda chan, payload: frames.append((chan, bytes(payload))))
    big = b"x" * 300_000
    for i in range(100):
        pipe.write_frame(i, b"frame %d" % i)
    pipe.write_frame(7, big)
    assert loop.run_until(lambda: len(frames) == 101, timeout=10)
    assert frames[:100] == [(i, b"frame %d" % i) for i in range(100)] and frames[100] == (7, big)
    client.close()
    server.close()
