# bench/evlbench/__main__.py
#
# The harness: `make bench`, or `PYTHONPATH=bench python -m evlbench` from
# the source tree. It measures every selected workload on every selected
# system that takes part in it, N times, in one run; then prints one table
# per workload and case with the median of the repeats, their spread
# (min-max) and evloop's ratio to each system (from the medians), the target
# lines, and writes the JSON record and the chart.
#
# Each measurement runs in a process of its own (evlbench.measure) in a new
# session, under a hard timeout: a system that hangs or crashes is killed
# with its whole process group, recorded as failed, and the run moves on.
# Systems are imported here only once selected, so evloop's runners failing
# to import is one clear error, not the end of the run. The cells are
# measured in the order workload, case, repeat, system: the systems
# alternate, so a burst of noise on the machine hurts them alike.
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
from .common import Measurement, Result, child_env, parse_size
from .registry import SYSTEMS, WORKLOADS, systems_for

# (full run, --quick); --quick runs every workload and system with tiny counts.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "repeat": (3, 1),
    "duration": (1.0, 0.1),
    "sizes": ([64, 1024, 64 * 1024, 1 << 20], [64, 1 << 20]),
    "recv_sizes": ([64, 1024], [64]),
    "send_sizes": ([64, 1024], [64]),
    "many_conns": ([1, 10, 100, 1000], [1, 10]),
    "many_frames": (300_000, 5_000),
    "many_duration": (0.5, 0.1),
    "memory_conns": (10_000, 200),
    "count": (10_000, 300),
    "requests": (50_000, 1_000),
}
# Workloads whose cells need the C peers (bench/cpeer.c).
CPEER_WORKLOADS = ("recv", "send", "many")


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _sizes(text: str) -> list[int]:
    return [parse_size(s) for s in _comma_list(text)]


def _ints(text: str) -> list[int]:
    return [int(s) for s in _comma_list(text)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evlbench",
        description="evloop against asyncio, uvloop, multiprocessing, plain Python and C, "
        "on this machine, in one run: medians of N repeats with their spread.",
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
        "--repeat",
        type=int,
        help="runs of each measurement; the table shows "
        "their median and min-max (default 3; --quick 1)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: every workload and system with tiny counts"
    )
    g = p.add_argument_group("workload parameters (defaults: full run / --quick)")
    g.add_argument(
        "--duration", type=float, help="seconds per throughput, recv and send measurement (1 / 0.1)"
    )
    g.add_argument("--sizes", type=_sizes, help="throughput frame sizes (64,1K,64K,1M / 64,1M)")
    g.add_argument("--recv-sizes", type=_sizes, help="recv frame sizes (64,1K / 64)")
    g.add_argument("--send-sizes", type=_sizes, help="send frame sizes (64,1K / 64)")
    g.add_argument(
        "--batch",
        type=int,
        default=256,
        help="frames per write of the C writer (recv, many flood; default 256)",
    )
    g.add_argument("--many-conns", type=_ints, help="connection counts (1,10,100,1000 / 1,10)")
    g.add_argument(
        "--many-modes",
        type=_comma_list,
        default=["flood", "trickle"],
        help="flood,trickle (default both)",
    )
    g.add_argument(
        "--many-frames", type=int, help="frames per flood measurement, in all (300000 / 5000)"
    )
    g.add_argument(
        "--many-duration", type=float, help="seconds per trickle measurement (0.5 / 0.1)"
    )
    g.add_argument(
        "--trickle",
        type=int,
        default=4,
        help="trickle: frames per connection per write (default 4)",
    )
    g.add_argument(
        "--pause-us",
        type=int,
        default=100,
        help="trickle: pause after each write, µs (default 100)",
    )
    g.add_argument("--memory-conns", type=int, help="idle connections (10000 / 200)")
    g.add_argument("--count", type=int, help="rtt round trips (10000 / 300)")
    g.add_argument("--requests", type=int, help="pool requests (50000 / 1000)")
    g.add_argument("--workers", type=int, default=4, help="pool worker processes (default 4)")
    g.add_argument(
        "--window", type=int, default=32, help="pool requests outstanding per worker (default 32)"
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--timeout",
        type=float,
        help="hard timeout per measurement in seconds (default: from its parameters)",
    )
    o.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results/results.json"),
        help="where to write the results (default %(default)s)",
    )
    o.add_argument(
        "--png",
        type=Path,
        default=Path("bench-results/bench.png"),
        help="where to draw the chart (default %(default)s)",
    )
    o.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    args = p.parse_args(argv)
    for name in args.workloads:
        if name not in WORKLOADS:
            p.error(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    for name in args.systems:
        if name not in SYSTEMS:
            p.error(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    for mode in args.many_modes:
        if mode not in ("flood", "trickle"):
            p.error(f"unknown --many-modes entry {mode!r}; choose from flood, trickle")
    for key, (full, quick) in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    positive = (
        "repeat",
        "duration",
        "batch",
        "many_frames",
        "many_duration",
        "trickle",
        "memory_conns",
        "count",
        "requests",
        "workers",
        "window",
    )
    bad = [k for k in positive if getattr(args, k) <= 0]
    bad += [
        k
        for k in ("sizes", "recv_sizes", "send_sizes", "many_conns")
        if not getattr(args, k) or min(getattr(args, k)) < 1
    ]
    if args.pause_us < 0:
        bad.append("pause_us")
    if bad:
        p.error("must be positive: " + ", ".join("--" + k.replace("_", "-") for k in bad))
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


# --- progress ------------------------------------------------------------------


def progress(text: str, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


def describe(result: Result) -> str:
    """One repeat's figures, for the progress line."""
    parts = []
    for attr, heading in result.COLUMNS:
        parts.append(f"{report.number(float(getattr(result, attr)))} {heading}")
    return "  ".join(parts)


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


def prepare(names: list[str], workloads: list[str]) -> dict[str, SystemState]:
    """Import each selected system's module (lazily: only the selected ones),
    ask it whether it can run here, and build the C programs once."""
    states: dict[str, SystemState] = {}
    loaded: dict[str, Any] = {}
    failed_imports: dict[str, str] = {}
    for name in names:
        system = SYSTEMS[name]
        if not any(w in system.workloads for w in workloads):
            continue
        state = SystemState(name, system.module, dict(system.opts))
        states[name] = state
        if system.module in failed_imports:
            state.broken = failed_imports[system.module]
            progress(f"error: system {name!r} uses {system.module} too: not measured either")
            continue
        try:
            if system.module not in loaded:
                loaded[system.module] = importlib.import_module(system.module)
        except Exception:
            state.broken = f"{system.module} failed to import:\n{traceback.format_exc()}"
            failed_imports[system.module] = state.broken
            progress(f"error: system {name!r} cannot be loaded: {state.broken.rstrip()}")
            progress(f"error: continuing without {name!r}; the run will exit non-zero")
            continue
        check = getattr(loaded[system.module], "unavailable", None)
        reason = check(**state.opts) if check is not None else None
        if reason:
            state.unavailable = reason
            progress(f"note: {name}: {report.skip_text(reason)}")
    return states


def build_c(states: dict[str, SystemState], workloads: list[str]) -> dict[str, str]:
    """Compile the C programs the run needs, once, before any measurement.
    Returns workload -> why its cells cannot run (a failed build)."""
    from . import ceiling, cpeer

    broken: dict[str, str] = {}
    programs: list[tuple[Any, tuple[str, ...] | None]] = []
    if "c" in states and not states["c"].unavailable:
        programs.append((ceiling.PROGRAM, None))
    if any(w in CPEER_WORKLOADS for w in workloads):
        programs.append((cpeer.PROGRAM, CPEER_WORKLOADS))
    for program, needed_by in programs:
        if program.unavailable():
            continue  # the cells say why (Unsupported)
        try:
            progress(f"building {program.binary} from {program.source} ...", end=" ")
            program.path()
            progress("ok")
        except Exception as e:
            progress("FAILED")
            why = f"could not build {program.source.name}: {e}"
            progress(f"error: {why}")
            if needed_by is None:
                states["c"].broken = why
            else:
                broken.update(dict.fromkeys(needed_by, why))
    return broken


def run(args: argparse.Namespace) -> int:
    machine = report.machine_info()
    load_before = report.load_info()
    progress(report.machine_line(machine))
    progress(report.load_line("before", load_before))
    states = prepare(args.systems, args.workloads)
    workload_broken = build_c(states, args.workloads)
    plan = []  # (workload, case, systems)
    for name in args.workloads:
        systems = [s for s in systems_for(name, args.systems) if s in states]
        for case in WORKLOADS[name].cases(args):
            plan.append((name, case, systems))
    total = sum(len(systems) for _, _, systems in plan) * args.repeat
    progress(f"{total} measurements ({args.repeat} of each cell)")
    step = 0
    measurements: list[Measurement] = []
    started = time.monotonic()
    for workload, case, systems in plan:
        row = {s: Measurement(workload, s, case.label, dict(case.params)) for s in systems}
        measurements.extend(row.values())
        timeout = args.timeout or WORKLOADS[workload].timeout(case.params)
        for rep in range(args.repeat):
            for name in systems:
                step += 1
                state, m = states[name], row[name]
                rep_text = f" ({rep + 1}/{args.repeat})" if args.repeat > 1 else ""
                label = f"[{step:>3}/{total}] {workload} {case.label:<14} {name:<24}{rep_text}"
                broken = state.broken or workload_broken.get(workload, "")
                if broken:
                    m.status, m.reason = "failed", broken
                    if rep == 0:
                        progress(f"{label} FAILED: could not load or build")
                    continue
                if m.broken:
                    continue  # one failed repeat fails the cell; do not run it again
                if state.unavailable or m.status == "unsupported":
                    m.status = "unsupported"
                    m.reason = m.reason or state.unavailable
                    if rep == 0:
                        progress(f"{label} {report.skip_text(m.reason)}")
                    continue
                progress(f"{label} ...", end=" ")
                spec = {
                    "system": name,
                    "module": state.module,
                    "opts": state.opts,
                    "workload": workload,
                    "params": case.params,
                }
                t0 = time.monotonic()
                record = run_one(spec, timeout)
                took = time.monotonic() - t0
                status = record["status"]
                if status == "ok":
                    result = WORKLOADS[workload].result(**record["result"])
                    m.repeats.append(result)
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
    load_after = report.load_info()
    targets = report.evaluate_targets(measurements)

    print()
    print(report.machine_line(machine))
    print(report.load_line("before", load_before))
    print(report.load_line("after ", load_after))
    print()
    print(report.render_tables(measurements, args))
    print()
    print(report.render_targets(targets))
    print()

    failed = [m for m in measurements if m.broken]
    exit_code = 1 if failed else 0
    args_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args_json["elapsed_s"] = round(elapsed, 3)
    machine["load_before"], machine["load_after"] = load_before, load_after
    try:
        report.write_json(args.json, machine, args_json, measurements, targets)
        print(f"results: {args.json}")
    except OSError as e:
        print(f"error: could not write {args.json}: {e}", file=sys.stderr)
        exit_code = 1
    if not args.no_chart:
        from . import chart

        try:
            why = chart.draw_chart(args.png, measurements, machine)
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
