# bench/evlbench/report.py
#
# Everything the benchmark shows a person: the machine it ran on, the table
# of figures with evloop's ratio to each system, the target lines, the JSON
# record and the chart. It works on a list of common.Measurement and nothing
# else, so it can be exercised on synthetic results.
from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .common import (
    EVLOOP,
    RTT_SIZE,
    UVLOOP_SYSTEMS,
    Latency,
    Measurement,
    PoolResult,
    Result,
    Throughput,
    size_label,
)

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


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "uvloop": _version("uvloop"),
        "matplotlib": _version("matplotlib"),
        "loadavg": load,
    }


def machine_line(info: dict[str, Any]) -> str:
    load = " ".join(f"{x:.2f}" for x in info.get("loadavg") or [])
    uv = info.get("uvloop") or "not installed"
    parts = [
        f"CPU: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable)",
        f"{info['python']}",
        f"{info['kernel']} {info['arch']}",
        f"uvloop {uv}",
    ]
    if info.get("evloop_codec"):
        parts.append(f"evloop codec {info['evloop_codec']}")
    if load:
        parts.append(f"load {load}")
    return "Machine: " + "; ".join(parts)


# --- the table -----------------------------------------------------------------


def _find(
    ms: Iterable[Measurement], workload: str, system: str, size: int | None = None
) -> Measurement | None:
    for m in ms:
        if m.workload == workload and m.system == system and m.size == size:
            return m
    return None


def _ratio(ours: Measurement | None, theirs: Measurement) -> str:
    if theirs.system == EVLOOP or ours is None or not ours.ok or not theirs.ok:
        return "—"
    assert ours.result is not None and theirs.result is not None
    if theirs.result.figure <= 0:
        return "—"
    return f"{ours.result.figure / theirs.result.figure:.2f}x"


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


def _figures(r: Result) -> list[str]:
    if isinstance(r, Throughput):
        return [f"{r.frames_per_s:,.0f}", f"{r.mb_per_s:,.1f}"]
    if isinstance(r, Latency):
        return [f"{r.per_s:,.0f}", f"{r.mean_us:,.1f}", f"{r.p99_us:,.1f}"]
    return [f"{r.per_s:,.0f}"]


_COLUMNS = {
    "throughput": ["frames/s", "MB/s"],
    "rtt": ["round trips/s", "mean µs", "p99 µs"],
    "pool": ["requests/s"],
}


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """The system name left-aligned, the figures right-aligned."""
    tail = "".join("  " + c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
    return "  " + cells[0].ljust(widths[0]) + tail


def _section(
    title: str, workload: str, rows: Sequence[Measurement], evl: Measurement | None
) -> list[str]:
    """One table. The ratio column appears when evloop was part of the run."""
    heads = ["system", *_COLUMNS[workload]] + (["evloop ×"] if evl is not None else [])
    full: list[list[str]] = []
    notes: dict[int, str] = {}  # row -> why it has no figures
    for i, m in enumerate(rows):
        if m.ok and not m.broken:
            assert m.result is not None
            ratio = [_ratio(evl, m)] if evl is not None else []
            full.append([m.system, *_figures(m.result), *ratio])
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


def render_table(ms: Sequence[Measurement], params: dict[str, Any]) -> str:
    """The results as text: one section per workload (and frame size), each
    row one system, the last column evloop's figure divided by that row's."""
    lines: list[str] = []
    order = {"throughput": 0, "rtt": 1, "pool": 2}
    cells: list[tuple[str, int | None]] = []
    for m in ms:
        if (m.workload, m.size) not in cells:
            cells.append((m.workload, m.size))
    cells.sort(key=lambda c: (order.get(c[0], 9), c[1] or 0))
    best = f", best of {params['repeat']}" if params.get("repeat", 1) > 1 else ""
    for workload, size in cells:
        rows = [m for m in ms if m.workload == workload and m.size == size]
        evl = _find(rows, workload, EVLOOP, size)
        if workload == "throughput":
            assert size is not None
            title = f"throughput: {size_label(size)} frames, one way, {params.get('duration', 0):g} s{best}"
        elif workload == "rtt":
            title = f"rtt: {params.get('count', 0):,} sequential round trips of {RTT_SIZE} B frames{best}"
        else:
            title = (
                f"pool: {params.get('workers', 0)} workers, window {params.get('window', 0)} per worker, "
                f"{params.get('requests', 0):,} requests of {RTT_SIZE} B{best}"
            )
        if lines:
            lines.append("")
        lines.extend(_section(title, workload, rows, evl))
    return "\n".join(lines)


# --- targets -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One goal line: status is PASS, MISS or SKIP; ratio is evloop's figure
    over the reference's, need the ratio that passes."""

    name: str
    status: str
    detail: str
    ratio: float | None = None
    need: float | None = None


def _best(
    ms: Sequence[Measurement], workload: str, systems: Sequence[str], size: int | None
) -> Measurement | None:
    found = [m for m in (_find(ms, workload, s, size) for s in systems) if m is not None and m.ok]
    return max(found, key=lambda m: m.result.figure if m.result else 0.0, default=None)


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.2f} {unit}"


def _target(
    name: str,
    ms: Sequence[Measurement],
    workload: str,
    size: int | None,
    refs: Sequence[str],
    need: float,
    metric: Callable[[Any], float],
    unit: str,
) -> Target:
    evl = _find(ms, workload, EVLOOP, size)
    if evl is None or not evl.ok:
        why = (
            "not measured" if evl is None else (evl.reason.strip().splitlines() or [evl.status])[-1]
        )
        return Target(name, "SKIP", f"evloop: {why}")
    ref = _best(ms, workload, refs, size)
    if ref is None:
        return Target(name, "SKIP", f"{' / '.join(refs)}: not measured or not available")
    ours, theirs = metric(evl.result), metric(ref.result)
    ratio = ours / theirs if theirs > 0 else float("inf")
    status = "PASS" if ratio >= need else "MISS"
    detail = f"evloop {_fmt(ours, unit)} vs {ref.system} {_fmt(theirs, unit)}: {ratio:.2f}x (need {need:.2f}x)"
    return Target(name, status, detail, ratio, need)


def evaluate_targets(ms: Sequence[Measurement]) -> list[Target]:
    """The project's goals, checked against this run. At one frame size the
    frames/s ratio and the MB/s ratio are the same number."""
    uv = list(UVLOOP_SYSTEMS)

    def frames(r: Throughput) -> float:
        return r.frames_per_s

    def mb(r: Throughput) -> float:
        return r.mb_per_s

    def trips(r: Latency) -> float:
        return r.per_s

    return [
        _target(
            "64 B frames/s >= 2x best uvloop", ms, "throughput", 64, uv, 2.0, frames, "frames/s"
        ),
        _target("1 KiB MB/s >= 2x best uvloop", ms, "throughput", 1024, uv, 2.0, mb, "MB/s"),
        _target("1 MiB MB/s >= 70% of C", ms, "throughput", 1 << 20, ["c"], 0.7, mb, "MB/s"),
        _target(
            "rtt round trips/s >= best uvloop", ms, "rtt", None, uv, 1.0, trips, "round trips/s"
        ),
    ]


def render_targets(targets: Sequence[Target]) -> str:
    lines = ["targets"]
    for t in targets:
        lines.append(f"  {t.status:<4}  {t.name}: {t.detail}")
    return "\n".join(lines)


# --- JSON ----------------------------------------------------------------------


def _result_json(r: Result) -> dict[str, Any]:
    data = asdict(r)
    if isinstance(r, Throughput):
        data.update(frames_per_s=r.frames_per_s, mb_per_s=r.mb_per_s)
    elif isinstance(r, (Latency, PoolResult)):
        data.update(per_s=r.per_s)
    return data


def measurement_json(m: Measurement) -> dict[str, Any]:
    return {
        "workload": m.workload,
        "system": m.system,
        "size": m.size,
        "status": m.status,
        "reason": m.reason,
        "result": _result_json(m.result) if m.result is not None else None,
        "repeats": [_result_json(r) for r in m.repeats],
    }


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
        "targets": [asdict(t) for t in targets],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- chart ---------------------------------------------------------------------


def draw_chart(path: Path, ms: Sequence[Measurement], machine: dict[str, Any]) -> str | None:
    """Throughput by frame size, MB/s and frames/s, one line per system, on
    log-log axes. Returns None when drawn, or why it was not."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return "matplotlib not installed — chart skipped"
    series: dict[str, list[Throughput]] = {}
    for m in ms:
        if (
            m.workload == "throughput"
            and m.ok
            and isinstance(m.result, Throughput)
            and m.result.seconds > 0
            and m.result.frames > 0
        ):
            series.setdefault(m.system, []).append(m.result)
    if not series:
        return "no throughput results to chart"
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    ax_mb, ax_fr = fig.subplots(1, 2)
    sizes = sorted({r.size for rs in series.values() for r in rs})
    for name, results in series.items():
        results.sort(key=lambda r: r.size)
        xs = [r.size for r in results]
        style: dict[str, Any] = {"marker": "o", "linewidth": 1.4, "markersize": 4}
        if name.startswith("evloop"):
            style.update(linewidth=2.8, markersize=7, linestyle="-" if name == EVLOOP else "--")
        elif name == "c":
            style.update(color="black", linestyle=":")
        ax_mb.plot(xs, [r.mb_per_s for r in results], label=name, **style)
        ax_fr.plot(xs, [r.frames_per_s for r in results], label=name, **style)
    for ax, label in ((ax_mb, "MB/s (1 MB = 10⁶ bytes)"), (ax_fr, "frames/s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [size_label(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("payload per frame")
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    ax_mb.set_title("one-way throughput, MB/s")
    ax_fr.set_title("one-way throughput, frames/s")
    ax_fr.legend(loc="best", fontsize="small")
    fig.suptitle(
        f"evloop vs peers — {machine.get('cpu', '?')}, {machine.get('usable_cores', '?')} cores, {machine.get('python', '?')}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return None
