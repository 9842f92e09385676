# bench/evlbench/chart.py
#
# The chart: one PNG with a panel per workload (throughput by size in
# frames/s and MB/s, receive only, send only, the many-connections scaling
# curve, round trip, pool, memory). Every point or bar is the median of the
# repeats, with a line from min to max; every panel names its unit. A system
# keeps its colour in every panel; evloop's rows are drawn heaviest.
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import Measurement, size_label
from .registry import EVLOOP, SYSTEMS


def _colours() -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {name: cmap(i % 20) for i, name in enumerate(SYSTEMS)}


def _ok(ms: Sequence[Measurement], workload: str) -> list[Measurement]:
    return [m for m in ms if m.workload == workload and m.ok and not m.broken]


def _err(m: Measurement, attr: str) -> tuple[float, float, float]:
    med = m.median(attr)
    lo, hi = m.spread(attr)
    return med, med - lo, hi - med


def _lines(
    ax: Any,
    rows: list[Measurement],
    x_attr: str,
    attr: str,
    colours: dict[str, Any],
    dashed: bool = False,
    suffix: str = "",
) -> None:
    by_system: dict[str, list[Measurement]] = {}
    for m in rows:
        by_system.setdefault(m.system, []).append(m)
    for name, series in by_system.items():
        series.sort(key=lambda m: m.params[x_attr])
        xs = [m.params[x_attr] for m in series]
        meds, lows, highs = zip(*(_err(m, attr) for m in series), strict=True)
        heavy = name.startswith(EVLOOP)
        ax.errorbar(
            xs, meds, yerr=[lows, highs], label=name + suffix, color=colours.get(name),
            marker="o", markersize=6 if heavy else 3.5, linewidth=2.6 if heavy else 1.2,
            linestyle="--" if dashed else "-", capsize=2,
        )  # fmt: skip


def _bars(ax: Any, rows: list[Measurement], attr: str, colours: dict[str, Any]) -> None:
    """Grouped bars: one group per case, one bar per system."""
    cases = list(dict.fromkeys(m.case for m in rows))
    systems = list(dict.fromkeys(m.system for m in rows))
    width = 0.8 / max(1, len(systems))
    for j, name in enumerate(systems):
        xs, meds, lows, highs = [], [], [], []
        for i, case in enumerate(cases):
            m = next((r for r in rows if r.system == name and r.case == case), None)
            if m is None:
                continue
            med, lo, hi = _err(m, attr)
            xs.append(i + (j - (len(systems) - 1) / 2) * width)
            meds.append(med)
            lows.append(lo)
            highs.append(hi)
        heavy = name.startswith(EVLOOP)
        ax.bar(
            xs, meds, width * 0.95, yerr=[lows, highs], label=name, color=colours.get(name),
            edgecolor="black" if heavy else "none", linewidth=1.5, capsize=2,
        )  # fmt: skip
    ax.set_xticks(range(len(cases)), cases)


def draw_chart(path: Path, ms: Sequence[Measurement], machine: dict[str, Any]) -> str | None:
    """Draw every workload that has results. Returns None when drawn, or why
    it was not."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return "matplotlib not installed — chart skipped"
    if not any(m.ok for m in ms):
        return "no results to chart"
    colours = _colours()
    fig = Figure(figsize=(22, 10.5), layout="constrained")
    axes = fig.subplots(2, 4).flatten()
    panels = iter(axes)
    drawn: list[Any] = []

    tp = _ok(ms, "throughput")
    for attr, unit in (("frames_per_s", "frames/s"), ("mb_per_s", "MB/s (10⁶ bytes)")):
        if not tp:
            break
        ax = next(panels)
        _lines(ax, tp, "size", attr, colours)
        sizes = sorted({m.params["size"] for m in tp})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [size_label(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("payload per frame")
        ax.set_ylabel(unit)
        ax.set_title(f"throughput end to end, {unit.split(' ')[0]} (higher: better)")
        drawn.append(ax)

    for workload, attr, title, unit, log in (
        ("recv", "frames_per_s", "receive only (C writer)", "frames/s", False),
        ("send", "frames_per_s", "send only (C reader)", "frames/s", True),
    ):
        rows = _ok(ms, workload)
        if rows:
            ax = next(panels)
            _bars(ax, rows, attr, colours)
            if log:
                ax.set_yscale("log")
            ax.set_ylabel(unit)
            ax.set_title(f"{title}, {unit} (higher: better)")
            drawn.append(ax)

    many = _ok(ms, "many")
    if many:
        ax = next(panels)
        for mode in ("flood", "trickle"):
            rows = [m for m in many if m.params["mode"] == mode]
            _lines(ax, rows, "conns", "cpu_ns_per_frame", colours, mode == "trickle", f" {mode}")
        ns = sorted({m.params["conns"] for m in many})
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("connections on one loop (solid: flood, dashed: trickle)")
        ax.set_ylabel("receiver CPU ns per frame")
        ax.set_title("many connections, CPU ns/frame (lower: better)")
        drawn.append(ax)

    for workload, attr, title, unit, log in (
        ("rtt", "mean_us", "round trip 64 B", "mean µs", False),
        ("pool", "per_s", "pool", "requests/s", False),
        ("memory", "kib_per_conn", "idle connection", "KiB RSS each", True),
    ):
        rows = _ok(ms, workload)
        if rows:
            ax = next(panels, None)
            if ax is None:
                break
            _bars(ax, rows, attr, colours)
            if log:
                from matplotlib.ticker import LogLocator, ScalarFormatter

                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(ScalarFormatter())
                ax.yaxis.set_minor_formatter(ScalarFormatter(useOffset=False))
                ax.minorticks_off()
            ax.set_ylabel(unit)
            better = (
                "higher" if rows[0].repeats[0].HIGHER_IS_BETTER and attr != "mean_us" else "lower"
            )
            ax.set_title(f"{title}, {unit} ({better}: better)")
            drawn.append(ax)

    for ax in axes:
        if ax in drawn:
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(loc="best", fontsize="x-small")
        else:
            ax.set_visible(False)
    load = machine.get("load_before", {}).get("loadavg") or []
    load_after = machine.get("load_after", {}).get("loadavg") or []
    fig.suptitle(
        f"evloop vs peers — medians with min–max — {machine.get('cpu', '?')}, "
        f"{machine.get('usable_cores', '?')} cores, {machine.get('python', '?')}; "
        f"load {' '.join(map(str, load))} → {' '.join(map(str, load_after))}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return None
