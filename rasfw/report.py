"""Tables and plots of a sweep: `results.csv`, `results.md` and PNGs (each with its data as CSV beside it).

Written by the Hydra callback `ResultsCallback` at the end of every `python -m rasfw -m ...` multirun, and
rebuilt later, or from a sweep that ran elsewhere, with `python -m rasfw.report <sweep folder>`.

Rows are the sweep's jobs (each job folder's `summary.json`); columns are the swept keys (the overrides
whose values differ between jobs) and the metrics. Plots: quality against FLOP ratio and against measured
time ratio (the Pareto planes), and one chart of the ablation (quality per job).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rasfw.registry import register

METRICS = (
    "method", "sampler", "cache", "steps", "flops_ratio", "time_ratio", "speedup", "time_s", "dense_time_s",
    "alignment_accuracy", "dense_alignment_accuracy", "fd", "dense_fd", "sfd", "psnr_vs_dense", "ssim_vs_dense",
    "object_update_share", "object_area_share", "prompt_count",
)  # fmt: skip
QUALITY = (
    ("alignment_accuracy", "alignment accuracy (higher is better)"),
    ("fd", "FD (lower is better)"),
    ("psnr_vs_dense", "PSNR vs dense, dB (higher is better)"),
)


@register("callback", "results")
class ResultsCallback(Callback):
    """Hydra callback: after the last job of a multirun, write the sweep's results (see `write_report`)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        written = write_report(folder)
        if written:
            print(f"wrote {folder / 'results.csv'}, results.md and {len(written) - 2} plot files", flush=True)


def collect(folder: Path) -> list[dict[str, Any]]:
    """One row per job folder under `folder` that holds a `summary.json`, in job order."""
    rows = []
    summaries = sorted(folder.glob("*/summary.json"), key=lambda p: (not p.parent.name.isdigit(), _job_order(p)))
    for path in summaries:
        summary = json.loads(path.read_text())
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
    columns = ["job", *swept, *metrics]
    table = [{"job": r["job"], **{m: r.get(m) for m in metrics}, **{k: r["overrides"].get(k, "") for k in swept}} for r in rows]
    written = [_write_csv(folder / "results.csv", columns, table)]
    (folder / "results.md").write_text(markdown(columns, table, folder.name))
    written.append(folder / "results.md")
    written += plot_pareto(folder, table, swept)
    written += plot_ablation(folder, table, swept)
    return written


def _write_csv(path: Path, columns: list[str], table: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: _cell(row.get(k)) for k in columns} for row in table)
    return path


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else value


def markdown(columns: list[str], table: list[dict[str, Any]], title: str) -> str:
    """The results as one markdown table (columns that are empty in every row are left out)."""
    shown = [c for c in columns if any(row.get(c) not in (None, "") for row in table)]
    lines = [f"Sweep `{title}`: {len(table)} jobs\n", "| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
    for row in table:
        lines.append("| " + " | ".join(str(_cell(row.get(c))) if row.get(c) not in (None, "") else "—" for c in shown) + " |")
    return "\n".join(lines) + "\n"


def _label(row: dict[str, Any], swept: list[str]) -> str:
    parts = [f"{k.rsplit('.', 1)[-1] if '.' in k else k}={row[k]}" for k in swept if row.get(k) not in (None, "")]
    return ", ".join(parts) or row["job"]


def _short(label: str) -> str:
    return label.replace("pareto_point=", "")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(folder: Path, table: list[dict[str, Any]], swept: list[str]) -> list[Path]:
    """Quality against FLOP ratio (`pareto_flops.png`) and against time ratio (`pareto_time.png`), one
    colour per method family; the dense baseline sits at (1, its quality)."""
    written = []
    for x, name, xlabel in (("flops_ratio", "pareto_flops", "FLOPs / dense FLOPs"),
                            ("time_ratio", "pareto_time", "time / dense time (measured)")):  # fmt: skip
        points = [r for r in table if r.get(x) is not None]
        if not points:
            continue
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(QUALITY), figsize=(5.2 * len(QUALITY), 4))
        data = []
        for ax, (metric, ylabel) in zip(axes, QUALITY, strict=True):
            for method in sorted({r["method"] for r in points}):
                mine = [r for r in points if r["method"] == method and r.get(metric) is not None]
                ax.plot([r[x] for r in mine], [r[metric] for r in mine], "o", label=method)
                for r in mine:
                    ax.annotate(_short(_label(r, swept)), (r[x], r[metric]), fontsize=6, alpha=0.7,
                                xytext=(3, 3), textcoords="offset points")  # fmt: skip
            dense = next((r[f"dense_{metric}"] for r in points if r.get(f"dense_{metric}") is not None), None)
            if dense is not None:
                ax.plot([1.0], [dense], "k*", markersize=12, label="dense (all steps)")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{folder.name}: quality against {'FLOPs' if x == 'flops_ratio' else 'time'}")
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=90)
        plt.close(fig)
        for r in points:
            data.append({"job": r["job"], "method": r["method"], "label": _label(r, swept), x: r[x],
                         **{m: r.get(m) for m, _ in QUALITY}, **{f"dense_{m}": r.get(f"dense_{m}") for m, _ in QUALITY}})  # fmt: skip
        columns = ["job", "method", "label", x, *(m for m, _ in QUALITY), *(f"dense_{m}" for m, _ in QUALITY)]
        written += [folder / f"{name}.png", _write_csv(folder / f"{name}.csv", columns, data)]
    return written


def plot_ablation(folder: Path, table: list[dict[str, Any]], swept: list[str]) -> list[Path]:
    """One bar chart of the sweep (`ablation.png`): quality and FLOP ratio per job, labelled by its swept values."""
    metrics = [(m, t) for m, t in (*QUALITY, ("flops_ratio", "FLOPs / dense")) if any(r.get(m) is not None for r in table)]
    if not metrics:
        return []
    plt = _pyplot()
    labels = [_label(r, swept) for r in table]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.6 + 0.38 * len(table) + 1.2), squeeze=False)
    for ax, (metric, title) in zip(axes[0], metrics, strict=True):
        values = [r.get(metric) if r.get(metric) is not None else 0.0 for r in table]
        ax.barh(range(len(table)), values, color="tab:blue")
        dense = next((r.get(f"dense_{metric}") for r in table if r.get(f"dense_{metric}") is not None), None)
        if dense is not None:
            ax.axvline(dense, color="k", linestyle="--", linewidth=1, label="dense")
            ax.legend(fontsize=8)
        ax.set_yticks(range(len(table)), labels if ax is axes[0][0] else [""] * len(table), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
    fig.suptitle(folder.name)
    fig.tight_layout()
    fig.savefig(folder / "ablation.png", dpi=90)
    plt.close(fig)
    columns = ["job", "label", *(m for m, _ in metrics), *(f"dense_{m}" for m, _ in QUALITY)]
    data = [{"job": r["job"], "label": lab, **{m: r.get(m) for m, _ in metrics}, **{f"dense_{m}": r.get(f"dense_{m}") for m, _ in QUALITY}}
            for r, lab in zip(table, labels, strict=True)]  # fmt: skip
    return [folder / "ablation.png", _write_csv(folder / "ablation.csv", columns, data)]


def main(argv: list[str] | None = None) -> int:
    """`python -m rasfw.report <sweep folder> [...]`: rebuild the results of each sweep folder."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or any(a in ("-h", "--help") for a in args):
        print("usage: python -m rasfw.report <sweep folder> [<sweep folder> ...]")
        return 0 if args else 2
    for arg in args:
        folder = Path(arg)
        if not folder.is_dir():
            print(f"error: {arg}: no such folder", file=sys.stderr)
            return 2
        written = write_report(folder)
        if not written:
            print(f"error: {arg}: no job folder with a summary.json (a sweep folder holds 0/, 1/, ...)", file=sys.stderr)
            return 2
        print(f"wrote {len(written)} files in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
