"""Can a testbed tell strategies apart? The paired comparisons of `low_step` and `pareto` sweeps, as tables.

For each comparison the paper makes it prints the paired difference `a - b` with its 95 % interval (a bootstrap
over the same prompts and seeds, `rasfw.app.stats.compare`) for FD, sFD, alignment and PSNR and SSIM against the
28-step dense image, and marks with `*` each difference the interval decides (excludes 0). `low_step`: RAS
against dense sampling at the step count of equal FLOPs, and each Table 4 ablation against RAS with every
component (`ras_10_025`). `pareto` (28 steps): RAS, with either fill, against dense at the step count of equal
FLOPs; RAS against diffusers' step caches at about its FLOPs; RAS beside a cache against RAS alone.

Usage (from the repository root):
    python benchmarks/testbeds/contrast.py benchmarks/testbeds/*/ > benchmarks/testbeds/contrast.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rasfw.app.stats import compare

METRICS = (("fd", "FD"), ("sfd", "sFD"), ("alignment_accuracy", "alignment"), ("psnr_vs_dense", "PSNR"), ("ssim_vs_dense", "SSIM"))
PAIRS = {  # experiment -> (a, b) pairs
    "low_step": (
        ("ras_07_025", "dense_matched_07_025"),
        ("ras_10_025", "dense_matched_10_025"),
        ("ras_10_0125", "dense_matched_10_0125"),
        *((f"ras_10_025_{name}", "ras_10_025") for name in ("random", "l2norm", "h1", "no_starvation", "no_kv_cache", "no_reset", "taylor")),
    ),
    "pareto": (
        ("ras_050", "dense_matched_050"),
        ("ras_025", "dense_matched_025"),
        ("ras_0125", "dense_matched_0125"),
        ("ras_025_taylor", "dense_matched_025"),
        ("ras_0125_taylor", "dense_matched_0125"),
        ("ras_025_taylor", "ras_025"),
        ("ras_050", "first_block_020"),
        ("ras_050", "taylorseer_5"),
        ("ras_025", "first_block_040"),
        ("ras_025_taylor", "taylorseer_5"),
        ("ras_025_first_block_020", "ras_025"),
        ("ras_025_taylorseer_2", "ras_025"),
    ),
}  # fmt: skip


def points(sweep: Path) -> tuple[str | None, dict[str, tuple[Path, dict]]]:
    """The sweep's experiment (`low_step` or `pareto`) and its `<experiment>_point` name -> (job folder, summary)."""
    found, experiment = {}, None
    for path in sorted(sweep.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        for override in summary.get("overrides", []):
            key, _, value = override.lstrip("+").partition("=")
            if key.endswith("_point") and key[: -len("_point")] in PAIRS:
                experiment = key[: -len("_point")]
                found[value] = (path.parent, summary)
    return experiment, found


def row(found: dict, a: str, b: str) -> tuple[str, int]:
    """One table row for `a - b` and how many of its metrics the intervals decide."""
    if a not in found or b not in found:
        return f"| {a} − {b} | — | " + " | ".join("missing" for _ in METRICS) + " |", 0
    diffs = compare(found[a][0], found[b][0])
    cells, decided = [], 0
    for key, _ in METRICS:
        c = diffs.get(key)
        if c is None:
            cells.append("—")
            continue
        decided += c.distinguishable
        cells.append(f"{c.difference:+.3g} [{c.ci[0]:.3g}, {c.ci[1]:.3g}]{' *' if c.distinguishable else ''}")
    steps = found[b][1].get("steps")
    label = f"{a} − {b} ({steps} steps)" if b.startswith("dense_matched") else f"{a} − {b}"
    flops = " / ".join(f"{found[name][1].get('flops_ratio', float('nan')):.3f}" for name in (a, b))
    return "| " + label + " | " + flops + " | " + " | ".join(cells) + " |", decided


def table(sweep: Path) -> list[str]:
    experiment, found = points(sweep)
    if not found:
        return [f"### {sweep.name}: no {' or '.join(PAIRS)} jobs under {sweep}", ""]
    first = next(iter(found.values()))[1]
    lines = [
        f"### {sweep.name}: `{experiment}`, {Path(first.get('weights', '')).name}, {first.get('prompt_count')} prompts",
        "",
        "| a − b | FLOPs a / b | " + " | ".join(label for _, label in METRICS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in METRICS) + " |",
    ]
    decided_rows = 0
    for a, b in PAIRS[experiment]:
        line, decided = row(found, a, b)
        lines.append(line)
        decided_rows += decided > 0
    lines += ["", f"{decided_rows} of {len(PAIRS[experiment])} comparisons decided on at least one metric (`*`: the 95 % interval excludes 0).", ""]
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    print("\n".join(line for sweep in argv for line in table(Path(sweep))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
