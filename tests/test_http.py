# evloop.http: the parse stage cut at every byte, malformed requests and
# limits, ordering under pipelining, faults (a client that dies mid-request
# or mid-response), slowloris; examples/http_server.py under curl, with 1000
# keep-alive connections, and over TLS (curl, openssl s_client).
from __future__ import annotations

import hashlib
import socket
import subprocess
import time

import pytest

from tests.daemon_helpers import connect, daemon, need, raise_nofile, recv_until  # isort: skip

import evloop
from evloop.http import (
    HttpConnection,
    HttpRequestParser,
    Request,
    RequestBody,
    RequestEnd,
    RequestHead,
    Response,
)

REQS = (
    b"GET /a HTTP/1.1\r\nHost: x\r\nX-Thing:  v a l \r\n\r\n"
    b"\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n1\r\n\x00\r\n0\r\nTrailer: t\r\n\r\n"
    b"GET /d HTTP/1.0\r\n\r\n"
)


def parse_pieces(loop: evloop.Loop, pieces: list[bytes]) -> list[tuple]:
    a, b = evloop.conn_pair(loop)
    events: list[tuple] = []
    errors: list[Exception] = []

    def sink(m):
        if type(m) is RequestHead:
            events.append(("head", m.seq, m.method, m.target, m.version, m.headers, m.keep_alive))
        elif type(m) is RequestBody:
            if events[-1][0] == "body" and events[-1][1] == m.seq:
                events[-1] = ("body", m.seq, events[-1][2] + m.data)
            else:
                events.append(("body", m.seq, m.data))
        elif type(m) is RequestEnd:
            events.append(("end", m.seq, m.trailers))

    parser = HttpRequestParser(sink)

    def on_data(c):
        try:
            parser.feed(c)
        except evloop.HttpError as exc:
            errors.append(exc)
            c.consume(c.read_buffered)

    b.on_data = on_data
    total = 0
    for p in pieces:
        a.write(p)
        total += len(p)
        assert loop.run_until(lambda t=total: b.bytes_in >= t or errors, timeout=5)
    a.close()
    loop.run_until(lambda: b.closed, timeout=5)
    if errors:
        raise errors[0]
    return events


EXPECTED = [
    ("head", 0, b"GET", b"/a", b"HTTP/1.1", [(b"host", b"x"), (b"x-thing", b"v a l")], True),
    ("head", 1, b"POST", b"/b", b"HTTP/1.1", [(b"host", b"x"), (b"content-length", b"5")], True),
    ("body", 1, b"hello"),
    ("end", 1, []),
    ("head", 2, b"PUT", b"/c", b"HTTP/1.1", [(b"host", b"x"), (b"transfer-encoding", b"chunked")], True),
    ("body", 2, b"abc\x00"),
    ("end", 2, [(b"trailer", b"t")]),
    ("head", 3, b"GET", b"/d", b"HTTP/1.0", [], False),
]  # fmt: skip


def test_parse_at_once_and_byte_by_byte(loop):
    assert parse_pieces(loop, [REQS]) == EXPECTED
    assert parse_pieces(loop, [REQS[i : i + 1] for i in range(len(REQS))]) == EXPECTED


def test_parse_split_at_every_byte(loop):
    for k in range(1, len(REQS)):
        assert parse_pieces(loop, [REQS[:k], REQS[k:]]) == EXPECTED, k


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x00c\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"a" * 20000, 431),
    ],
)  # fmt: skip
def test_malformed(loop, data, status):
    with pytest.raises(evloop.HttpError) as info:
        parse_pieces(loop, [data])
    assert info.value.status == status


# -- the three stages on a Conn, in process -------------------------------


def handler_for(loop, log):
    def handle(req: Request, resp: Response) -> None:
        log.append(req.target)
        if req.target.startswith(b"/slow"):
            loop.call_later(0.05, resp.send, 200, b"slow")
        elif req.target == b"/stream":
            resp.start(200)
            resp.write(b"one")
            loop.call_soon(lambda: (resp.write(b"two"), resp.end()))
        elif req.target == b"/boom":
            raise RuntimeError("handler bug")
        elif req.target == b"/forever":
            req.on_abort = lambda exc: log.append(("aborted", type(exc).__name__))
            resp.start(200)

            def more() -> None:  # a producer that stops only when told
                if resp.write(b"partial"):
                    loop.call_later(0.01, more)

            more()
        elif req.method == b"POST":
            req.on_abort = lambda exc: log.append(("aborted", type(exc).__name__))
            req.read_body(lambda body: resp.send(200, b"got %d" % len(body)))
        else:
            resp.send(200, req.target)

    return handle


def client_server(loop, log, **kw):
    client, server = evloop.conn_pair(loop)
    HttpConnection(server, handler_for(loop, log), **kw)
    got = bytearray()
    client.on_data = lambda c: (got.extend(c.read()), c.consume(c.read_buffered))
    return client, server, got


def test_pipelined_responses_keep_request_order(loop):
    log: list = []
    client, server, got = client_server(loop, log)
    client.write(
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n"
    )
    assert loop.run_until(lambda: client.closed, timeout=5)
    text = bytes(got)
    assert text.index(b"slow") < text.index(b"3\r\none\r\n") < text.index(b"\r\n\r\n/fast")
    assert b"transfer-encoding: chunked" in text and text.count(b"HTTP/1.1 200") == 3
    assert log == [b"/slow", b"/stream", b"/fast"]  # nothing after Connection: close


def test_handler_exception_is_a_500_and_the_connection_goes_on(loop):
    log: list = []
    client, server, got = client_server(loop, log)
    client.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert loop.run_until(lambda: b"/ok" in got, timeout=5)
    assert got.startswith(b"HTTP/1.1 500 ")
    assert isinstance(loop.errors.claim(RuntimeError), RuntimeError)
    client.close()


def test_client_dies_mid_request_body(loop):
    log: list = []
    client, server, got = client_server(loop, log)
    client.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
    assert loop.run_until(lambda: log, timeout=5)
    client.abort()
    assert loop.run_until(lambda: server.closed and len(log) == 2, timeout=5)
    assert log[1] == ("aborted", "StreamAborted")


def test_client_dies_mid_response(loop):
    log: list = []
    client, server, got = client_server(loop, log)
    client.write(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
    assert loop.run_until(lambda: b"partial" in got, timeout=5)
    client.abort()
    assert loop.run_until(lambda: server.closed and len(log) == 2, timeout=5)
    assert log[1] == ("aborted", "StreamAborted")


def test_bad_request_is_answered_then_closed_others_untouched(loop):
    log: list = []
    c1, s1, got1 = client_server(loop, log)
    c2, s2, got2 = client_server(loop, log)
    c1.write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nNONSENSE\r\n\r\n")
    c2.write(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
    assert loop.run_until(lambda: c1.closed and b"/two" in got2, timeout=5)
    assert got1.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400 Bad Request" in got1
    assert not c2.closed
    c2.close()


def test_slowloris_hits_the_header_timeout_without_burning_cpu(loop):
    log: list = []
    client, server, got = client_server(loop, log, header_timeout=0.5, max_header=16 * 1024)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 12000
    t = time.process_time()
    for i in range(0, len(head), 3):  # three bytes per write, each its own read
        client.write(head[i : i + 3])
        loop.run_until(lambda i=i: server.bytes_in >= i + 3 or server.closed, timeout=5)
        if server.closed:
            break
    cpu = time.process_time() - t
    assert loop.run_until(lambda: client.closed, timeout=5)
    assert got.startswith(b"HTTP/1.1 408 Request Timeout")
    assert cpu < 10  # 4000 reads; a rescan per read would be ~24M byte compares each


def test_pipeline_window_pauses_reading(loop):
    log: list = []
    client, server, got = client_server(loop, log, max_pipeline=4)
    n = 40
    client.write(b"".join(b"GET /slow%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n)))
    assert loop.run_until(lambda: got.count(b"HTTP/1.1 200") == n, timeout=20)
    client.close()


# -- the daemon with real clients --------------------------------------------


@pytest.fixture(scope="module")
def http_daemon():
    with daemon("http_server.py") as d:
        yield d


def curl(*args: str, input: bytes | None = None) -> bytes:
    out = subprocess.run([need("curl"), "-sS", *args], capture_output=True, input=input, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_curl_keep_alive(http_daemon):
    base = f"http://127.0.0.1:{http_daemon.port}"
    out = curl(f"{base}/", f"{base}/bytes?n=7", "-w", "|%{num_connects}\n")
    assert out == b"hello from evloop\n|1\nxxxxxxx|0\n"  # the second reused the connection


def test_curl_uploads(http_daemon, tmp_path):
    base = f"http://127.0.0.1:{http_daemon.port}"
    blob = bytes(range(256)) * 8192  # 2 MiB
    f = tmp_path / "blob"
    f.write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest().encode()
    assert curl("-T", str(f), f"{base}/upload") == b"%d %s\n" % (len(blob), digest)
    chunked = ["-H", "Transfer-Encoding: chunked", "--data-binary", f"@{f}"]
    assert curl(*chunked, f"{base}/upload") == b"%d %s\n" % (len(blob), digest)
    assert curl(*chunked, f"{base}/echo") == blob


def test_curl_streamed_response_and_http10(http_daemon):
    base = f"http://127.0.0.1:{http_daemon.port}"
    assert curl("-N", f"{base}/stream?n=3&ms=1") == b"chunk 0\nchunk 1\nchunk 2\n"
    assert curl("-0", f"{base}/stream?n=2&ms=1") == b"chunk 0\nchunk 1\n"  # close-delimited
    assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/nope") == b"404"


def test_request_limits_over_the_wire(http_daemon):
    s = connect(http_daemon.port)
    with s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        reply = recv_until(s, lambda d: False)
    assert reply.startswith(b"HTTP/1.1 431 ") and b"connection: close" in reply
    s = connect(http_daemon.port)
    with s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        assert recv_until(s, lambda d: False).startswith(b"HTTP/1.1 413 ")


def test_thousand_keep_alive_connections(http_daemon):
    raise_nofile(4096)
    socks = [connect(http_daemon.port) for _ in range(1000)]
    try:
        for round_ in range(2):
            for s in socks:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            for s in socks:
                reply = recv_until(s, lambda d: d.endswith(b"hello from evloop\n"))
                assert reply.startswith(b"HTTP/1.1 200 OK"), round_
    finally:
        for s in socks:
            s.close()


def test_client_disconnects_mid_response_over_the_wire(http_daemon):
    s = connect(http_daemon.port)
    s.sendall(b"GET /bytes?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    assert curl(f"http://127.0.0.1:{http_daemon.port}/") == b"hello from evloop\n"


# -- HTTPS ---------------------------------------------------------------------


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


def test_https_with_curl_and_openssl(cert):
    crt, key = cert
    with daemon("http_server.py", "--tls-cert", crt, "--tls-key", key) as d:
        base = f"https://localhost:{d.port}"
        assert curl("--cacert", crt, f"{base}/", f"{base}/") == b"hello from evloop\n" * 2
        blob = bytes(range(256)) * 4096
        assert curl("--cacert", crt, "--data-binary", "@-", "-H", "Transfer-Encoding: chunked",
                    f"{base}/echo", input=blob) == blob  # fmt: skip
        assert len(curl("--cacert", crt, f"{base}/bytes?n=3000000")) == 3_000_000
        out = subprocess.run(
            [need("openssl"), "s_client", "-connect", f"127.0.0.1:{d.port}", "-quiet"],
            input=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            capture_output=True, timeout=30,
        )  # fmt: skip
        assert out.stdout.startswith(b"HTTP/1.1 200 OK") and out.stdout.endswith(b"evloop\n")
        # Plain HTTP on the TLS port: that connection fails, the next is fine.
        plain = subprocess.run(
            [need("curl"), "-sS", f"http://127.0.0.1:{d.port}/"], capture_output=True, timeout=30
        )
        assert plain.returncode != 0
        assert curl("--cacert", crt, f"{base}/") == b"hello from evloop\n"


def test_prefork_http(tmp_path):
    with daemon("http_server.py", "--workers", "2") as d:
        base = f"http://127.0.0.1:{d.port}"
        for _ in range(5):
            assert curl(f"{base}/") == b"hello from evloop\n"
