# evloop.resp: the incremental parser on real Conns (split at every byte,
# malformed input, bounds), RespConnection's pipelining and errors, and
# examples/resp_server.py driven by redis-cli and redis-benchmark.
from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest

from tests.daemon_helpers import connect, daemon, need, recv_until  # isort: skip
from resp_server import Store  # examples/, put on sys.path by daemon_helpers  # isort: skip
from hypothesis import given
from hypothesis import strategies as st

import evloop
from evloop.resp import LARGE_BULK, RespConnection, RespParser, array, bulk, split_inline


def cmd(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


SAMPLE = (
    cmd(b"SET", b"k", b"v\r\n\x00\xff")
    + b"PING\r\n"
    + cmd(b"GET", b"k")
    + b"*0\r\n"
    + cmd(b"ECHO", b"")
    + b"echo \"a b\\x41\" 'c'\r\n"
    + cmd(b"MGET", b"k", b"nope")
)
EXPECTED = [
    [b"SET", b"k", b"v\r\n\x00\xff"],
    [b"PING"],
    [b"GET", b"k"],
    [b"ECHO", b""],
    [b"echo", b"a bA", b"c"],
    [b"MGET", b"k", b"nope"],
]


def parse_pieces(loop: evloop.Loop, pieces: list[bytes], **kw: int) -> list[list[bytes]]:
    """Feed `pieces` one write at a time into a Conn and parse as they come."""
    a, b = evloop.conn_pair(loop)
    parser = RespParser(**kw)
    out: list[list[bytes]] = []
    errors: list[Exception] = []

    def on_data(c: evloop.Conn) -> None:
        try:
            parser.parse(c, out)
        except evloop.RespProtocolError as exc:
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
    assert parser.idle
    return out


def test_parse_all_at_once(loop):
    assert parse_pieces(loop, [SAMPLE]) == EXPECTED


def test_parse_byte_by_byte(loop):
    assert parse_pieces(loop, [SAMPLE[i : i + 1] for i in range(len(SAMPLE))]) == EXPECTED


def test_parse_split_at_every_byte(loop):
    for k in range(1, len(SAMPLE)):
        assert parse_pieces(loop, [SAMPLE[:k], SAMPLE[k:]]) == EXPECTED, k


@given(st.lists(st.integers(1, len(SAMPLE) - 1), max_size=8))
def test_parse_cut_anywhere(cuts):
    with evloop.Loop() as loop:
        points = sorted(set(cuts))
        pieces = [SAMPLE[i:j] for i, j in zip([0, *points], [*points, len(SAMPLE)], strict=True)]
        assert parse_pieces(loop, pieces) == EXPECTED


def test_large_bulk_streams_out_of_the_conn(loop):
    # A bulk far larger than the Conn's read_limit: moved out as it arrives.
    value = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    data = cmd(b"SET", b"big", value)
    pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    out = parse_pieces(loop, pieces)
    assert out == [[b"SET", b"big", value]]
    assert len(value) > LARGE_BULK


@pytest.mark.parametrize(
    "data, message",
    [
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", "expected '$', got ':'"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*+1\r\n", "invalid multibulk length"),
        (b"*1_0\r\n", "invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$01\r\nx\r\n", "invalid bulk length"),
        (b"*1\r\n$3\r\nabcXY", "expected CRLF after a bulk string"),
        (b"*1\r\n$" + b"9" * 40, "too big bulk count string"),
        (b"*" + b"1" * 40, "too big mbulk count string"),
        (b"*2000000\r\n", "invalid multibulk length"),
        (b"*1\r\n$2000\r\n", "invalid bulk length"),
        (b'SET "a b\r\n', "unbalanced quotes in request"),
        (b"x" * 70_000, "too big inline request"),
    ],
)
def test_malformed(loop, data, message):
    with pytest.raises(evloop.RespProtocolError, match=re.escape(message)):
        parse_pieces(loop, [data], max_bulk_len=1000)


def test_commands_before_the_error_are_kept(loop):
    a, b = evloop.conn_pair(loop)
    out: list[list[bytes]] = []
    b.write(cmd(b"PING") + cmd(b"GET", b"k") + b"*1\r\n!oops\r\n")
    with pytest.raises(evloop.RespProtocolError):
        loop.run_until(lambda: a.read_buffered > 20, timeout=5)
        RespParser().parse(a, out)
    assert out == [[b"PING"], [b"GET", b"k"]]


def test_slow_inline_line_is_scanned_once(loop):
    # 60 KiB of an inline line, a byte per write in big steps: read_until's
    # remembered scan keeps the work linear (quadratic would take seconds).
    line = b"ECHO " + b"a" * 60_000
    pieces = [line[i : i + 1] for i in range(0, 2000)] + [line[2000:], b"\r\n"]
    t = time.process_time()
    assert parse_pieces(loop, pieces) == [[b"ECHO", b"a" * 60_000]]
    assert time.process_time() - t < 5


def test_split_inline_quotes():
    assert split_inline(b"set \"a\\nb\" 'it\\'s' plain\r\n") == [b"set", b"a\nb", b"it's", b"plain"]
    with pytest.raises(evloop.RespProtocolError):
        split_inline(b'"abc"def')


def test_encoders():
    assert bulk(b"ab") == b"$2\r\nab\r\n"
    assert array([b"a", None]) == b"*2\r\n$1\r\na\r\n$-1\r\n"


# -- RespConnection + the example's command table, in process ----------------


def serve_pair(loop: evloop.Loop) -> tuple[evloop.Conn, bytearray]:
    client, server = evloop.conn_pair(loop)
    RespConnection(server, Store().execute)
    got = bytearray()
    client.on_data = lambda c: (got.extend(c.read()), c.consume(c.read_buffered))
    return client, got


def roundtrip(loop: evloop.Loop, data: bytes, expect: bytes) -> None:
    client, got = serve_pair(loop)
    client.write(data)
    assert loop.run_until(lambda: len(got) >= len(expect), timeout=10), bytes(got)
    assert bytes(got) == expect
    client.close()


def test_commands_and_errors(loop):
    roundtrip(
        loop,
        cmd(b"SET", b"n", b"41") + cmd(b"INCR", b"n") + cmd(b"incr", b"n") + cmd(b"GET", b"n")
        + cmd(b"INCR", b"x") + cmd(b"SET", b"s", b"abc") + cmd(b"INCR", b"s")
        + cmd(b"SET", b"m", b"9223372036854775807") + cmd(b"INCR", b"m")
        + cmd(b"EXISTS", b"n", b"n", b"q") + cmd(b"DEL", b"n", b"q") + cmd(b"MGET", b"n", b"s")
        + cmd(b"GET") + cmd(b"NOPE", b"a") + cmd(b"PING", b"hi") + cmd(b"ECHO", b"e")
        + cmd(b"SET", b"a", b"b", b"c"),
        b"+OK\r\n:42\r\n:43\r\n$2\r\n43\r\n:1\r\n+OK\r\n"
        b"-ERR value is not an integer or out of range\r\n+OK\r\n"
        b"-ERR increment or decrement would overflow\r\n:2\r\n:1\r\n*2\r\n$-1\r\n$3\r\nabc\r\n"
        b"-ERR wrong number of arguments for 'get' command\r\n"
        b"-ERR unknown command 'NOPE', with args beginning with: 'a'\r\n"
        b"$2\r\nhi\r\n$1\r\ne\r\n-ERR syntax error\r\n",
    )  # fmt: skip


def test_protocol_error_answers_earlier_commands_then_closes(loop):
    client, got = serve_pair(loop)
    client.write(cmd(b"PING") + b"*1\r\n$x\r\n" + cmd(b"PING"))
    assert loop.run_until(lambda: client.closed, timeout=5)
    assert bytes(got) == b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"


def test_ten_thousand_pipelined_in_one_write(loop):
    n = 10_000
    data = b"".join(cmd(b"INCR", b"c") for _ in range(n))
    expect = b"".join(b":%d\r\n" % i for i in range(1, n + 1))
    roundtrip(loop, data, expect)


def test_quit_closes_after_ok(loop):
    client, got = serve_pair(loop)
    client.write(cmd(b"QUIT") + cmd(b"PING"))
    assert loop.run_until(lambda: client.closed, timeout=5)
    assert bytes(got) == b"+OK\r\n"


# -- the daemon, with real clients -----------------------------------------


@pytest.fixture(scope="module")
def resp_daemon():
    with daemon("resp_server.py") as d:
        yield d


def redis_cli(port: int, *args: str) -> str:
    out = subprocess.run(
        [need("redis-cli"), "-p", str(port), *args], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_redis_cli(resp_daemon):
    p = resp_daemon.port
    assert redis_cli(p, "ping") == "PONG"
    assert redis_cli(p, "set", "greeting", "hello world") == "OK"
    assert redis_cli(p, "get", "greeting") == "hello world"
    assert redis_cli(p, "incr", "counter") == "1"
    assert redis_cli(p, "mget", "greeting", "missing").split("\n")[0] == "hello world"
    assert redis_cli(p, "exists", "greeting", "counter", "missing") == "2"
    assert redis_cli(p, "del", "greeting", "missing") == "1"
    assert "unknown command" in redis_cli(p, "frobnicate")
    assert "wrong number of arguments" in redis_cli(p, "get")


def test_redis_cli_pipe_mode(resp_daemon):
    # redis-cli --pipe: mass insertion, pipelined, then an ECHO to find the end.
    data = b"".join(cmd(b"SET", b"key:%d" % i, b"v%d" % i) for i in range(5000))
    out = subprocess.run(
        [need("redis-cli"), "-p", str(resp_daemon.port), "--pipe"],
        input=data, capture_output=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert b"errors: 0, replies: 5000" in out.stdout
    assert redis_cli(resp_daemon.port, "get", "key:4999") == "v4999"


def test_redis_benchmark_short_run(resp_daemon):
    out = subprocess.run(
        [need("redis-benchmark"), "-p", str(resp_daemon.port), "-t", "ping,set,get",
         "-P", "16", "-n", "20000", "-c", "20", "-q"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rates = [line for line in out.stdout.replace("\r", "\n").splitlines() if "per second" in line]
    assert {r.split(":")[0].strip() for r in rates} >= {"PING_INLINE", "PING_MBULK", "SET", "GET"}


def test_malformed_input_breaks_only_that_connection(resp_daemon):
    good = connect(resp_daemon.port)
    bad = connect(resp_daemon.port)
    with good, bad:
        bad.sendall(b"*1\r\n$abc\r\n")
        reply = recv_until(bad, lambda d: False)  # until the server closes
        assert reply == b"-ERR Protocol error: invalid bulk length\r\n"
        good.sendall(cmd(b"PING"))
        assert recv_until(good, lambda d: d.endswith(b"\r\n")) == b"+PONG\r\n"


def test_client_disconnects_mid_reply(resp_daemon):
    # A big MGET reply the client never reads: the server must not mind.
    s = connect(resp_daemon.port)
    s.sendall(cmd(b"SET", b"blob", b"x" * 500_000))
    assert recv_until(s, lambda d: d.endswith(b"\r\n")) == b"+OK\r\n"
    s.sendall(cmd(b"MGET", *[b"blob"] * 40))
    s.recv(1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST while 20 MB are on their way
    assert redis_cli(resp_daemon.port, "ping") == "PONG"


def test_prefork_workers_share_the_port():
    with daemon("resp_server.py", "--workers", "2") as d:
        assert redis_cli(d.port, "ping") == "PONG"
        out = subprocess.run(
            [need("redis-benchmark"), "-p", str(d.port), "-t", "get", "-P", "8",
             "-n", "5000", "-c", "8", "-q"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0 and "GET" in out.stdout
        # The kernel spreads connections over the workers; every one answers.
        socks = [connect(d.port) for _ in range(20)]
        for s in socks:
            with s:
                s.sendall(b"PING\r\n")
                assert recv_until(s, lambda x: x.endswith(b"\r\n")) == b"+PONG\r\n"
