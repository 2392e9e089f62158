"""Print the tables of docs/experiments.md from the committed sweep results (benchmarks/experiments/*/results.csv).

Usage (from the repository root): python benchmarks/experiments/tables.py
"""

from __future__ import annotations

import csv
from pathlib import Path

from rasfw.app.report import CI_COLUMNS, METRICS

HERE = Path(__file__).resolve().parent
ABLATIONS = ("ablation_metric", "ablation_starvation", "ablation_reset", "ablation_kv_cache",
             "ablation_ratio_schedule", "ablation_selection")  # fmt: skip


def rows(name: str) -> list[dict[str, str]]:
    with (HERE / name / "results.csv").open() as f:
        return list(csv.DictReader(f))


def num(value: str, digits: int = 3) -> str:
    return "—" if value in ("", None) else f"{float(value):.{digits}f}"


def setting(row: dict[str, str], skip: tuple[str, ...] = ()) -> str:
    keys = [k for k in row if k not in ("job", *skip) and k not in METRIC_COLUMNS]
    return ", ".join(f"{k.lstrip('+')}={row[k]}" for k in keys if row[k] != "") or "—"


METRIC_COLUMNS = {*METRICS, *CI_COLUMNS}  # the columns the report writes beside the swept keys
HEADER = "| {first} | steps | FLOPs / dense | speed-up | alignment | FD | PSNR vs dense (dB) |\n| --- | --- | --- | --- | --- | --- | --- |"


def line(first: str, r: dict[str, str]) -> str:
    return (f"| {first} | {r['steps']} | {num(r['flops_ratio'])} | {num(r['speedup'], 2)} | {num(r['alignment_accuracy'])} | "
            f"{num(r['fd'], 0)} | {num(r['psnr_vs_dense'], 2)} |")  # fmt: skip


def dense_line(r: dict[str, str]) -> str:
    return f"| dense (all steps) | 28 | 1.000 | 1.00 | {num(r['dense_alignment_accuracy'])} | {num(r['dense_fd'], 0)} | — |"


def main() -> None:
    matched = rows("matched_flops")
    print("### Matched FLOPs (Table 2 analogue)\n")
    print(HEADER.format(first="method"))
    print(dense_line(matched[0]))
    for r in sorted(matched, key=lambda r: (-float(r["ratio.value"]), r["method"] != "RAS")):
        label = f"RAS, ratio {r['ratio.value']}" if r["method"] == "RAS" else f"dense, {r['steps']} steps (FLOPs of RAS {r['ratio.value']})"
        print(line(label, r))
    print("\n### Ablations (Table 4 analogue)\n")
    print(HEADER.format(first="ablation: setting"))
    print(dense_line(rows(ABLATIONS[0])[0]))
    for name in ABLATIONS:
        for r in rows(name):
            print(line(f"{name.removeprefix('ablation_')}: {setting(r)}", r))
    print("\n### Pareto plane\n")
    print(HEADER.format(first="point"))
    pareto = rows("pareto")
    print(dense_line(pareto[0]))
    for r in sorted(pareto, key=lambda r: float(r["flops_ratio"])):
        print(line(f"{r['pareto_point']} ({r['method']})", r))


if __name__ == "__main__":
    main()
