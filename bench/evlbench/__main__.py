# bench/evlbench/__main__.py
#
# The harness: `python -m evlbench` (also `evloop-bench`, `make bench`).
# It measures every selected workload on every selected system in one run,
# then prints the table with evloop's ratio to each system and the target
# lines, and writes the JSON record and the chart.
#
# Each measurement runs in a process of its own (evlbench.measure) in a
# new session, under a hard timeout: a system that hangs or crashes is killed
# with its whole process group, recorded as failed, and the run moves on.
# Systems are imported here only once selected, so evloop's runners failing to
# import is one clear error, not the end of the run. The cells are measured in
# order workload, size, repeat, system, so with --repeat the systems
# alternate and a burst of noise on the machine hurts them alike.
#
# Exit status: 0 when every requested measurement ran (a skipped or
# unsupported one is fine), 1 when a system failed to load, crashed or timed
# out, 2 for bad options.
from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import report
from .common import (
    SIZES,
    SYSTEMS,
    WORKLOADS,
    Latency,
    Measurement,
    Result,
    Throughput,
    child_env,
    parse_size,
    result_from_dict,
    size_label,
)

DEFAULTS = {"duration": 2.0, "count": 20000, "requests": 50000}
QUICK = {"duration": 0.1, "count": 300, "requests": 1000}


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evlbench",
        description="End-to-end framed-pipe benchmark: evloop against asyncio, uvloop, "
        "multiprocessing and a C ceiling, on this machine, in one run.",
    )
    p.add_argument(
        "--workloads",
        type=_comma_list,
        default=list(WORKLOADS),
        help=f"comma list of {','.join(WORKLOADS)} (default: all)",
    )
    p.add_argument(
        "--systems",
        type=_comma_list,
        default=list(SYSTEMS),
        help=f"comma list of {','.join(SYSTEMS)} (default: all)",
    )
    p.add_argument(
        "--sizes",
        type=_comma_list,
        default=None,
        help="throughput frame sizes, e.g. 64,1K,64K,1M (default: all four)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds per throughput measurement (default {DEFAULTS['duration']:g})",
    )
    p.add_argument(
        "--count", type=int, default=None, help=f"rtt round trips (default {DEFAULTS['count']})"
    )
    p.add_argument(
        "--requests",
        type=int,
        default=None,
        help=f"pool requests (default {DEFAULTS['requests']})",
    )
    p.add_argument("--workers", type=int, default=4, help="pool worker processes (default 4)")
    p.add_argument(
        "--window", type=int, default=32, help="pool requests outstanding per worker (default 32)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each measurement N times, keep the best (default 1)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny durations and counts, every system and workload still exercised",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="hard timeout per measurement in seconds (default: from the workload's size)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results/results.json"),
        help="where to write the results (default %(default)s)",
    )
    p.add_argument(
        "--png",
        type=Path,
        default=Path("bench-results/throughput.png"),
        help="where to draw the chart (default %(default)s)",
    )
    p.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    args = p.parse_args(argv)
    for name in args.workloads:
        if name not in WORKLOADS:
            p.error(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    for name in args.systems:
        if name not in SYSTEMS:
            p.error(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    try:
        args.sizes = [parse_size(s) for s in args.sizes] if args.sizes else list(SIZES)
    except ValueError as e:
        p.error(str(e))
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if (
        args.duration <= 0
        or args.count < 1
        or args.requests < 1
        or args.workers < 1
        or args.window < 1
        or args.repeat < 1
    ):
        p.error(
            "--duration, --count, --requests, --workers, --window and --repeat must be positive"
        )
    return args


# --- running one measurement -------------------------------------------------------


def _wait_exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until proc exits or timeout passes, without reaping it: while it
    is a zombie its pid, which is also its process group's id, cannot be
    reused, so killing the group afterwards cannot hit a stranger."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))
    finally:
        os.close(pidfd)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_one(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in its own session under a hard timeout. Returns
    the record measure.py wrote, or a failed/timeout record made here; the
    measuring process and everything it started are gone on return."""
    with tempfile.TemporaryDirectory(prefix="evloop-bench-") as tmp:
        out = Path(tmp) / "result.json"
        log_path = Path(tmp) / "log"
        argv = [sys.executable, "-m", "evlbench.measure", json.dumps(spec), str(out)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
                start_new_session=True,
            )
            try:
                exited = _wait_exited(proc, timeout)
            finally:
                _kill_group(proc.pid)  # stragglers too, e.g. a worker a crash left behind
                proc.wait()
        output = log_path.read_text(encoding="utf-8", errors="replace")
        if not exited:
            return {
                "status": "timeout",
                "reason": f"no result after {timeout:g} s; killed with its children",
                "log": output,
            }
        if out.exists():
            record: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
            if record["status"] == "failed":
                record["reason"] = record.pop("error", "")
            record["log"] = output
            return record
        return {
            "status": "failed",
            "reason": f"measuring process exited with status {proc.returncode} and no result",
            "log": output,
        }


def measurement_timeout(args: argparse.Namespace, workload: str) -> float:
    if args.timeout is not None:
        return float(args.timeout)
    if workload == "throughput":
        return 30.0 + 4 * args.duration
    if workload == "rtt":
        return 30.0 + args.count * 1e-3
    return 30.0 + args.requests * 1e-3 + 2.0 * args.workers


def workload_params(args: argparse.Namespace, workload: str, size: int | None) -> dict[str, Any]:
    if workload == "throughput":
        return {"size": size, "duration": args.duration}
    if workload == "rtt":
        return {"count": args.count}
    return {"workers": args.workers, "requests": args.requests, "window": args.window}


# --- progress ------------------------------------------------------------------


def progress(text: str, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


def describe(result: Result) -> str:
    if isinstance(result, Throughput):
        return f"{result.frames_per_s:>13,.0f} frames/s {result.mb_per_s:>10,.1f} MB/s"
    if isinstance(result, Latency):
        return (
            f"{result.per_s:>11,.0f} round trips/s"
            f"  mean {result.mean_us:,.1f} µs  p99 {result.p99_us:,.1f} µs"
        )
    return f"{result.per_s:>11,.0f} requests/s"


def _indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines())


# --- the run ---------------------------------------------------------------------


@dataclass
class SystemState:
    """What the harness learned about a system before measuring it."""

    name: str
    module: str
    opts: dict[str, Any]
    broken: str = ""  # it failed to load: every cell fails with this
    unavailable: str = ""  # it cannot run here: every cell is skipped with this
    notes: list[str] = field(default_factory=list)


def prepare(names: list[str]) -> list[SystemState]:
    """Import each selected system's module (lazily: only the selected ones),
    ask it whether it can run here, and build the C ceiling once."""
    states = []
    loaded: dict[str, Any] = {}
    failed_imports: dict[str, str] = {}
    for name in names:
        module_name, opts = SYSTEMS[name]
        state = SystemState(name, module_name, dict(opts))
        states.append(state)
        if module_name in failed_imports:
            state.broken = failed_imports[module_name]
            progress(f"error: system {name!r} uses {module_name} too: not measured either")
            continue
        try:
            if module_name not in loaded:
                loaded[module_name] = importlib.import_module(module_name)
        except Exception:
            state.broken = f"{module_name} failed to import:\n{traceback.format_exc()}"
            failed_imports[module_name] = state.broken
            progress(f"error: system {name!r} cannot be loaded: {state.broken.rstrip()}")
            progress(f"error: continuing without {name!r}; the run will exit non-zero")
            continue
        module = loaded[module_name]
        check = getattr(module, "unavailable", None)
        reason = check(**opts) if check is not None else None
        if reason:
            state.unavailable = reason
            progress(f"note: {name}: {report.skip_text(reason)}")
        elif name == "c":
            try:
                progress(f"building {module.BINARY} from {module.SOURCE} ...", end=" ")
                module.binary()
                progress("ok")
            except Exception as e:
                progress("FAILED")
                state.broken = f"could not build the C ceiling: {e}"
                progress(f"error: {state.broken}")
    return states


def run(args: argparse.Namespace) -> int:
    machine = report.machine_info()
    progress(report.machine_line(machine))
    states = prepare(args.systems)
    cells: list[tuple[str, int | None]] = []
    for workload in args.workloads:
        if workload == "throughput":
            cells.extend(("throughput", size) for size in args.sizes)
        else:
            cells.append((workload, None))
    total = len(cells) * len(states) * args.repeat
    step = 0
    measurements: list[Measurement] = []
    started = time.monotonic()
    for workload, size in cells:
        row = {s.name: Measurement(workload, s.name, size) for s in states}
        measurements.extend(row.values())
        for rep in range(args.repeat):
            for state in states:
                step += 1
                m = row[state.name]
                what = f"{workload} {size_label(size) if size else ''}".strip()
                rep_text = f" (run {rep + 1}/{args.repeat})" if args.repeat > 1 else ""
                label = f"[{step:>3}/{total}] {what:<18} {state.name:<16}{rep_text}"
                if state.broken:
                    m.status, m.reason = "failed", state.broken
                    if rep == 0:
                        progress(f"{label} FAILED: could not load")
                    continue
                if state.unavailable or m.status == "unsupported":
                    m.status = "unsupported"
                    m.reason = m.reason or state.unavailable
                    if rep == 0:
                        progress(f"{label} {report.skip_text(m.reason)}")
                    continue
                progress(f"{label} ...", end=" ")
                spec = {
                    "system": state.name,
                    "module": state.module,
                    "opts": state.opts,
                    "workload": workload,
                    "params": workload_params(args, workload, size),
                }
                t0 = time.monotonic()
                record = run_one(spec, measurement_timeout(args, workload))
                took = time.monotonic() - t0
                status = record["status"]
                if status == "ok":
                    result = result_from_dict(workload, record["result"])
                    m.repeats.append(result)
                    if m.result is None or result.figure > m.result.figure:
                        m.result = result
                    progress(f"{describe(result)}  ({took:.1f} s)")
                elif status == "unsupported":
                    m.status, m.reason = "unsupported", record.get("reason", "")
                    progress(report.skip_text(m.reason))
                else:
                    m.status, m.reason = status, record.get("reason", "")
                    progress(f"{status.upper()} after {took:.1f} s")
                    progress(_indent(m.reason))
                    if record.get("log", "").strip():
                        progress("      output of the measuring process:")
                        progress(_indent(record["log"][-4000:], "        "))
    elapsed = time.monotonic() - started
    params = {k: v for k, v in vars(args).items() if k not in ("json", "png")}
    targets = report.evaluate_targets(measurements)

    print()
    print(report.machine_line(machine))
    print()
    print(report.render_table(measurements, params))
    print()
    print(report.render_targets(targets))
    print()

    failed = [m for m in measurements if m.broken]
    exit_code = 1 if failed else 0
    args_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args_json["elapsed_s"] = round(elapsed, 3)
    try:
        report.write_json(args.json, machine, args_json, measurements, targets)
        print(f"results: {args.json}")
    except OSError as e:
        print(f"error: could not write {args.json}: {e}", file=sys.stderr)
        exit_code = 1
    if not args.no_chart:
        try:
            why = report.draw_chart(args.png, measurements, machine)
        except Exception:
            print(f"error: chart failed:\n{traceback.format_exc()}", file=sys.stderr)
            exit_code = 1
        else:
            print(f"chart: {why}" if why else f"chart: {args.png}")
    if failed:
        names = sorted({m.system for m in failed})
        print(f"{len(failed)} measurement(s) failed ({', '.join(names)}); exit status 1")
    print(f"took {elapsed:.1f} s")
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        progress("\ninterrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
