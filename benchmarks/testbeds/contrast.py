"""Can a testbed tell strategies apart? The paired comparisons of one `low_step` sweep, as a table.

For each comparison the paper makes (RAS against dense sampling at the step count of equal FLOPs; each Table 4
ablation against RAS with every component, `ras_10_025`) it prints the paired difference `a - b` with its 95 %
interval (a bootstrap over the same prompts and seeds, `rasfw.stats.compare`) for FD, sFD, alignment and PSNR and
SSIM against the 28-step dense image, and marks with `*` each difference the interval decides (excludes 0).

Usage (from the repository root):
    python benchmarks/testbeds/contrast.py benchmarks/testbeds/patterns benchmarks/testbeds/shapes > benchmarks/testbeds/contrast.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rasfw.stats import compare

METRICS = (("fd", "FD"), ("sfd", "sFD"), ("alignment_accuracy", "alignment"), ("psnr_vs_dense", "PSNR"), ("ssim_vs_dense", "SSIM"))
PAIRS = (
    ("ras_07_025", "dense_matched_07_025"),
    ("ras_10_025", "dense_matched_10_025"),
    ("ras_10_0125", "dense_matched_10_0125"),
    *((f"ras_10_025_{name}", "ras_10_025") for name in ("random", "l2norm", "h1", "no_starvation", "no_kv_cache", "no_reset", "taylor")),
)


def points(sweep: Path) -> dict[str, tuple[Path, dict]]:
    """`low_step_point` name -> (job folder, summary)."""
    found = {}
    for path in sorted(sweep.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        for override in summary.get("overrides", []):
            if override.lstrip("+").startswith("low_step_point="):
                found[override.split("=", 1)[1]] = (path.parent, summary)
    return found


def row(found: dict, a: str, b: str) -> tuple[str, int]:
    """One table row for `a - b` and how many of its metrics the intervals decide."""
    if a not in found or b not in found:
        return f"| {a} − {b} | " + " | ".join("missing" for _ in METRICS) + " |", 0
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
    return "| " + label + " | " + " | ".join(cells) + " |", decided


def table(sweep: Path) -> list[str]:
    found = points(sweep)
    if not found:
        return [f"### {sweep.name}: no low_step jobs under {sweep}", ""]
    first = next(iter(found.values()))[1]
    lines = [
        f"### {sweep.name}: {Path(first.get('weights', '')).name}, {first.get('prompt_count')} prompts",
        "",
        "| a − b | " + " | ".join(label for _, label in METRICS) + " |",
        "| --- | " + " | ".join("---" for _ in METRICS) + " |",
    ]
    decided_rows = 0
    for a, b in PAIRS:
        line, decided = row(found, a, b)
        lines.append(line)
        decided_rows += decided > 0
    lines += ["", f"{decided_rows} of {len(PAIRS)} comparisons decided on at least one metric (`*`: the 95 % interval excludes 0).", ""]
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    print("\n".join(line for sweep in argv for line in table(Path(sweep))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
