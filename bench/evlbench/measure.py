# bench/evlbench/measure.py
#
# One measurement in a process of its own. The harness starts
#
#   python -m evlbench.measure SPEC_JSON OUT_PATH
#
# in a new session, so that on its hard timeout it can kill this process and
# every child it started with one killpg(); a system that hangs, crashes or
# leaks children therefore costs one failed cell, never the run. SPEC_JSON is
# {"system", "module", "opts", "workload", "params"}; OUT_PATH receives one
# JSON object: {"status": "ok", "result": {...}}, {"status": "unsupported",
# "reason"} or {"status": "failed", "error": traceback}.
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import traceback
from typing import Any

from .common import Unsupported
from .registry import WORKLOADS


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the measurement `spec` describes, here, and say how it went."""
    try:
        module = importlib.import_module(spec["module"])
        workload = spec["workload"]
        func = getattr(module, workload, None)
        if func is None:
            raise Unsupported(f"n/a ({spec['module']} has no {workload} workload)")
        result = func(**spec["params"], **spec["opts"])
        expected = WORKLOADS[workload].result
        if not isinstance(result, expected):
            raise TypeError(
                f"{spec['module']}.{workload} returned {result!r}, not a {expected.__name__}"
            )
        result = dataclasses.replace(result, system=spec["system"])
        return {"status": "ok", "result": dataclasses.asdict(result)}
    except Unsupported as e:
        return {"status": "unsupported", "reason": str(e)}
    except Exception:
        return {"status": "failed", "error": traceback.format_exc()}


def main(argv: list[str] | None = None) -> int:
    spec_json, out_path = sys.argv[1:] if argv is None else argv
    record = run(json.loads(spec_json))
    tmp = f"{out_path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, out_path)
    return 1 if record["status"] == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
