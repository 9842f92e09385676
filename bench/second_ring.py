"""The second ring's benchmarks, run by `make bench` after the main harness.

    .venv/bin/python bench/second_ring.py [--quick] [--repeat N] [--json PATH]

Each script below measures one layer against its peers in one run and
prints one JSON line (medians of its repeats, with min-max); this driver
runs them one after the other, each in its own process under a timeout,
prints their ratios, and writes every line to bench-results/second-ring.json.
A script that is missing (its layer not built) or fails is reported and
skipped; the exit status is 1 if any failed.

  coro_rtt.py       the coroutine layer: round trips (evloop tasks, evloop
                    callbacks, asyncio, uvloop) and the cost of one await
  patterns_zmq.py   Dealer over 4 worker processes and Broadcast/Tee to 8
                    subscribers, against pyzmq DEALER, PUB and XPUB_NODROP
  session_bench.py  lossless sessions against a plain Pipe and pyzmq
                    DEALER/ROUTER, and the time to recover after a fault
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("coro_rtt.py", "patterns_zmq.py", "session_bench.py")
TIMEOUT = 900.0


# The repeat flag's name in each script.
REPEAT_FLAG = {"session_bench.py": "--repeats"}


def run_one(script: Path, quick: bool, repeat: int | None) -> dict[str, object]:
    cmd = [sys.executable, str(script)]
    if quick:
        cmd.append("--quick")
    elif repeat is not None:
        cmd += [REPEAT_FLAG.get(script.name, "--repeat"), str(repeat)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    took = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr)[-2000:]
        return {"script": script.name, "status": "failed", "exit": proc.returncode, "log": tail}
    record: dict[str, object] = json.loads(lines[-1])
    record["script"] = script.name
    record["status"] = "ok"
    record["seconds"] = round(took, 1)
    return record


def describe(record: dict[str, object]) -> str:
    ratios = record.get("ratios") or {}
    assert isinstance(ratios, dict)
    results = record.get("results")
    if record.get("bench") == "session" and isinstance(results, dict):
        # The session script reports its ratios per frame size.
        ratios = {}
        for size, r in results.items():
            ratios[f"session / plain Pipe, {size} B"] = r["session_vs_pipe"]
            if "session_vs_zmq" in r:
                ratios[f"session / pyzmq DEALER-ROUTER, {size} B"] = r["session_vs_zmq"]
        rec = record.get("recovery_ms")
        if isinstance(rec, dict):
            ratios["recovery after a fault, ms (not a ratio)"] = rec["median"]
    if not ratios:
        return "  (no ratios: a peer was unavailable; see the JSON)"
    return "\n".join(
        f"  {name}: {value:.2f}" + ("" if "not a ratio" in name else "x")
        for name, value in sorted(ratios.items())
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of every script")
    ap.add_argument("--repeat", type=int, default=None, help="repeats for each script")
    ap.add_argument("--json", default="bench-results/second-ring.json")
    args = ap.parse_args()
    records = []
    failed = 0
    for name in SCRIPTS:
        script = HERE / name
        if not script.exists():
            print(f"{name}: not present, skipped")
            continue
        print(f"{name} ...", flush=True)
        try:
            record = run_one(script, args.quick, args.repeat)
        except subprocess.TimeoutExpired:
            record = {"script": name, "status": "failed", "log": f"timed out after {TIMEOUT} s"}
        records.append(record)
        if record["status"] != "ok":
            failed += 1
            print(f"{name}: FAILED\n{record.get('log', '')}")
        else:
            print(f"{name}: ok in {record['seconds']} s; ratios of medians:\n{describe(record)}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"records": records, "loadavg": os.getloadavg()}, indent=1))
    print(f"second ring: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
