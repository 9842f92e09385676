# The end-to-end benchmark's smoke run, so `make bench` can never silently rot:
# every system and workload runs with tiny counts, and evloop's cells must
# all have produced sane figures.
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evlbench.common import child_env


@pytest.mark.timeout(240)
def test_bench_quick_runs_every_system_and_workload(tmp_path):
    out_json = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "evlbench", "--quick",
            "--json", str(out_json), "--png", str(tmp_path / "chart.png"),
        ],
        capture_output=True, text=True, timeout=230, env=child_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out_json.read_text())
    cells = [m for m in data["measurements"] if m["system"] in ("evloop", "evloop-budget1")]
    workloads = {(m["system"], m["workload"], m["size"]) for m in cells}
    for system in ("evloop", "evloop-budget1"):
        for size in (64, 1024, 64 * 1024, 1 << 20):
            assert (system, "throughput", size) in workloads
        assert (system, "rtt", None) in workloads
        assert (system, "pool", None) in workloads
    for m in cells:
        assert m["status"] == "ok", m
        result = m["result"]
        if m["workload"] == "throughput":
            assert result["frames"] > 0 and result["bytes"] == result["frames"] * m["size"]
        else:
            assert result["count" if m["workload"] == "rtt" else "requests"] > 0
    # The table names evloop's ratio to each peer that ran.
    assert "evloop ×" in proc.stdout
    systems = {m["system"] for m in data["measurements"]}
    assert {"asyncio-streams", "asyncio-protocol", "multiprocessing", "c"} <= systems
