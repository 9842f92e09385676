# tests/test_bench_peers.py
#
# The benchmark's peers and harness, with tiny parameters: every peer system
# runs its three workloads for real (real socketpairs, real child processes),
# the asyncio frame parsers are fed byte streams cut at arbitrary points, the
# harness's hard timeout is shown to kill a hung system and its children, and
# the table/JSON/chart code runs on a synthetic result set.
from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evlbench import __main__ as harness
from evlbench import ceiling, report
from evlbench.aio_frames import BufferedFrames, ChunkProtocol, Handler
from evlbench.common import (
    HEADER,
    SYSTEMS,
    Latency,
    Measurement,
    PoolResult,
    Throughput,
    Unsupported,
    parse_size,
    percentile,
    size_label,
)

PEERS = [
    "asyncio-streams",
    "asyncio-protocol",
    "uvloop-streams",
    "uvloop-protocol",
    "multiprocessing",
    "c",
]


def _peer(name: str) -> tuple[Any, dict[str, Any]]:
    """The module and opts of a peer, skipping the test when the peer cannot
    run here (uvloop is not in the test extra; C needs a compiler)."""
    module_name, opts = SYSTEMS[name]
    module = importlib.import_module(module_name)
    check = getattr(module, "unavailable", None)
    reason = check(**opts) if check else None
    if reason:
        pytest.skip(reason)
    return module, opts


# --- every peer, every workload ----------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", [64, 64 * 1024])
@pytest.mark.parametrize("name", PEERS)
def test_throughput(name: str, size: int) -> None:
    module, opts = _peer(name)
    r = module.throughput(size, 0.1, **opts)
    assert isinstance(r, Throughput)
    assert r.size == size
    assert r.frames > 0
    assert r.bytes == r.frames * size
    assert 0 < r.seconds < 10
    assert r.frames_per_s > 0 and r.mb_per_s == pytest.approx(r.bytes / r.seconds / 1e6)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", PEERS)
def test_rtt(name: str) -> None:
    module, opts = _peer(name)
    r = module.rtt(200, **opts)
    assert isinstance(r, Latency)
    assert r.count == 200
    assert r.mean_us > 0 and r.p99_us > 0
    # Every trip is inside the timed span, so the trips add up to at most it.
    assert r.mean_us * r.count <= r.seconds * 1e6 * 1.001 + 1
    assert r.per_s > 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", PEERS)
def test_pool(name: str) -> None:
    module, opts = _peer(name)
    if name == "c":
        with pytest.raises(Unsupported):
            module.pool(4, 200, 8, **opts)
        return
    r = module.pool(4, 200, 8, **opts)
    assert isinstance(r, PoolResult)
    assert (r.workers, r.requests) == (4, 200)
    assert r.seconds > 0 and r.per_s > 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("buffered", [True, False])
def test_asyncio_protocol_both_parsers_end_to_end(buffered: bool) -> None:
    module, opts = _peer("asyncio-protocol")
    for size in (64, 1 << 20):
        r = module.throughput(size, 0.1, buffered=buffered, **opts)
        assert r.frames > 0 and r.bytes == r.frames * size
    assert module.rtt(50, buffered=buffered, **opts).count == 50


def test_ceiling_builds_and_rejects_bad_arguments() -> None:
    _peer("c")
    binary = ceiling.binary()
    assert binary.exists() and binary.stat().st_mtime >= ceiling.SOURCE.stat().st_mtime
    with pytest.raises(RuntimeError, match="exited 64"):
        ceiling._run("nonsense")


# --- the asyncio frame parsers, cut anywhere ---------------------------------------


class _Collect(Handler):
    def __init__(self, done: asyncio.Future[Any]) -> None:
        super().__init__(done)
        self.frames: list[tuple[int, bytes]] = []

    def frame_received(self, chan: int, payload: bytes | bytearray) -> None:
        assert isinstance(payload, (bytes, bytearray))  # something the app may keep
        self.frames.append((chan, bytes(payload)))


def _feed(buffered: bool, stream: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    ev = asyncio.new_event_loop()
    try:
        sink = _Collect(ev.create_future())
        proto = BufferedFrames(sink) if buffered else ChunkProtocol(sink)
        pieces = []
        pos = 0
        for cut in sorted(set(cuts)) + [len(stream)]:
            if cut > pos:
                pieces.append(stream[pos:cut])
                pos = cut
        for piece in pieces:
            if isinstance(proto, ChunkProtocol):
                proto.data_received(piece)
                continue
            while piece:  # the transport may get less room than it has bytes
                buf = proto.get_buffer(len(piece))
                n = min(len(buf), len(piece))
                assert n > 0
                buf[:n] = piece[:n]
                proto.buffer_updated(n)
                piece = piece[n:]
        assert not proto.incomplete()
        return sink.frames
    finally:
        ev.close()


def _stream(payloads: list[bytes]) -> bytes:
    return b"".join(HEADER.pack(i % 65536, len(p)) + p for i, p in enumerate(payloads))


_EDGE = [b"", b"\x00", b"\xff" * 5, bytes(range(256)) * 3, b"\x00\x80" * 70_000, b"z" * 300_001]


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "chunk"])
@pytest.mark.parametrize("step", [1, 7, 4096, 10**7])
def test_parser_edge_lengths(buffered: bool, step: int) -> None:
    payloads = _EDGE if step > 1 else _EDGE[:4]  # one byte at a time, on the small ones
    stream = _stream(payloads)
    got = _feed(buffered, stream, list(range(step, len(stream), step)))
    assert got == [(i, p) for i, p in enumerate(payloads)]


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "chunk"])
@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(
        st.one_of(st.binary(max_size=300), st.integers(0, 200_000).map(lambda n: b"\x81" * n)),
        max_size=6,
    ),
    cuts=st.lists(st.integers(0, 700_000), max_size=12),
)
def test_parser_cut_anywhere(buffered: bool, payloads: list[bytes], cuts: list[int]) -> None:
    stream = _stream(payloads)
    got = _feed(buffered, stream, [c for c in cuts if c < len(stream)])
    assert got == [(i, p) for i, p in enumerate(payloads)]


# --- the harness ---------------------------------------------------------------------


_BROKEN_SYSTEM = """
import os, subprocess, sys, threading

def throughput(size, duration, **opts):
    # Hangs, with a child of its own that hangs too.
    child = subprocess.Popen([sys.executable, "-c", "import threading; threading.Event().wait()"])
    with open(os.environ["BENCH_TEST_PIDFILE"], "w") as f:
        f.write(str(child.pid))
    threading.Event().wait()

def rtt(count, **opts):
    raise RuntimeError("this system is broken")

def pool(workers, requests, window, **opts):
    os._exit(7)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is dead
    except FileNotFoundError:
        return True


@pytest.fixture
def broken_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (tmp_path / "broken_bench_system.py").write_text(textwrap.dedent(_BROKEN_SYSTEM))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("BENCH_TEST_PIDFILE", str(tmp_path / "pid"))
    return {"system": "broken", "module": "broken_bench_system", "opts": {}}


@pytest.mark.timeout(30)
def test_hung_system_is_killed_with_its_children(
    broken_system: dict[str, Any], tmp_path: Path
) -> None:
    spec = {**broken_system, "workload": "throughput", "params": {"size": 64, "duration": 0.1}}
    record = harness.run_one(spec, timeout=3.0)
    assert record["status"] == "timeout"
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, f"grandchild {pid} survived the timeout"
        time.sleep(0.01)


@pytest.mark.timeout(30)
def test_crashing_systems_are_failures(broken_system: dict[str, Any]) -> None:
    record = harness.run_one({**broken_system, "workload": "rtt", "params": {"count": 10}}, 20.0)
    assert record["status"] == "failed" and "this system is broken" in record["reason"]
    params = {"workers": 1, "requests": 1, "window": 1}
    record = harness.run_one({**broken_system, "workload": "pool", "params": params}, 20.0)
    assert record["status"] == "failed" and "status 7" in record["reason"]


@pytest.mark.timeout(30)
def test_harness_end_to_end_on_cheap_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    argv = [
        "--quick",
        "--systems",
        "multiprocessing,c",
        "--workloads",
        "rtt,pool",
        "--json",
        str(out),
        "--no-chart",
    ]
    assert harness.main(argv) == 0
    text = capsys.readouterr().out
    assert "round trips/s" in text and "n/a" in text and "SKIP" in text
    data = json.loads(out.read_text())
    assert {m["system"] for m in data["measurements"]} == {"multiprocessing", "c"}
    assert data["machine"]["cpu"]


def test_options() -> None:
    args = harness.parse_args(["--quick", "--sizes", "64,1K,1MiB"])
    assert args.sizes == [64, 1024, 1 << 20] and args.duration == harness.QUICK["duration"]
    assert harness.parse_args(["--quick", "--count", "7"]).count == 7
    with pytest.raises(SystemExit):
        harness.parse_args(["--systems", "nonesuch"])
    assert [size_label(parse_size(s)) for s in ("64", "1k", "64KiB", "1M")] == [
        "64 B",
        "1 KiB",
        "64 KiB",
        "1 MiB",
    ]
    assert percentile([5, 1, 4, 2, 3], 99) == 5 and percentile(list(range(1, 101)), 99) == 99


# --- the report, on synthetic results --------------------------------------------------


def _tp(system: str, size: int, mb_per_s: float) -> Measurement:
    frames = int(mb_per_s * 1e6 / size)
    r = Throughput(system, size, frames, frames * size, 1.0)
    return Measurement("throughput", system, size, "ok", r, repeats=[r])


def _synthetic() -> list[Measurement]:
    ms = []
    for size in (64, 1024, 1 << 20):
        ms += [
            _tp("evloop", size, 300.0),
            _tp("evloop-budget1", size, 250.0),
            _tp("uvloop-protocol", size, 100.0),
        ]
        ms.append(
            Measurement(
                "throughput",
                "uvloop-streams",
                size,
                "unsupported",
                reason="uvloop not installed — skipped",
            )
        )
        ms.append(_tp("c", size, 1000.0))
        ms.append(
            Measurement(
                "throughput",
                "asyncio-streams",
                size,
                "failed",
                reason="Traceback ...\nBadFrame: oops",
            )
        )
    for system, per_s in (("evloop", 50_000.0), ("uvloop-protocol", 60_000.0)):
        lat = Latency(system, 1000, 1000 / per_s, 1e6 / per_s, 2e6 / per_s)
        ms.append(Measurement("rtt", system, None, "ok", lat, repeats=[lat]))
    ms.append(Measurement("pool", "c", None, "unsupported", reason="n/a: no pool"))
    return ms


def test_report_on_synthetic_results(tmp_path: Path) -> None:
    ms = _synthetic()
    params = {
        "duration": 1.0,
        "count": 1000,
        "requests": 10,
        "workers": 4,
        "window": 2,
        "repeat": 1,
    }
    table = report.render_table(ms, params)
    assert "3.00x" in table  # evloop 300 vs uvloop-protocol 100
    assert "1.20x" in table  # evloop vs evloop-budget1
    assert "0.30x" in table  # evloop vs c
    assert "uvloop not installed — skipped" in table and "FAILED: BadFrame: oops" in table
    assert "n/a: no pool" in table

    targets = {t.name: t for t in report.evaluate_targets(ms)}
    assert targets["64 B frames/s >= 2x best uvloop"].status == "PASS"
    assert targets["1 KiB MB/s >= 2x best uvloop"].ratio == pytest.approx(3.0, rel=1e-3)
    assert targets["1 MiB MB/s >= 70% of C"].status == "MISS"
    assert targets["rtt round trips/s >= best uvloop"].status == "MISS"
    assert "MISS" in report.render_targets(list(targets.values()))
    no_uv = [m for m in ms if not m.system.startswith("uvloop")]
    assert report.evaluate_targets(no_uv)[0].status == "SKIP"

    machine = report.machine_info()
    assert machine["cpu"] and machine["cores"]
    path = tmp_path / "out" / "results.json"
    report.write_json(path, machine, params, ms, list(targets.values()))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert len(data["measurements"]) == len(ms)
    first = data["measurements"][0]
    assert first["result"]["mb_per_s"] == pytest.approx(300.0, rel=1e-3)
    assert {t["status"] for t in data["targets"]} == {"PASS", "MISS"}


def test_chart_on_synthetic_results(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is in the bench extra, not the test one")
    png = tmp_path / "chart.png"
    assert report.draw_chart(png, _synthetic(), report.machine_info()) is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    why = report.draw_chart(tmp_path / "c.png", _synthetic(), {})
    assert why is not None and "matplotlib not installed" in why
