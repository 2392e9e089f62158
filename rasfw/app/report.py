"""Tables and plots of a sweep: `results.csv`, `results.md` and PNGs (each with its data as CSV beside it).

Written by the Hydra callback `rasfw.app.callbacks.ResultsCallback` at the end of every `python -m rasfw -m ...` multirun, and
rebuilt later, or from a sweep that ran elsewhere, with `python -m rasfw.app.report <sweep folder>`.

Rows are the sweep's jobs (each job folder's `summary.json`); columns are the swept keys (the overrides
whose values differ between jobs) and the metrics. Plots: quality against FLOP ratio and against measured
time ratio (the Pareto planes), and one chart of the ablation (quality per job).

Jobs that recorded per-prompt data (`rasfw.app.stats`) add their 95 % intervals: `<metric>_ci_low` and
`<metric>_ci_high` columns and `<metric>_distinguishable` (from the dense baseline's same metric) in the CSV,
`756 [701, 812]` cells with `≈` for "not distinguishable from dense" in the markdown, and error bars in the
plots. Older summaries report as before, without them.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from rasfw.app import stats
from rasfw.checks import first_line

METRICS = (
    "method", "sampler", "cache", "steps", "flops_ratio", "time_ratio", "speedup", "time_s", "dense_time_s",
    "alignment_accuracy", "dense_alignment_accuracy", "fd", "dense_fd", "sfd", "psnr_vs_dense", "ssim_vs_dense",
    "object_update_share", "object_area_share", "prompt_count",
)  # fmt: skip
CI_COLUMNS = (
    *(f"{m}_ci_{end}" for m in stats.METRICS for end in ("low", "high")),
    *(f"{m}_distinguishable" for m, _ in stats.VS_DENSE),
)
"""The columns a sweep's CSV gains when its jobs recorded per-prompt data (present only then)."""
QUALITY = (
    ("alignment_accuracy", "alignment accuracy (higher is better)"),
    ("fd", "FD (lower is better)"),
    ("psnr_vs_dense", "PSNR vs dense, dB (higher is better)"),
)


def collect(folder: Path) -> list[dict[str, Any]]:
    """One row per job folder under `folder` that holds a `summary.json`, in job order."""
    rows = []
    summaries = sorted(folder.glob("*/summary.json"), key=lambda p: (not p.parent.name.isdigit(), _job_order(p)))
    for path in summaries:
        summary = stats.read_summary(path)
        overrides = dict(_split(o) for o in summary.get("overrides", []) if "=" in o)
        rows.append({"job": path.parent.name, "overrides": overrides, **_metrics(summary)})
    return rows


def _job_order(path: Path) -> tuple[int, str]:
    name = path.parent.name
    return (int(name), name) if name.isdigit() else (0, name)


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _metrics(summary: dict[str, Any]) -> dict[str, Any]:
    speedup = summary.get("speedup")
    row = {key: summary.get(key) for key in METRICS if key in summary}
    row["time_ratio"] = None if not speedup else 1.0 / speedup
    row["method"] = method_label(summary)
    row["ci"] = summary.get("ci") or {}  # {metric: [low, high]}; none in summaries older than rasfw.app.stats
    row["vs_dense"] = summary.get("vs_dense") or {}
    return row


def method_label(summary: dict[str, Any]) -> str:
    """The method family of a job: RAS, a step cache, RAS beside a step cache, dense with fewer steps, or dense."""
    cache = summary.get("cache") or "none"
    if summary.get("sampler") == "dense":
        if cache != "none":
            return f"cache: {cache}"
        return "dense, fewer steps" if summary.get("steps") != summary.get("full_steps") else "dense"
    return "RAS" if cache == "none" else f"RAS + cache: {cache}"


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys whose values differ between jobs (a key missing from a job counts as a value)."""
    keys = sorted({k for row in rows for k in row["overrides"]})
    return [k for k in keys if len({row["overrides"].get(k) for row in rows}) > 1]


def write_report(folder: Path) -> list[Path]:
    """Write `results.csv`, `results.md` and the plots into `folder`; return the files written."""
    rows = collect(folder)
    if not rows:
        return []
    swept = swept_keys(rows)
    metrics = [m for m in METRICS if m not in swept]  # a swept `sampler` is already a column
    table = [{"job": r["job"], **{m: r.get(m) for m in metrics}, **{k: r["overrides"].get(k, "") for k in swept},
              **ci_cells(r), "ci": r["ci"], "vs_dense": r["vs_dense"]} for r in rows]  # fmt: skip
    recorded = [c for c in CI_COLUMNS if any(row.get(c) is not None for row in table)]
    columns = ["job", *swept, *metrics, *recorded]
    written = [_write_csv(folder / "results.csv", columns, table)]
    title = sweep_title(folder, rows)
    (folder / "results.md").write_text(markdown(columns, table, title))
    written.append(folder / "results.md")
    written += plot_pareto(folder, table, swept, title)
    written += plot_ablation(folder, table, swept, title)
    return written


def _write_csv(path: Path, columns: list[str], table: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: _cell(row.get(k)) for k in columns} for row in table)
    return path


def ci_cells(row: dict[str, Any]) -> dict[str, Any]:
    """A row's interval columns (`CI_COLUMNS`) from its summary's `ci` and `vs_dense`; None where not recorded.

    Args:
        row: a row of `collect` (its `ci` and `vs_dense`).
    """
    cells: dict[str, Any] = {}
    for metric in stats.METRICS:
        low, high = row["ci"].get(metric) or (None, None)
        cells |= {f"{metric}_ci_low": low, f"{metric}_ci_high": high}
    for metric, _ in stats.VS_DENSE:
        vs = row["vs_dense"].get(metric)
        cells[f"{metric}_distinguishable"] = None if vs is None else vs["distinguishable"]
    return cells


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else value


def markdown(columns: list[str], table: list[dict[str, Any]], title: str) -> str:
    """The results as one markdown table (columns that are empty in every row are left out).

    A metric with an interval reads `756 [701, 812]`, with `≈` when it is not distinguishable from the dense
    baseline's; the interval columns of the CSV are not repeated, and a legend line says what the cells mean.

    Args:
        columns: the CSV's columns.
        table: the rows (with each job's `ci` and `vs_dense`).
        title: the sweep's name.
    """
    shown = [c for c in columns if c not in CI_COLUMNS and any(row.get(c) not in (None, "") for row in table)]
    lines = [f"Sweep `{title}`: {len(table)} jobs\n"]
    if any(row.get("ci") for row in table):
        lines.append(stats.legend() + "\n")
    lines += ["| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
    for row in table:
        lines.append("| " + " | ".join(_markdown_cell(row, c) for c in shown) + " |")
    return "\n".join(lines) + "\n"


def _markdown_cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value in (None, ""):
        return "—"
    ci = (row.get("ci") or {}).get(column)
    if ci is None:
        return str(_cell(value))
    return stats.with_ci(value, ci, same=stats.not_distinguishable(row.get("vs_dense"), column))


def _label(row: dict[str, Any], swept: list[str]) -> str:
    """`value=0.25, taylor1`: the swept values, each under its last key part; a point group's file name alone."""
    parts = [str(row[k]) if k.endswith("_point") else f"{k.rsplit('.', 1)[-1]}={row[k]}"
             for k in swept if row.get(k) not in (None, "")]  # fmt: skip
    return ", ".join(parts) or row["job"]


def _errors(rows: list[dict[str, Any]], metric: str) -> list[list[float]] | None:
    """Asymmetric error bars `[below, above]` of `metric` from the rows' intervals (0 where a row has none);
    None when no row has one.

    Args:
        rows: table rows with their `ci`.
        metric: the plotted metric.
    """
    cis = [(r.get("ci") or {}).get(metric) for r in rows]
    if all(ci is None for ci in cis):
        return None
    below = [0.0 if ci is None or r.get(metric) is None else max(r[metric] - ci[0], 0.0) for r, ci in zip(rows, cis, strict=True)]
    above = [0.0 if ci is None or r.get(metric) is None else max(ci[1] - r[metric], 0.0) for r, ci in zip(rows, cis, strict=True)]
    return [below, above]


def _dense_ci(rows: list[dict[str, Any]], metric: str) -> list[float] | None:
    """The dense baseline's interval of `metric`, as the first row that recorded one holds it."""
    return next(((r.get("ci") or {})[f"dense_{metric}"] for r in rows if f"dense_{metric}" in (r.get("ci") or {})), None)


def _ci_data(rows: list[dict[str, Any]], metrics: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The interval columns of a plot's CSV for `metrics` and their dense baselines (only those recorded)."""
    names = [f"{p}{m}_ci_{end}" for m in metrics for p in ("", "dense_") for end in ("low", "high")]
    data = [{f"{p}{m}_ci_{end}": ((r.get("ci") or {}).get(f"{p}{m}") or (None, None))[i]
             for m in metrics for p in ("", "dense_") for i, end in enumerate(("low", "high"))} for r in rows]  # fmt: skip
    kept = [n for n in names if any(d[n] is not None for d in data)]
    return kept, [{n: d[n] for n in kept} for d in data]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def experiment_name(rows: list[dict[str, Any]]) -> str | None:
    """The experiment every job of a sweep ran (`+experiment=<name>` in its overrides), or None.

    Args:
        rows: rows of `collect` (their `overrides`).
    """
    names = {row["overrides"].get("experiment") for row in rows}
    return names.pop() if len(names) == 1 else None


def sweep_title(folder: Path, rows: list[dict[str, Any]]) -> str:
    """How the tables and plots name a sweep: its experiment, with the folder when that is named otherwise
    (a multirun's folder is a time of day); the folder alone when the jobs ran no one experiment.

    Args:
        folder: the sweep folder.
        rows: rows of `collect`.
    """
    experiment = experiment_name(rows)
    if experiment is None or experiment == folder.name:
        return experiment or folder.name
    return f"{experiment} (sweep {folder.name})"


def _limits(values: list[float], margin: float = 0.08) -> tuple[float, float]:
    """An axis range that shows the differences between `values`: it starts at 0 only when 0 lies within one
    spread of the data (so values in a narrow band far from 0 fill the axis), padded by `margin` of the spread.

    Args:
        values: every value the axis must show (points, interval ends, baselines).
        margin: padding on each side, as a share of the spread.
    """
    low, high = min(values), max(values)
    spread = high - low or abs(high) * 0.1 or 1.0
    if 0.0 <= low <= spread:
        low = 0.0
    elif -spread <= high <= 0.0:
        high = 0.0
    pad = margin * max(high - low, spread)
    return (low if low == 0.0 else low - pad, high if high == 0.0 else high + pad)


_LABEL_RINGS = (4, 10, 18, 28, 40, 55, 72, 92, 115, 140, 170, 200, 240)  # points from the marker to the label
_LABEL_ANGLES = (30, -30, 90, -90, 150, -150, 0, 180, 60, -60, 120, -120, 15, -15, 45, -45, 75, -75, 105, -105, 135, -135, 165, -165)  # degrees, nearest directions first


def _label_offsets() -> list[tuple[float, float]]:
    """Where a point's label may go, in points from the point: rings of growing radius, first near, then far."""
    import math

    return [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))) for r in _LABEL_RINGS for a in _LABEL_ANGLES]


def place_labels(ax: Any, annotations: list[Any], avoid: list[tuple[float, float]] = ()) -> None:
    """Move each of `ax`'s point labels to the nearest spot inside the axes where it overlaps neither an earlier
    label nor a marker; a label moved away from its point keeps a thin line to it. Call after the figure's layout.

    Greedy, in the order given: a label with no free spot takes the one where it overlaps least.

    Args:
        ax: the axes the annotations are on.
        annotations: `ax.annotate(...)` results with `textcoords="offset points"` and an `arrow_patch`.
        avoid: data points of markers that carry no label here, which the labels must not cover either.
    """
    from matplotlib.text import Text

    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = [_marker_box(ax, xy) for xy in [*(a.xy for a in annotations), *avoid]]
    if ax.get_legend() is not None:
        taken.append(ax.get_legend().get_window_extent(renderer))
    for ann in annotations:
        best = None
        for dx, dy in _label_offsets():
            ann.set_position((dx, dy))
            ann.set_horizontalalignment("left" if dx > 0.5 else "right" if dx < -0.5 else "center")
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer)  # the text alone, not its line to the point
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            cost = sum(box.overlaps(t) for t in taken) + (0 if inside else len(taken) + 1)
            if best is None or cost < best[0]:
                best = (cost, (dx, dy), ann.get_horizontalalignment(), box)
            if cost == 0:
                break
        _, offset, align, box = best
        ann.set_position(offset)
        ann.set_horizontalalignment(align)
        ann.arrow_patch.set_visible(offset[0] ** 2 + offset[1] ** 2 > 6**2)
        taken.append(box)


def _marker_box(ax: Any, xy: tuple[float, float], size: float = 4.0) -> Any:
    """The display box of a marker at data point `xy`, `size` pixels each side."""
    from matplotlib.transforms import Bbox

    x, y = ax.transData.transform(xy)
    return Bbox.from_extents(x - size, y - size, x + size, y + size)


_LOWER_IS_BETTER = frozenset({"fd", "sfd"})
"""The quality metrics where lower is better (distances, as `QUALITY`'s axis labels say); higher is better for the
others (accuracy, PSNR, SSIM)."""
_DOMINATED_ALPHA = 0.3  # how faint a point another point of its method dominates is drawn


def higher_is_better(metric: str) -> bool:
    """Whether a higher value of quality `metric` is better (`_LOWER_IS_BETTER` names the exceptions).

    Args:
        metric: a quality column (`alignment_accuracy`, `fd`, `psnr_vs_dense`, ...).
    """
    return metric.removeprefix("dense_") not in _LOWER_IS_BETTER


def pareto_front(points: list[dict[str, Any]], x: str, metric: str, higher_is_better: bool) -> list[dict[str, Any]]:
    """The rows of `points` on the Pareto frontier of cost `x` against quality `metric`, cheapest first: those no
    other row dominates (costs no more, is no worse, and costs less or is better). Rows tied on both values are
    all kept, as neither dominates the other; rows missing either value are left out.

    Args:
        points: table rows (compared as given: pass one method's rows for that method's frontier).
        x: the cost column (`flops_ratio` or `time_ratio`); lower is better.
        metric: the quality column.
        higher_is_better: the direction of `metric` (`higher_is_better(metric)`).

    Example:
        >>> rows = [{"x": 0.2, "q": 0.5}, {"x": 0.3, "q": 0.4}, {"x": 0.5, "q": 0.9}]
        >>> front = pareto_front(rows, "x", "q", higher_is_better=True)
        >>> print(*(row["x"] for row in front))
        0.2 0.5
    """
    sign = 1.0 if higher_is_better else -1.0
    rows = [r for r in points if r.get(x) is not None and r.get(metric) is not None]
    front = [r for r in rows if not any(_dominates(other, r, x, metric, sign) for other in rows)]
    return sorted(front, key=lambda r: (r[x], -sign * r[metric]))


def _dominates(a: dict[str, Any], b: dict[str, Any], x: str, metric: str, sign: float) -> bool:
    """Whether row `a` dominates row `b`: no costlier, no worse (quality times `sign` is higher-better), not equal."""
    no_worse = a[x] <= b[x] and sign * a[metric] >= sign * b[metric]
    return no_worse and (a[x] < b[x] or sign * a[metric] > sign * b[metric])


def pareto_figure(points: list[dict[str, Any]], swept: list[str], x: str, xlabel: str, title: str) -> Any:
    """Quality against `x` (one panel per `QUALITY` metric), a colour per method family: every point with its 95 %
    interval as an error bar, each method's Pareto frontier (`pareto_front`) as a line through its points, the
    points it dominates faint, labels on the frontier points only (placed apart), the dense baseline at
    (1, its quality), and one legend under the panels. A metric spanning more than a decade gets a log axis.

    Args:
        points: table rows with a value of `x`.
        swept: the swept keys (the points' labels).
        x: the column on the horizontal axis (`flops_ratio` or `time_ratio`).
        xlabel: its axis label.
        title: the sweep's name (`sweep_title`).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(QUALITY), figsize=(5.2 * len(QUALITY), 4.8))
    labelled = []
    for ax, (metric, ylabel) in zip(axes, QUALITY, strict=True):
        labelled.append((ax, _pareto_panel(ax, points, swept, x, metric), _marker_points(points, x, metric)))
        ax.set(xlabel=xlabel, ylabel=ylabel)
        _fit_scale(ax, [r[metric] for r in points if r.get(metric) is not None])
        ax.grid(alpha=0.3)
    intervals = any(_errors(points, m) is not None for m, _ in QUALITY)
    fig.suptitle(f"{title}: quality against {'FLOPs' if x == 'flops_ratio' else 'time'}"
                 + (" (bars: 95 % CI over prompts)" if intervals else ""))  # fmt: skip
    _figure_legend(fig, axes)
    for ax, labels, markers in labelled:
        place_labels(ax, labels, avoid=markers + _along_frontiers(ax))
    return fig


def _along_frontiers(ax: Any, step: float = 6.0) -> list[tuple[float, float]]:
    """Data points every `step` pixels along the frontier lines of `ax`, for the labels to keep off the lines.

    Args:
        ax: a panel of `pareto_figure`, after the layout.
        step: the spacing in pixels (under twice `_marker_box`'s half-size, so the boxes cover the line).
    """
    import numpy as np

    points: list[tuple[float, float]] = []
    for line in (line for line in ax.lines if line.get_gid() == "frontier"):
        ends = ax.transData.transform(line.get_xydata())  # (n, 2) pixels
        for a, b in zip(ends[:-1], ends[1:], strict=True):
            share = np.linspace(0.0, 1.0, max(int(np.hypot(*(b - a)) // step), 1) + 1)[1:-1, None]
            points += [tuple(p) for p in ax.transData.inverted().transform(a + (b - a) * share)]
    return points


def _fit_scale(ax: Any, values: list[float]) -> None:
    """A log vertical axis, ticked at 1, 2 and 5 per decade in plain numbers, for positive `values` spanning more
    than a factor of 20 (an FD from 600 to 28,000, where a linear axis squeezes the good points into a line).

    Args:
        ax: the panel.
        values: the panel's plotted values.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if not values or min(values) <= 0 or max(values) <= 20 * min(values):
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _marker_points(points: list[dict[str, Any]], x: str, metric: str) -> list[tuple[float, float]]:
    """Where a panel of `pareto_figure` draws markers: every point with a value of `metric`, and the dense star."""
    dense = next((r[f"dense_{metric}"] for r in points if r.get(f"dense_{metric}") is not None), None)
    return [(r[x], r[metric]) for r in points if r.get(metric) is not None] + ([] if dense is None else [(1.0, dense)])


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend for all panels, under them: the methods, the dense baseline, what a line and a faint point mean;
    then the layout, leaving it room."""
    from matplotlib.lines import Line2D

    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    entries["Pareto frontier of a method"] = Line2D([], [], color="0.3", lw=1.2)
    entries["dominated by a point of its method"] = Line2D(
        [], [], color="0.3", marker="o", ls="none", alpha=_DOMINATED_ALPHA
    )
    rows = -(-len(entries) // 6)  # rows of at most 6 entries, filled evenly
    legend = fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=-(-len(entries) // rows),
                        fontsize=8, frameon=False)  # fmt: skip
    height = legend.get_window_extent(fig.canvas.get_renderer()).height / fig.bbox.height
    fig.tight_layout(rect=(0.0, height + 0.01, 1.0, 1.0))


def _pareto_panel(ax: Any, points: list[dict[str, Any]], swept: list[str], x: str, metric: str) -> list[Any]:
    """One panel of `pareto_figure`; returns its frontier points' labels (placed later, once the layout is known)."""
    annotations = []
    for i, method in enumerate(sorted({r["method"] for r in points})):  # the same colour for a method in every panel
        mine = [r for r in points if r["method"] == method and r.get(metric) is not None]
        if mine:
            annotations += _method_points(ax, mine, swept, x, metric, colour=f"C{i % 10}")
    dense = next((r[f"dense_{metric}"] for r in points if r.get(f"dense_{metric}") is not None), None)
    if dense is not None:
        ci = _dense_ci(points, metric)
        ax.errorbar([1.0], [dense], yerr=None if ci is None else [[dense - ci[0]], [ci[1] - dense]], fmt="k*",
                    markersize=12, capsize=2, elinewidth=0.8, label="dense (all steps)")  # fmt: skip
    return annotations


def _method_points(
    ax: Any, mine: list[dict[str, Any]], swept: list[str], x: str, metric: str, colour: str
) -> list[Any]:
    """One method's points on a panel: its frontier as a line (`gid="frontier"`) through its frontier points, the
    points it dominates faint, each with its error bar; returns the frontier points' labels.

    Args:
        ax: the panel.
        mine: the method's rows with a value of `metric`.
        swept: the swept keys (the labels).
        x: the cost column.
        metric: the quality column.
        colour: the method's colour.
    """
    front = pareto_front(mine, x, metric, higher_is_better(metric))
    dominated = [r for r in mine if all(r is not f for f in front)]
    ax.plot([r[x] for r in front], [r[metric] for r in front], "-", color=colour, lw=1.2, gid="frontier")
    ax.errorbar([r[x] for r in front], [r[metric] for r in front], yerr=_errors(front, metric), fmt="o", color=colour,
                capsize=2, elinewidth=0.8, label=mine[0]["method"])  # fmt: skip
    if dominated:
        ax.errorbar([r[x] for r in dominated], [r[metric] for r in dominated], yerr=_errors(dominated, metric), fmt="o",
                    color=colour, alpha=_DOMINATED_ALPHA, capsize=2, elinewidth=0.8)  # fmt: skip
    return [ax.annotate(text, xy, xytext=(4, 4), textcoords="offset points", fontsize=7, color=colour, va="center",
                        arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.6", "shrinkA": 0, "shrinkB": 3})
            for xy, text in _frontier_labels(front, swept, x, metric).items()]  # fmt: skip


def _frontier_labels(
    front: list[dict[str, Any]], swept: list[str], x: str, metric: str
) -> dict[tuple[float, float], str]:
    """One label per distinct frontier point: jobs that landed on the very same point (a step count reached by
    two routes) share it, as `dense_04 (+4 same)`.

    Args:
        front: a method's frontier rows (`pareto_front`).
        swept: the swept keys (the labels).
        x: the cost column.
        metric: the quality column.
    """
    groups: dict[tuple[float, float], list[str]] = {}
    for r in front:
        groups.setdefault((r[x], r[metric]), []).append(_label(r, swept))
    return {xy: names[0] + (f" (+{len(names) - 1} same)" if len(names) > 1 else "") for xy, names in groups.items()}


def plot_pareto(folder: Path, table: list[dict[str, Any]], swept: list[str], title: str | None = None) -> list[Path]:
    """Quality against FLOP ratio (`pareto_flops.png`) and against time ratio (`pareto_time.png`) with their data
    as CSV (see `pareto_figure`); the CSV's `frontier_<metric>` columns say which points are on their method's
    frontier.

    Args:
        folder: the sweep folder (written into).
        table: the report's rows.
        swept: the swept keys.
        title: the sweep's name; the folder's by default.
    """
    written = []
    for x, name, xlabel in (("flops_ratio", "pareto_flops", "FLOPs / dense FLOPs"),
                            ("time_ratio", "pareto_time", "time / dense time (measured)")):  # fmt: skip
        points = [r for r in table if r.get(x) is not None]
        if not points:
            continue
        fig = pareto_figure(points, swept, x, xlabel, title or folder.name)
        fig.savefig(folder / f"{name}.png", dpi=90)
        _pyplot().close(fig)
        data = [{"job": r["job"], "method": r["method"], "label": _label(r, swept), x: r[x],
                 **{m: r.get(m) for m, _ in QUALITY}, **{f"dense_{m}": r.get(f"dense_{m}") for m, _ in QUALITY}}
                for r in points]  # fmt: skip
        ci_columns, ci_data = _ci_data(points, [m for m, _ in QUALITY])
        fronts = _frontier_data(points, x)
        data = [{**d, **c, **f} for d, c, f in zip(data, ci_data, fronts, strict=True)]
        columns = ["job", "method", "label", x, *(m for m, _ in QUALITY), *(f"dense_{m}" for m, _ in QUALITY), *ci_columns,
                   *(f"frontier_{m}" for m, _ in QUALITY)]  # fmt: skip
        written += [folder / f"{name}.png", _write_csv(folder / f"{name}.csv", columns, data)]
    return written


def _frontier_data(points: list[dict[str, Any]], x: str) -> list[dict[str, Any]]:
    """Per row, `frontier_<metric>` for each `QUALITY` metric: whether the row is on its method's Pareto frontier
    (`pareto_front`), None where it has no value of the metric.

    Args:
        points: the plotted rows.
        x: the cost column.
    """
    on_front = {(m, id(r)) for m, _ in QUALITY for method in {p["method"] for p in points}
                for r in pareto_front([p for p in points if p["method"] == method], x, m, higher_is_better(m))}  # fmt: skip
    return [{f"frontier_{m}": None if r.get(m) is None else (m, id(r)) in on_front for m, _ in QUALITY} for r in points]


def _ablation_metrics(table: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m, t) for m, t in (*QUALITY, ("flops_ratio", "FLOPs / dense")) if any(r.get(m) is not None for r in table)]


def ablation_figure(table: list[dict[str, Any]], swept: list[str], title: str) -> Any:
    """One dot chart of the sweep: a panel per metric, a row per job (labelled by its swept values), 95 %
    intervals as error bars, the dense baseline as a dashed line in its band, each axis fitted to its values.

    Args:
        table: the report's rows (at least one with a metric of `_ablation_metrics`).
        swept: the swept keys.
        title: the sweep's name (`sweep_title`).
    """
    plt = _pyplot()
    metrics = _ablation_metrics(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.6 + 0.38 * len(table) + 1.2), squeeze=False)
    for ax, (metric, name) in zip(axes[0], metrics, strict=True):
        _ablation_panel(ax, table, metric)
        ax.set_yticks(range(len(table)), [_label(r, swept) for r in table] if ax is axes[0][0] else [""] * len(table),
                      fontsize=8)  # fmt: skip
        ax.set_ylim(len(table) - 0.5, -0.5)  # the first job on top
        ax.set_title(name, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    intervals = any(_errors(table, m) is not None for m, _ in metrics)
    fig.suptitle(title + (" (bars: 95 % CI over prompts)" if intervals else ""))
    fig.tight_layout()
    return fig


def _ablation_panel(ax: Any, table: list[dict[str, Any]], metric: str) -> None:
    """One panel of `ablation_figure`: the jobs' values of `metric` (jobs without one are left empty)."""
    rows = [(i, r) for i, r in enumerate(table) if r.get(metric) is not None]
    errors = _errors([r for _, r in rows], metric)
    ax.errorbar([r[metric] for _, r in rows], [i for i, _ in rows], xerr=errors, fmt="o", color="tab:blue", capsize=2,
                elinewidth=0.8)  # fmt: skip
    shown = [r[metric] for _, r in rows]
    if errors is not None:
        shown += [r[metric] - e for (_, r), e in zip(rows, errors[0], strict=True)]
        shown += [r[metric] + e for (_, r), e in zip(rows, errors[1], strict=True)]
    dense = next((r.get(f"dense_{metric}") for r in table if r.get(f"dense_{metric}") is not None), None)
    if dense is not None:
        ax.axvline(dense, color="k", linestyle="--", linewidth=1, label="dense")
        ci = _dense_ci(table, metric)
        if ci is not None:
            ax.axvspan(ci[0], ci[1], color="k", alpha=0.1, label="dense 95 % CI")
        shown += [dense, *(ci or ())]
        ax.legend(fontsize=8)
    ax.set_xlim(*_limits(shown))


def plot_ablation(folder: Path, table: list[dict[str, Any]], swept: list[str], title: str | None = None) -> list[Path]:
    """The sweep's dot chart (`ablation.png`, see `ablation_figure`) and its data (`ablation.csv`).

    Args:
        folder: the sweep folder (written into).
        table: the report's rows.
        swept: the swept keys.
        title: the sweep's name; the folder's by default.
    """
    metrics = _ablation_metrics(table)
    if not metrics:
        return []
    fig = ablation_figure(table, swept, title or folder.name)
    fig.savefig(folder / "ablation.png", dpi=90)
    _pyplot().close(fig)
    labels = [_label(r, swept) for r in table]
    ci_columns, ci_data = _ci_data(table, [m for m, _ in QUALITY])
    columns = ["job", "label", *(m for m, _ in metrics), *(f"dense_{m}" for m, _ in QUALITY), *ci_columns]
    data = [{"job": r["job"], "label": lab, **{m: r.get(m) for m, _ in metrics}, **{f"dense_{m}": r.get(f"dense_{m}") for m, _ in QUALITY}, **c}
            for r, lab, c in zip(table, labels, ci_data, strict=True)]  # fmt: skip
    return [folder / "ablation.png", _write_csv(folder / "ablation.csv", columns, data)]


def main(argv: list[str] | None = None) -> int:
    """`python -m rasfw.app.report <sweep folder> [...]`: rebuild the results of each sweep folder."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or any(a in ("-h", "--help") for a in args):
        print("usage: python -m rasfw.app.report <sweep folder> [<sweep folder> ...]")
        return 0 if args else 2
    for arg in args:
        folder = Path(arg)
        if not folder.is_dir():
            print(f"error: {arg}: no such folder", file=sys.stderr)
            return 2
        try:
            written = write_report(folder)
        except ValueError as exc:
            print(f"error: {first_line(exc)}", file=sys.stderr)
            return 2
        if not written:
            print(f"error: {arg}: no job folder with a summary.json (a sweep folder holds 0/, 1/, ...)", file=sys.stderr)
            return 2
        print(f"wrote {len(written)} files in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
