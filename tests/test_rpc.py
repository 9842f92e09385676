# tests/test_rpc.py
#
# The pieces the Pool is built from, on their own: rpc (Client and serve on
# a plain Pipe pair in one process: any endpoint, not only a worker's), the
# control-channel registry and its error codec, and the Dispatcher.
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from evloop import Loop, Pipe, RemoteError, RequestCancelled, RequestTimeout, conn_pair, control
from evloop.dispatch import Dispatcher
from evloop.rpc import Client, Reply, get_codec, serve


@pytest.fixture
def pipes(loop: Loop) -> Iterator[tuple[Pipe, Pipe]]:
    a, b = conn_pair(loop)
    pa, pb = Pipe(a), Pipe(b)
    yield pa, pb
    pa.abort()
    pb.abort()


def test_client_and_serve_on_any_endpoint(loop: Loop, pipes: tuple[Pipe, Pipe]) -> None:
    caller, server = pipes
    user: list[tuple[int, bytes]] = []
    caller.on_frame = lambda chan, p: user.append((chan, bytes(p)))
    client = Client(caller)  # stacks on the Pipe's on_frame, keeps the old one
    serve(loop, server, lambda data: data.upper(), on_frame=lambda c, p: server.write_frame(c, p))
    reqs = [client.request(b"abc"), client.request(b"x" * 100_000)]
    caller.write_frame(3, b"user traffic")  # not rpc: it goes to the old on_frame
    assert loop.run_until(lambda: all(r.done() for r in reqs) and user, timeout=5)
    assert [r.result() for r in reqs] == [b"ABC", b"X" * 100_000]
    assert user == [(3, b"user traffic")]
    assert (client.outstanding, client.sent, client.completed) == (0, 2, 2)


def test_deferred_replies_errors_timeouts_and_cancel(loop: Loop, pipes: tuple[Pipe, Pipe]) -> None:
    caller, server = pipes
    held: list[Reply] = []

    def handler(data: bytes, reply: Reply) -> None:
        if data == b"raise":
            raise KeyError("nope")
        if data == b"hold":
            held.append(reply)
        else:
            loop.call_soon(reply, b"later " + data)

    serve(loop, server, handler, deferred=True)
    client = Client(caller)
    ok = client.request(b"a")
    bad = client.request(b"raise")
    slow = client.request(b"hold", timeout=0.05)
    gone = client.request(b"hold")
    assert gone.cancel() and gone.cancelled()
    assert loop.run_until(lambda: ok.done() and bad.done() and slow.done(), timeout=5)
    assert ok.result() == b"later a"
    assert isinstance(bad.exception(), RemoteError) and "KeyError" in str(bad.exception())
    assert isinstance(slow.exception(), RequestTimeout)
    assert isinstance(gone.exception(), RequestCancelled)
    for r in held:
        r(b"too late")  # dropped: their requests are done
    with pytest.raises(RuntimeError, match="already answered"):
        held[0](b"twice")
    loop.run_until(lambda: False, timeout=0.02)
    assert client.outstanding == 0


def test_codecs_on_any_endpoint(loop: Loop, pipes: tuple[Pipe, Pipe]) -> None:
    caller, server = pipes
    serve(loop, server, lambda v: {"got": v}, codec="json")
    client = Client(caller, codec="json")
    r = client.request([1, "two", None])
    assert loop.run_until(r.done, timeout=5)
    assert r.result() == {"got": [1, "two", None]}
    assert get_codec("bytes") is None and get_codec(None) is None
    with pytest.raises(ValueError, match="codec"):
        get_codec("yaml")


def test_fail_all_when_the_endpoint_is_lost(loop: Loop, pipes: tuple[Pipe, Pipe]) -> None:
    caller, _server = pipes  # nobody serves
    client = Client(caller)
    reqs = [client.request(b"x") for _ in range(3)]
    client.fail_all(lambda req: ConnectionError(f"lost {req.id}"))
    assert [str(r.exception()) for r in reqs] == ["lost 1", "lost 2", "lost 3"]
    assert client.outstanding == 0


# -- the control channel ------------------------------------------------------------------


def test_every_kind_is_registered_once_and_collisions_are_refused() -> None:
    table = {k.byte: k for k in control.kinds()}
    assert {chr(b) for b in table} >= set("EUPpQMRX")
    assert table[control.KIND_REQUEST].owner == "evloop.rpc"
    with pytest.raises(ValueError, match="already registered by evloop.rpc"):
        control.register_kind("Q", "mine", "a.session", "both", "whatever")
    with pytest.raises(ValueError, match="one byte"):
        control.register_kind(300, "big", "a.session", "both", "")
    assert control.CONTROL_CHANNEL == 0xFFFF and control.ID_OVERHEAD == 9
    assert control.HEADER_SIZE == 6  # the codec's, not a copy


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError in the decoder (defect 6)
        b'["a list"]',
        b'{"type": 5, "message": [], "traceback": {}}',
        b"\xff\xfe not utf-8",
        b"",
        b'{"type": "X"' + b" " * (2 << 20) + b"}",  # too large to parse at all
    ],
)
def test_decode_error_never_raises(body: bytes) -> None:
    exc = control.decode_error(body)
    assert isinstance(exc, RemoteError) and exc.remote_type == "?"
    assert "unreadable error report" in exc.remote_message


def test_encode_decode_error_round_trip() -> None:
    try:
        raise ValueError("bad \u00e9")
    except ValueError as e:
        body = control.encode_error(e)
    info = json.loads(body)
    assert info["type"] == "ValueError" and info["message"] == "bad \u00e9"
    exc = control.decode_error(body)
    assert (exc.remote_type, exc.remote_message) == ("ValueError", "bad \u00e9")
    assert "Traceback" in exc.remote_traceback


# -- the dispatcher --------------------------------------------------------------------------


class T:
    def __init__(self, name: str, outstanding: int = 0) -> None:
        self.name = name
        self.outstanding = outstanding

    def __repr__(self) -> str:
        return self.name


def test_round_robin_skips_suspended_targets_and_keeps_its_order() -> None:
    a, b, c = T("a"), T("b"), T("c")
    d: Dispatcher[Any] = Dispatcher("round_robin")
    for t in (a, b, c):
        d.add(t)
    assert [d.pick() for _ in range(4)] == [a, b, c, a]
    d.suspend(b)
    assert [d.pick() for _ in range(3)] == [c, a, c]
    d.resume(b)
    assert [d.pick() for _ in range(3)] == [a, b, c]
    d.remove(a)
    d.resume(a)  # removed: stays out
    assert [d.pick() for _ in range(2)] == [b, c] and len(d) == 2
    d.remove(b)
    d.remove(c)
    assert d.pick() is None


def test_least_outstanding_breaks_ties_in_round_robin_order() -> None:
    a, b, c = T("a", 2), T("b", 1), T("c", 1)
    d: Dispatcher[Any] = Dispatcher("least_outstanding")
    for t in (a, b, c):
        d.add(t)
    assert d.pick() is b
    b.outstanding = 2
    assert d.pick() is c
    c.outstanding = 2
    assert [d.pick() for _ in range(3)] == [a, b, c]  # all equal: round robin
    a.outstanding = 0
    d.suspend(a)
    assert d.pick() in (b, c)
    with pytest.raises(ValueError):
        Dispatcher("random")
