# The benchmark's smoke run, so `make bench` can never silently rot: every
# workload runs on every system that takes part in it, with tiny counts, as
# `make bench BENCH_ARGS=--quick` does, and every evloop cell must have
# produced sane figures. Nothing here looks at how fast anything was.
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evlbench.common import child_env
from evlbench.registry import SYSTEMS, WORKLOADS


@pytest.mark.timeout(170)
def test_bench_quick_runs_every_system_and_workload(tmp_path):
    out_json = tmp_path / "results.json"
    png = tmp_path / "chart.png"
    proc = subprocess.run(
        [sys.executable, "-m", "evlbench", "--quick", "--json", str(out_json), "--png", str(png)],
        capture_output=True, text=True, timeout=160, env=child_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out_json.read_text())
    ms = data["measurements"]
    seen = {(m["system"], m["workload"]) for m in ms}
    for name, system in SYSTEMS.items():
        for workload in system.workloads:
            assert (name, workload) in seen, (name, workload)
    assert {m["workload"] for m in ms} == set(WORKLOADS)
    for m in ms:
        if m["status"] == "unsupported":
            # Only what cannot run here: an evloop without busy_poll yet, or a
            # missing uvloop or compiler, says so.
            assert m["system"] not in ("evloop", "asyncio-protocol"), m
            assert m["reason"], m
            continue
        assert m["status"] == "ok", m
        assert len(m["repeats"]) == 1 and m["median"]["figure"] > 0
        result = m["repeats"][0]
        if "frames" in result and "size" in result:
            assert result["bytes"] == result["frames"] * result["size"]
    cases = {(m["workload"], m["case"]) for m in ms if m["system"] == "evloop"}
    assert ("many", "flood N=1") in cases and ("many", "trickle N=10") in cases
    assert ("memory", "200 idle") in cases
    # The table shows medians with their spread and evloop's ratio to each
    # peer, the load around the run, and every target line.
    for text in ("(median)", "min–max", "evloop ×", "Load before", "Load after", "targets"):
        assert text in proc.stdout, text
    assert len(data["targets"]) == 12
    assert {t["status"] for t in data["targets"]} <= {"PASS", "MISS", "SKIP"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
