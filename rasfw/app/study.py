"""`python -m rasfw.app.study [overrides]`: the quality study on the embedded model, a config-driven experiment.

A thin alias of `python -m rasfw -m +experiment=study [overrides]`. `conf/experiment/study.yaml` sweeps RAS at
each ratio with h = 1, 0.3 and 0 and dense sampling with fewer steps at each ratio's FLOPs, on the fixed
200-prompt set (`docs/models/embedded.md`). `+experiment=<name>` runs another experiment instead, e.g.
`study_kv_dtype`. Any setting or sweep of the main command applies, and the sweep ends, as every sweep does,
in `results.csv`, `results.md` and plots.

The alias adds the study's own table, `study.md` in the sweep folder, printed at the end. It has the dense
baseline first, then one row per job: FLOP ratio, alignment in all and per attribute, FD and spatial FD,
PSNR and SSIM against dense, and where RAS's updates fell; with each job's 95 % intervals over the prompts
(`rasfw.app.stats`) where it recorded them, and `≈` where a row is not distinguishable from dense.
`python -m rasfw.app.study --table <sweep folder>` rebuilds it from the jobs' `summary.json`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rasfw.app import stats
from rasfw.app.console import fail  # the command line's one-line errors

DEFAULT_EXPERIMENT = "study"
TABLE = "study.md"
KV_ORDER = ("model", "bfloat16", "float16", "float8_e4m3fn")


def _is_ras(summary: dict[str, Any]) -> bool:
    return summary.get("sampler") != "dense"


def _ratio(summary: dict[str, Any]) -> float:
    return float(summary["settings"]["ratio"]["params"]["value"])


def _sampler_param(summary: dict[str, Any], key: str, default: Any) -> Any:
    return summary["settings"]["sampler"]["params"].get(key, default)


def _name(summary: dict[str, Any]) -> str:
    ratio = _ratio(summary)
    if not _is_ras(summary):
        return f"dense {summary['steps']} steps (FLOPs of RAS {ratio:g})"
    kv = _sampler_param(summary, "kv_dtype", "model")
    return f"RAS {ratio:g}, h={float(_sampler_param(summary, 'high_ratio', 0.0)):.1f}" + (
        "" if kv == "model" else f", K/V {kv}"
    )


def _order(summary: dict[str, Any]) -> tuple:
    """Ratio from the largest; at each, RAS rows (h from 1 down, then kv dtype) before the matched dense row."""
    kv = _sampler_param(summary, "kv_dtype", "model")
    return (
        -_ratio(summary),
        not _is_ras(summary),
        -float(_sampler_param(summary, "high_ratio", 0.0)),
        KV_ORDER.index(kv) if kv in KV_ORDER else len(KV_ORDER),
    )


def _dense_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The dense baseline's figures, as every job's summary records them (`dense_*`)."""
    row = {k[len("dense_") :]: v for k, v in summary.items() if k.startswith("dense_")}
    ci = {k[len("dense_") :]: v for k, v in (summary.get("ci") or {}).items() if k.startswith("dense_")}
    return {**row, "name": f"dense {summary['full_steps']} steps", "steps": summary["full_steps"], "flops_ratio": 1.0,
            "ci": ci, "vs_dense": {}}  # fmt: skip


def table(summaries: Sequence[dict[str, Any]]) -> str:
    """The study's markdown table for the jobs' summaries (one sweep: they share the dense baseline).

    Raises:
        ValueError: no summaries, or one without the embedded model's evaluation.
    """
    if not summaries:
        raise ValueError("the sweep folder holds no job summaries (<folder>/<job>/summary.json)")
    for summary in summaries:
        if "sfd" not in summary or "dense_sfd" not in summary:
            raise ValueError("a job summary has no embedded-model evaluation (sfd); run the study on model=default")

    def num(value: Any, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    def ci(r: dict[str, Any], key: str, fmt: str) -> str:
        same = stats.not_distinguishable(r.get("vs_dense"), key)
        return stats.with_ci(r.get(key), (r.get("ci") or {}).get(key), fmt, same)

    def line(r: dict[str, Any]) -> str:
        attributes = " / ".join(num(r.get(f"{k}_accuracy"), ".2f") for k in ("shape", "colour", "size", "position"))
        focus = "—" if r.get("object_update_share") is None else (
            f"{r['object_update_share']:.3f} / {r['object_area_share']:.3f}"
        )  # fmt: skip
        return (
            f"| {r['name']} | {r['steps']} | {r['flops_ratio']:.3f} | {ci(r, 'alignment_accuracy', '.3f')} | "
            f"{attributes} | {ci(r, 'fd', '.2f')} | {ci(r, 'sfd', '.2f')} | {ci(r, 'psnr_vs_dense', '.2f')} | "
            f"{ci(r, 'ssim_vs_dense', '.3f')} | {focus} |"
        )

    first = summaries[0]
    lines = [
        f"{first['prompt_count']} prompts; weights: {first['weights']}\n",
        *([stats.legend() + "\n"] if any(s.get("ci") for s in summaries) else []),
        "| method | steps | FLOP ratio | alignment | shape / colour / size / position | FD | sFD | PSNR vs dense "
        "| SSIM vs dense | object update share / area |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        line(_dense_row(first)),
    ]
    lines += [line({**s, "name": _name(s)}) for s in sorted(summaries, key=_order)]
    return "\n".join(lines) + "\n"


def write_table(folder: Path) -> Path:
    """Write `study.md` into the sweep `folder` from its jobs' summaries; return its path."""
    summaries = [json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))]
    path = folder / TABLE
    path.write_text(table(summaries))
    return path


def _value(args: Sequence[str], key: str) -> str | None:
    found = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    return found[-1] if found else None


USAGE = """python -m rasfw.app.study: the quality study on the embedded model, a config-driven experiment.

usage: python -m rasfw.app.study [+experiment=<name>] [overrides]   (= python -m rasfw -m +experiment=study [overrides],
                                                                 then study.md in the sweep folder)
       python -m rasfw.app.study --table <sweep folder>             (rebuild study.md from the jobs' summary.json)

The experiment is `study` unless +experiment=<name> names another (e.g. study_kv_dtype); the sweep goes to
multirun/<experiment>/<date>_<time>/ unless hydra.sweep.dir=... names a folder. Every group and setting of
the main command applies:
"""
"""The study's own lines of `--help`, before the main command's."""


def main(argv: Sequence[str] | None = None) -> None:
    """Run the study experiment with `argv`'s overrides (default `sys.argv[1:]`), then write and print its table.

    Args:
        argv: overrides of the main command (`-m` is implied), `--table <sweep folder>`, `--help` or
            `--hydra-help`.
    """
    from rasfw.app.cli import main as rasfw_main

    args = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("-m", "--multirun")]
    if args[:1] == ["--table"]:
        _print_table(args)
        return
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        rasfw_main(["--help"])
        return
    if "--hydra-help" in args:
        rasfw_main(["--hydra-help"])
        return
    experiment = _value(args, "+experiment")
    if experiment is None:
        experiment = DEFAULT_EXPERIMENT
        args.insert(0, f"+experiment={experiment}")
    folder = _value(args, "hydra.sweep.dir")
    if folder is None:  # a folder named here, so the table can be written into it afterwards
        folder = f"multirun/{experiment}/{datetime.now():%Y-%m-%d_%H-%M-%S}"
        args.append(f"hydra.sweep.dir={folder}")
    rasfw_main(["-m", *args])
    try:
        path = write_table(Path(folder))
    except ValueError as exc:
        fail(exc)
    print(path.read_text(), end="")
    print(f"wrote {path}")


def _print_table(args: list[str]) -> None:
    """`--table <sweep folder>`: write the folder's `study.md` and print it."""
    if len(args) != 2 or not Path(args[1]).is_dir():
        fail(ValueError("usage: python -m rasfw.app.study --table <sweep folder>"))
    try:
        print(write_table(Path(args[1])).read_text(), end="")
    except ValueError as exc:
        fail(exc)


if __name__ == "__main__":
    main()
