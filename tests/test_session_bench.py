# The session benchmark's smoke run (bench/session_bench.py --quick), so it
# cannot silently rot: every system runs with tiny counts and reports sane
# figures. No test times anything.
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "session_bench.py"


@pytest.mark.timeout(120)
def test_session_bench_quick_reports_every_cell():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=110
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    for size in ("64", "1024"):
        cell = r["results"][size]
        assert cell["pipe_msgs_per_s"]["median"] > 0
        assert cell["session_msgs_per_s"]["median"] > 0
        assert cell["session_vs_pipe"] > 0
        zmq = cell["zmq_msgs_per_s"]
        assert isinstance(zmq, str) and zmq.startswith("unsupported") or zmq["median"] > 0
        assert cell["wire"]["sender_extra_bytes_per_frame"] < 1
    assert r["recovery_ms"]["median"] > 0
