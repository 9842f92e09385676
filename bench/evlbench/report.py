# bench/evlbench/report.py
#
# Everything the benchmark shows a person, except the chart (chart.py): the
# machine and its load, one table per workload and case (the median of the
# repeats, their spread, evloop's ratio to each system from the medians), a
# scaling summary for the many-connections workload, the target lines and
# the JSON record. It works on a list of common.Measurement and nothing
# else, so it can be exercised on synthetic results.
#
# Ratios are always evloop's median divided by the other system's median, in
# the workload's own unit: above 1 is better for evloop where more is better
# (frames/s, round trips/s, requests/s), below 1 where less is better
# (ns/frame, KiB/connection). The table titles say which.
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .common import Measurement, Result, child_env
from .registry import EVLOOP, SYSTEMS, WORKLOADS

# --- the machine -------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


_PROBE = """
import inspect, json, evloop, evloop.codec
print(json.dumps({"version": evloop.__version__, "codec": evloop.codec.IMPLEMENTATION,
                  "busy_poll": "busy_poll" in inspect.signature(evloop.Loop).parameters}))
"""


def evloop_info() -> dict[str, Any]:
    """evloop's version, codec and options, asked of a fresh interpreter (the
    harness itself never imports evloop, so a broken evloop costs its rows,
    not the run)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
        )
        info: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return info
    except Exception as e:
        return {"error": repr(e)}


def load_info() -> dict[str, Any]:
    """The load averages (1, 5, 15 min) and the number of usable cores now."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    try:
        nproc = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        nproc = os.cpu_count() or 0
    return {"loadavg": load, "nproc": nproc}


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": load_info()["nproc"],
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "evloop": evloop_info(),
        "uvloop": _version("uvloop"),
        "matplotlib": _version("matplotlib"),
    }


def machine_line(info: dict[str, Any]) -> str:
    uv = info.get("uvloop") or "not installed"
    evl = info.get("evloop") or {}
    parts = [
        f"CPU: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable)",
        f"{info['python']}",
        f"{info['kernel']} {info['arch']}",
        f"evloop {evl.get('version', '?')} (codec {evl.get('codec', '?')})",
        f"uvloop {uv}",
    ]
    return "Machine: " + "; ".join(parts)


def load_line(when: str, load: dict[str, Any]) -> str:
    avg = " ".join(f"{x:.2f}" for x in load.get("loadavg") or []) or "unknown"
    return f"Load {when} the run: {avg} (1, 5, 15 min), nproc {load.get('nproc', '?')}"


# --- numbers -------------------------------------------------------------------


def number(x: float) -> str:
    """A figure, to about three significant digits, with thousands commas."""
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def skip_text(reason: str) -> str:
    """How an unsupported cell reads: the reason, marked as a skip unless it
    already says so (or says n/a)."""
    if "skipped" in reason or reason.startswith("n/a"):
        return reason
    return f"skipped: {reason}"


def _status_text(m: Measurement) -> str:
    if m.status == "unsupported":
        return skip_text(m.reason)
    if m.status == "timeout":
        return f"TIMEOUT: {m.reason}"
    if m.status == "failed":
        first = m.reason.strip().splitlines()[-1] if m.reason.strip() else "no details"
        return f"FAILED: {first}"
    return ""


def _find(ms: Sequence[Measurement], workload: str, system: str, case: str) -> Measurement | None:
    for m in ms:
        if m.workload == workload and m.system == system and m.case == case:
            return m
    return None


def _cells(ms: Sequence[Measurement]) -> list[tuple[str, str]]:
    """(workload, case) in the order first measured."""
    out: list[tuple[str, str]] = []
    for m in ms:
        if (m.workload, m.case) not in out:
            out.append((m.workload, m.case))
    return out


# --- the tables ------------------------------------------------------------------


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """The system name left-aligned, the figures right-aligned."""
    tail = "".join("  " + c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
    return "  " + cells[0].ljust(widths[0]) + tail


def _section(title: str, rows: Sequence[Measurement], evl: Measurement | None) -> list[str]:
    ok = [m for m in rows if m.ok and not m.broken]
    columns = ok[0].repeats[0].COLUMNS if ok else ()
    head_attr, head_name = columns[0] if columns else ("figure", "")
    heads = ["system", f"{head_name} (median)", "min–max", *(h for _, h in columns[1:])]
    if evl is not None:
        heads.append("evloop ×")
    full: list[list[str]] = []
    notes: dict[int, str] = {}
    for i, m in enumerate(rows):
        if m in ok:
            lo, hi = m.spread(head_attr)
            cells = [m.system, number(m.median(head_attr)), f"{number(lo)}–{number(hi)}"]
            cells += [number(m.median(a)) for a, _ in columns[1:]]
            if evl is not None:
                cells.append(ratio_text(evl, m))
            full.append(cells)
        else:
            full.append([m.system] + [""] * (len(heads) - 1))
            notes[i] = _status_text(m)
    widths = [max(len(h), *(len(r[c]) for r in full)) for c, h in enumerate(heads)]
    out = [title, _line(heads, widths)]
    for i, r in enumerate(full):
        if i in notes:
            out.append("  " + r[0].ljust(widths[0]) + "  " + notes[i])
        else:
            out.append(_line(r, widths))
    return out


def ratio(ours: Measurement | None, theirs: Measurement | None) -> float | None:
    """evloop's median over the other system's, or None if either is missing."""
    if ours is None or theirs is None or not ours.ok or not theirs.ok:
        return None
    if ours.broken or theirs.broken:
        return None
    denominator = theirs.median()
    return ours.median() / denominator if denominator > 0 else None


def ratio_text(ours: Measurement | None, theirs: Measurement) -> str:
    if ours is not None and theirs.system == ours.system:
        return "—"
    r = ratio(ours, theirs)
    return "—" if r is None else f"{r:.2f}x"


def _title(workload: str, case: str, args: argparse.Namespace | dict[str, Any]) -> str:
    params = vars(args) if isinstance(args, argparse.Namespace) else args
    about = WORKLOADS[workload].about
    try:
        about = about.format(**params)
    except (KeyError, IndexError, ValueError):
        pass
    repeat = params.get("repeat", 1)
    how = f"median of {repeat}" if repeat > 1 else "1 run (no spread)"
    return f"{workload} — {case}: {about}; {how}"


def growth(
    ms: Sequence[Measurement], system: str, mode: str = "flood"
) -> tuple[int, int, float] | None:
    """(smallest N, largest N, figure at largest / at smallest) for a
    system's many-connections runs in one mode, from the medians."""
    runs = [
        m
        for m in ms
        if m.workload == "many" and m.system == system and m.ok and m.params.get("mode") == mode
    ]
    if len(runs) < 2:
        return None
    runs.sort(key=lambda m: m.params["conns"])
    first, last = runs[0], runs[-1]
    base = first.median()
    if base <= 0:
        return None
    return first.params["conns"], last.params["conns"], last.median() / base


def _many_summary(ms: Sequence[Measurement]) -> list[str]:
    rows = [m for m in ms if m.workload == "many"]
    if not rows:
        return []
    ns = sorted({m.params["conns"] for m in rows})
    out = ["many — summary: receiver CPU ns per frame (medians) by connection count"]
    heads = ["system", "mode", *(f"N={n}" for n in ns), "growth"]
    table: list[list[str]] = []
    for mode in ("flood", "trickle"):
        for system in dict.fromkeys(m.system for m in rows):
            cells = [system, mode]
            found = False
            for n in ns:
                m = next(
                    (
                        x
                        for x in rows
                        if x.system == system
                        and x.params["mode"] == mode
                        and x.params["conns"] == n
                    ),
                    None,
                )
                if m is not None and m.ok and not m.broken:
                    cells.append(number(m.median()))
                    found = True
                else:
                    cells.append("—")
            g = growth(ms, system, mode)
            cells.append(f"{g[2]:.2f}x" if g else "—")
            if found:
                table.append(cells)
    widths = (
        [max(len(h), *(len(r[c]) for r in table)) for c, h in enumerate(heads)] if table else []
    )
    if not table:
        return []
    out.append(
        "  " + heads[0].ljust(widths[0]) + "  " + heads[1].ljust(widths[1])
        + "".join("  " + h.rjust(w) for h, w in zip(heads[2:], widths[2:], strict=True))
    )  # fmt: skip
    for r in table:
        out.append(
            "  " + r[0].ljust(widths[0]) + "  " + r[1].ljust(widths[1])
            + "".join("  " + c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True))
        )  # fmt: skip
    out.append("  growth: the figure at the largest N over the figure at N=1")
    return out


def render_tables(ms: Sequence[Measurement], args: argparse.Namespace | dict[str, Any]) -> str:
    """The results as text: one section per workload and case, each row one
    system; then the many-connections summary."""
    lines: list[str] = []
    for workload, case in _cells(ms):
        rows = [m for m in ms if m.workload == workload and m.case == case]
        evl = _find(rows, workload, EVLOOP, case)
        if lines:
            lines.append("")
        lines.extend(_section(_title(workload, case, args), rows, evl))
    summary = _many_summary(ms)
    if summary:
        lines += ["", *summary]
    return "\n".join(lines)


# --- targets -------------------------------------------------------------------
#
# Issue 8's targets, as ratios of medians measured in this one run. Each is
# PASS or MISS with its numbers, or SKIP when a side was not measured.


@dataclass(frozen=True)
class Target:
    """One goal line: status is PASS, MISS or SKIP; `value` is the ratio (or
    the absolute figure) compared with `need`."""

    name: str
    status: str
    detail: str
    value: float | None = None
    need: float | None = None


def _why_missing(m: Measurement | None) -> str:
    if m is None:
        return "not measured"
    return (m.reason.strip().splitlines() or [m.status])[-1]


def _usable(m: Measurement | None) -> bool:
    return m is not None and m.ok and not m.broken


def _best(
    ms: Sequence[Measurement], workload: str, case: str, refs: Sequence[str]
) -> Measurement | None:
    found = [m for m in (_find(ms, workload, s, case) for s in refs) if _usable(m)]
    if not found:
        return None
    better = max if found[0].repeats[0].HIGHER_IS_BETTER else min  # type: ignore[union-attr]
    return better(found, key=lambda m: m.median())  # type: ignore[union-attr]


def _against(
    name: str,
    ms: Sequence[Measurement],
    workload: str,
    case: str,
    refs: Sequence[str],
    need: float,
    at_most: bool = False,
    ours: str = EVLOOP,
    invert: bool = False,
) -> Target:
    """evloop's median over the best of `refs` must be >= need (or <= need
    with at_most). invert compares times instead of rates (1 / figure)."""
    evl = _find(ms, workload, ours, case)
    if not _usable(evl):
        return Target(name, "SKIP", f"{ours}: {_why_missing(evl)}")
    assert evl is not None
    ref = _best(ms, workload, case, refs)
    if ref is None:
        return Target(name, "SKIP", f"{' / '.join(refs)}: not measured or not available")
    a, b = evl.median(), ref.median()
    unit = evl.repeats[0].UNIT
    if invert:  # round-trip times, from the rates
        a, b, unit = 1e6 / a, 1e6 / b, "µs per round trip"
    value = a / b if b > 0 else float("inf")
    ok = value <= need if at_most else value >= need
    rel = "<=" if at_most else ">="
    detail = (
        f"{ours} {number(a)} vs {ref.system} {number(b)} {unit}: "
        f"{value:.2f}x (need {rel} {need:.2f}x)"
    )
    return Target(name, "PASS" if ok else "MISS", detail, value, need)


def _growth_target(ms: Sequence[Measurement], need: float) -> Target:
    name = f"many: evloop's flood cost grows <= {need:.1f}x from 1 to 1000 Pipes"
    g = growth(ms, EVLOOP, "flood")
    if g is None:
        return Target(name, "SKIP", "evloop: fewer than two flood connection counts measured")
    lo, hi, value = g
    note = "" if (lo, hi) == (1, 1000) else f" (measured N={lo}..{hi} only)"
    ok = value <= need
    detail = f"evloop N={lo} → N={hi}: {value:.2f}x (need <= {need:.2f}x){note}"
    return Target(name, "PASS" if ok else "MISS", detail, value, need)


def _memory_target(ms: Sequence[Measurement], need: float) -> Target:
    name = f"memory: an idle Conn+Pipe <= {need:g} KiB RSS"
    cases = [m for m in ms if m.workload == "memory" and m.system == EVLOOP]
    evl = cases[0] if cases else None
    if not _usable(evl):
        return Target(name, "SKIP", f"evloop: {_why_missing(evl)}")
    assert evl is not None
    value = evl.median()
    detail = f"evloop {value:.2f} KiB per connection ({evl.case} connections; need <= {need:g})"
    return Target(name, "PASS" if value <= need else "MISS", detail, value, need)


def _uvloop_names(workload: str) -> list[str]:
    return [n for n, s in SYSTEMS.items() if "uvloop" in s.tags and workload in s.workloads]


def _aio_names(workload: str) -> list[str]:
    return [
        n for n, s in SYSTEMS.items() if s.tags & {"uvloop", "asyncio"} and workload in s.workloads
    ]


def evaluate_targets(ms: Sequence[Measurement]) -> list[Target]:
    """Issue 8's targets, checked against this run's medians."""
    flood = next(
        (m.case for m in ms if m.workload == "many" and m.params.get("mode") == "flood"
         and m.params.get("conns") == 100),
        "flood N=100",
    )  # fmt: skip
    out: list[Target] = []
    for case in ("64 B", "1 KiB"):
        out.append(
            _against(f"recv {case}: >= 1.5x uvloop-protocol", ms, "recv", case,
                     ["uvloop-protocol"], 1.5)
        )  # fmt: skip
        out.append(
            _against(f"recv {case}: >= 60% of the Python floor", ms, "recv", case,
                     ["python-floor"], 0.6)
        )  # fmt: skip
    out.append(
        _against("many: 100 flooding Pipes cost <= uvloop's per frame", ms, "many", flood,
                 ["uvloop-protocol"], 1.0, at_most=True)
    )  # fmt: skip
    out.append(_growth_target(ms, 1.3))
    out.append(_memory_target(ms, 2.5))
    out.append(
        _against("rtt: round trips/s >= 1.0x the best uvloop", ms, "rtt", "64 B",
                 _uvloop_names("rtt"), 1.0)
    )  # fmt: skip
    out.append(
        _against("rtt: busy-poll round trip <= 1.1x a blocking socket's", ms, "rtt", "64 B",
                 ["blocking-socket"], 1.1, at_most=True, ours="evloop-busypoll", invert=True)
    )  # fmt: skip
    pool_case = next((m.case for m in ms if m.workload == "pool"), "")
    out.append(
        _against("pool: >= 1.2x the best asyncio/uvloop dispatcher", ms, "pool", pool_case,
                 _aio_names("pool"), 1.2)
    )  # fmt: skip
    for case in ("64 B", "1 KiB"):
        out.append(
            _against(f"throughput {case}: >= 2x the best uvloop", ms, "throughput", case,
                     _uvloop_names("throughput"), 2.0)
        )  # fmt: skip
    return out


def render_targets(targets: Sequence[Target]) -> str:
    lines = ["targets (issue 8; ratios of medians from this run)"]
    for t in targets:
        lines.append(f"  {t.status:<4}  {t.name}: {t.detail}")
    counts = {s: sum(t.status == s for t in targets) for s in ("PASS", "MISS", "SKIP")}
    lines.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


# --- JSON ----------------------------------------------------------------------


def _result_json(r: Result) -> dict[str, Any]:
    data = asdict(r)
    for attr, _ in r.COLUMNS:
        data[attr] = getattr(r, attr)
    return data


def measurement_json(m: Measurement) -> dict[str, Any]:
    data: dict[str, Any] = {
        "workload": m.workload,
        "system": m.system,
        "case": m.case,
        "params": m.params,
        "status": m.status,
        "reason": m.reason,
        "repeats": [_result_json(r) for r in m.repeats],
    }
    if m.repeats:
        r0 = m.repeats[0]
        attrs = ["figure", *(a for a, _ in r0.COLUMNS)]
        data["unit"] = r0.UNIT
        data["higher_is_better"] = r0.HIGHER_IS_BETTER
        data["median"] = {a: m.median(a) for a in attrs}
        data["min"] = {a: m.spread(a)[0] for a in attrs}
        data["max"] = {a: m.spread(a)[1] for a in attrs}
    return data


def _ratios(ms: Sequence[Measurement]) -> list[dict[str, Any]]:
    out = []
    for workload, case in _cells(ms):
        evl = _find(ms, workload, EVLOOP, case)
        for m in ms:
            if m.workload == workload and m.case == case and m.system != EVLOOP:
                r = ratio(evl, m)
                if r is not None:
                    out.append(
                        {"workload": workload, "case": case, "system": m.system, "evloop_ratio": r}
                    )
    return out


def write_json(
    path: Path,
    machine: dict[str, Any],
    args: dict[str, Any],
    ms: Sequence[Measurement],
    targets: Sequence[Target],
) -> None:
    data = {
        "machine": machine,
        "args": args,
        "measurements": [measurement_json(m) for m in ms],
        "ratios": _ratios(ms),
        "targets": [asdict(t) for t in targets],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_measurements(data: dict[str, Any]) -> list[Measurement]:
    """Measurements back from a JSON record (to redraw a chart or a table)."""
    out = []
    for d in data["measurements"]:
        cls = WORKLOADS[d["workload"]].result
        fields = cls.__dataclass_fields__
        repeats = [cls(**{k: v for k, v in r.items() if k in fields}) for r in d["repeats"]]
        out.append(
            Measurement(d["workload"], d["system"], d["case"], d["params"], d["status"],
                        d["reason"], repeats)
        )  # fmt: skip
    return out
