"""The matched pairs of the low-step regime (`table2`): does RAS beat dense sampling with fewer steps?

Each RAS point of `conf/table2_point/` (inactive tokens reused or forecast) is paired with the plain dense
point (`dense_<steps>`, 3 to 10 steps) that costs least among those costing no less than it: by FLOPs, and
by measured time, read from `times.json` beside the sweep (`table2_times.py`: every point timed round-robin
in one process) or, without it, from each job's own `time_s` (measured while other jobs ran: rough). Each pair is compared by a paired
bootstrap over the same prompts and seeds (`rasfw.app.stats.compare`) on the reference-free metrics: FD, sFD
and alignment.

RAS *Pareto-dominates* its partner when, at no more cost, it is at least as good on every metric (better,
or not distinguishable) and distinguishably better on one; "dense better" is the reverse at more cost.

Usage (from the repository root): python benchmarks/experiments/pairs.py [sweep folder]
(default benchmarks/experiments/table2; the job folders need summary.json and eval_features.npz)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rasfw.app.stats import Comparison, compare

HERE = Path(__file__).resolve().parent
METRICS = (("fd", "FD", -1), ("sfd", "sFD", -1), ("alignment_accuracy", "alignment", 1))  # (key, label, better sign)


def points(sweep: Path) -> dict[str, tuple[Path, dict]]:
    """`table2_point` name -> (job folder, summary)."""
    found = {}
    for path in sorted(sweep.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        name = next((o.split("=", 1)[1] for o in summary.get("overrides", []) if o.lstrip("+").startswith("table2_point=")), None)
        if name:
            found[name] = (path.parent, summary)
    return found


def verdict(diffs: dict[str, Comparison]) -> str:
    """"RAS dominates", "dense better" or "neither" from the paired differences `ras - dense` (RAS costs no more)."""
    better = [sign * diffs[key].difference > 0 and diffs[key].distinguishable for key, _, sign in METRICS]
    worse = [sign * diffs[key].difference < 0 and diffs[key].distinguishable for key, _, sign in METRICS]
    if any(better) and not any(worse):
        return "RAS dominates"
    if any(worse) and not any(better):
        return "dense better"
    return "neither"


def partner(costs: dict[str, float | None], ras: float | None) -> str | None:
    """The plain dense point costing least among those costing no less than `ras` (None: none does)."""
    costly = [name for name, c in costs.items() if c is not None and ras is not None and c >= ras]
    return min(costly, key=lambda name: costs[name], default=None)


def times(sweep: Path, found: dict[str, tuple[Path, dict]]) -> dict[str, float | None]:
    """Seconds per point: `times.json` beside the sweep where it exists, else each job's own `time_s`."""
    path = sweep / "times.json"
    if path.is_file():
        return json.loads(path.read_text())["seconds"]
    return {name: summary.get("time_s") for name, (_, summary) in found.items()}


def cell(c: Comparison, digits: int) -> str:
    mark = "" if c.distinguishable else " ≈"
    return f"{c.difference:+.{digits}f} [{c.ci[0]:+.{digits}f}, {c.ci[1]:+.{digits}f}]{mark}"


def main(sweep: Path) -> None:
    found = points(sweep)
    dense_plain = {name: summary for name, (_, summary) in found.items() if name.startswith("dense_") and name[6:].isdigit()}
    seconds = times(sweep, found)
    source = "times.json" if (sweep / "times.json").is_file() else "each job's time_s"
    print(f"Pairs of {sweep} ({next(iter(found.values()))[1].get('prompt_count')} prompts); differences RAS − dense, "
          f"95 % paired-bootstrap interval, ≈ not distinguishable; times from {source}\n")  # fmt: skip
    print("| RAS point | fill | against | steps (RAS / dense) | FLOPs (RAS / dense) | time s (RAS / dense) | ΔFD | ΔsFD | Δalignment | verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    tally: dict[tuple[str, str], list[str]] = {}
    for name in sorted(n for n in found if n.startswith("ras_")):
        folder, ras = found[name]
        base, fill = name.removesuffix("_taylor"), "taylor" if name.endswith("_taylor") else "reuse"
        flops = {n: s["flops_ratio"] for n, s in dense_plain.items()}
        for kind, costs, own in (("≥ FLOPs", flops, ras["flops_ratio"]), ("≥ time", {n: seconds.get(n) for n in dense_plain}, seconds.get(name))):
            other = partner(costs, own)
            if other is None:
                continue
            dense = dense_plain[other]
            diffs = compare(folder, found[other][0])
            result = verdict(diffs)
            tally.setdefault((fill, kind), []).append(result)
            time = f"{seconds[name]:.2f} / {seconds[other]:.2f}" if seconds.get(name) and seconds.get(other) else "—"
            print(f"| {base} | {fill} | {kind} | {ras['steps']} / {dense['steps']} | {ras['flops_ratio']:.3f} / "
                  f"{dense['flops_ratio']:.3f} | {time} | {cell(diffs['fd'], 0)} | {cell(diffs['sfd'], 2)} | "
                  f"{cell(diffs['alignment_accuracy'], 3)} | {result} |")  # fmt: skip
    print("\n| fill | pairs | RAS dominates | neither | dense better |\n| --- | --- | --- | --- | --- |")
    for (fill, kind), results in sorted(tally.items()):
        print(f"| {fill} | {kind} ({len(results)}) | {results.count('RAS dominates')} | {results.count('neither')} | "
              f"{results.count('dense better')} |")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "table2")
