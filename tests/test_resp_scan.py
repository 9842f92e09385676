# evloop.resp's fast path: RespParser with each whole-command scanner it can
# have (the C one, the pure-Python twin, none: the state machine alone), on
# the cases of tests/test_resp.py (split at every byte, malformed input)
# and on the seams between the scanner and the state machine (batch limits,
# commands with more arguments than a batch, large bulks, partial commands
# before whole ones). The scanner is swapped through RespParser._scanner,
# the class attribute parse() reads.
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import evloop
from evloop import _pycodec, codec
from evloop.resp import LARGE_BULK, RespParser
from tests import test_resp
from tests.test_resp import EXPECTED, SAMPLE, cmd, parse_pieces

SCANNERS = [pytest.param(_pycodec.scan_resp, id="twin"), pytest.param(None, id="none")]
if codec.c_impl is not None:
    SCANNERS.insert(0, pytest.param(codec.c_impl.scan_resp, id="c"))

# test_resp.test_malformed's cases, read from its parametrize mark so the two
# lists cannot drift apart.
MALFORMED = next(m for m in test_resp.test_malformed.pytestmark if m.name == "parametrize").args[1]


@pytest.fixture(params=SCANNERS)
def scans(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Install the scanner; yields a list that counts the commands it found."""
    scanner: Callable[..., Any] | None = request.param
    found: list[int] = []
    if scanner is None:
        monkeypatch.setattr(RespParser, "_scanner", None)
    else:

        def counting(*args: Any) -> Any:
            res = scanner(*args)
            found.append(len(res[0]))
            return res

        monkeypatch.setattr(RespParser, "_scanner", counting)
    yield found


def test_default_scanner_is_c_only() -> None:
    # Without C, the state machine alone is the faster pure-Python parser.
    want = codec.c_impl.scan_resp if codec.IMPLEMENTATION == "c" else None
    assert RespParser._scanner is want


def test_split_at_every_byte(loop: evloop.Loop, scans: list[int]) -> None:
    assert parse_pieces(loop, [SAMPLE]) == EXPECTED
    for k in range(1, len(SAMPLE)):
        assert parse_pieces(loop, [SAMPLE[:k], SAMPLE[k:]]) == EXPECTED, k
    assert parse_pieces(loop, [SAMPLE[i : i + 1] for i in range(len(SAMPLE))]) == EXPECTED


@pytest.mark.parametrize("data, message", MALFORMED)
def test_malformed(loop: evloop.Loop, scans: list[int], data: bytes, message: str) -> None:
    with pytest.raises(evloop.RespProtocolError, match=re.escape(message)):
        parse_pieces(loop, [data], max_bulk_len=1000)
    # The same error after a whole command, which the scanner takes first.
    with pytest.raises(evloop.RespProtocolError, match=re.escape(message)):
        parse_pieces(loop, [cmd(b"PING") + data], max_bulk_len=1000)


def test_whole_commands_go_through_the_scanner(loop: evloop.Loop, scans: list[int]) -> None:
    # 3000 commands in one write: several full batches per read. The socket
    # delivers it in a few reads, and a command cut by a read boundary is
    # finished by the state machine.
    want = [[b"INCR", b"k%d" % i] for i in range(3000)]
    data = b"".join(cmd(*c) for c in want)
    assert parse_pieces(loop, [data]) == want
    if RespParser._scanner is not None:
        assert sum(scans) >= 2950, scans


def test_seams_with_the_state_machine(loop: evloop.Loop, scans: list[int]) -> None:
    many = [b"MSET", *[b"a%d" % i for i in range(5000)]]  # more arguments than a batch
    big = [b"SET", b"big", b"\x00\xff" * LARGE_BULK]  # a large bulk: streamed
    cmds = [[b"GET", b"a"], many, [b"PING"], big, [b"GET", b"b"], [b"ECHO", b"x\r\n"]]
    data = b"".join(cmd(*c) for c in cmds[:4]) + b"PING\r\n" + b"".join(cmd(*c) for c in cmds[4:])
    want = [*cmds[:4], [b"PING"], *cmds[4:]]
    assert parse_pieces(loop, [data]) == want
    # Cut inside each command: the partial one goes to the state machine and
    # the whole ones after it come back to the scanner.
    small = b"".join(cmd(b"GET", b"k%d" % i) for i in range(40))
    for cut in (3, 9, 17, 101, 333):
        scans.clear()
        got = parse_pieces(loop, [small[:cut], small[cut:]])
        assert got == [[b"GET", b"k%d" % i] for i in range(40)], cut
        if RespParser._scanner is not None:
            assert sum(scans) >= 38, (cut, scans)


def test_commands_before_the_error_are_kept(loop: evloop.Loop, scans: list[int]) -> None:
    a, b = evloop.conn_pair(loop)
    b.write(cmd(b"PING") + cmd(b"GET", b"k") + b"*1\r\n!oops\r\n")
    assert loop.run_until(lambda: a.read_buffered >= 36, timeout=5)
    out: list[list[bytes]] = []
    with pytest.raises(evloop.RespProtocolError, match="expected '\\$', got '!'"):
        RespParser().parse(a, out)
    assert out == [[b"PING"], [b"GET", b"k"]]


def test_inline_runs_stay_in_the_state_machine(loop: evloop.Loop, scans: list[int]) -> None:
    # redis-benchmark's PING_INLINE pipelines inline lines: after the scanner
    # stops at the first, the state machine parses on through all of them
    # instead of going back to the scanner (and copying the buffer) per line.
    data = b"PING\r\n" * 200 + b"".join(cmd(b"GET", b"k%d" % i) for i in range(200))
    want = [[b"PING"]] * 200 + [[b"GET", b"k%d" % i] for i in range(200)]
    assert parse_pieces(loop, [data]) == want
    if RespParser._scanner is not None:
        assert sum(scans) >= 190 and len(scans) < 20, scans
