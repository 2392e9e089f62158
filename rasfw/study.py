"""`python -m rasfw.study`: RAS quality on the embedded model.

Rows: dense sampling at `steps`; RAS at each ratio (reference schedule); dense sampling with fewer steps
at the FLOPs of each RAS row. Columns: alignment accuracy, FD and spatial FD against real procedural
images of the same prompts, PSNR/SSIM against the dense image of the same seed, FLOP ratio, and for RAS
how strongly its updates favour object pixels.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from omegaconf import DictConfig

from rasfw import RegionAdaptiveSampler, apply_ras, remove_ras
from rasfw.registry import REGISTRY
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset
from rasfw.strategies.starvation import ExpStarvation


def _sampler(cfg: DictConfig, ratio: float, high_ratio: float, kv_dtype: str = "model") -> RegionAdaptiveSampler:
    return RegionAdaptiveSampler(
        metric=REGISTRY.build("metric", cfg.metric),
        ratio=ConstantRatio(ratio, cfg.warmup),
        starvation=ExpStarvation(cfg.k),
        reset=FixedReset([s for s in cfg.resets if s < cfg.steps]),
        high_ratio=high_ratio,
        seed=cfg.seed,
        kv_dtype=kv_dtype,
    )


def _accuracy(per_attribute: dict[str, float]) -> dict[str, float]:
    return {"alignment_accuracy": per_attribute["all"], **{f"{k}_accuracy": v for k, v in per_attribute.items() if k != "all"}}


def generate(pipe, prompts: list[str], cfg: DictConfig, steps: int, sampler=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images for `prompts` in chunks of `cfg.batch` (chunk j seeded with `cfg.seed + j`), and for RAS
    the per-token count of updates made at RAS steps, `(B, rows, cols)`."""
    images, counts = [], []
    state = apply_ras(pipe, sampler) if sampler is not None else None
    try:
        for j, start in enumerate(range(0, len(prompts), cfg.batch)):
            chunk = prompts[start : start + cfg.batch]
            gen = torch.Generator().manual_seed(cfg.seed + j)
            images.append(pipe(chunk, num_inference_steps=steps, guidance_scale=cfg.guidance, generator=gen, output_type="pt", progress=False).images)
            if state is not None:
                dense_steps = sum(1 for s in state.skips if s == 0)
                _, rows, cols = state.grid_shape  # one frame
                counts.append((state.update_count.cpu() - dense_steps).reshape(-1, rows, cols))
    finally:
        if state is not None:
            remove_ras(pipe)
    return torch.cat(images), (torch.cat(counts) if counts else None)


def count_flops(pipe, prompt: str, cfg: DictConfig, steps: int, sampler=None) -> int:
    """FLOPs of one single-prompt generation (FLOPs scale linearly with the batch)."""
    from rasfw.flops import count_flops as counted

    if sampler is not None:
        apply_ras(pipe, sampler)
    try:
        return counted(lambda: pipe([prompt], num_inference_steps=steps, guidance_scale=cfg.guidance,
                                    generator=torch.Generator().manual_seed(cfg.seed), output_type="pt", progress=False))[1]  # fmt: skip
    finally:
        if sampler is not None:
            remove_ras(pipe)


def run_study(cfg: DictConfig, pipe=None, log=print) -> dict[str, Any]:
    """Run the study; returns `{"rows": [...], "prompts": n, ...}`."""
    from rasfw.embedded.data import prompt_set, render
    from rasfw.embedded.eval import attribute_accuracy, fd, load_evaluator, object_update_share, psnr, sfd, ssim
    from rasfw.embedded.models import load_pipeline

    pipe = pipe if pipe is not None else load_pipeline()
    evaluator = load_evaluator()
    prompts, labels = prompt_set(cfg.prompts, cfg.prompt_seed)
    real, masks = render(labels, torch.Generator().manual_seed(cfg.prompt_seed))
    real = (real + 1) / 2
    patch = int(pipe.transformer.config.patch_size)
    dense_flops = count_flops(pipe, prompts[0], cfg, cfg.steps)

    def row(name: str, steps: int, images: torch.Tensor, flops: int, reference: torch.Tensor | None, counts=None):
        entry = {
            "method": name,
            "steps": steps,
            "flops_ratio": flops / dense_flops,
            **_accuracy(attribute_accuracy(images, labels, evaluator)),
            "fd": fd(images, real, evaluator),
            "sfd": sfd(images, real, evaluator),
            "psnr_vs_dense": None if reference is None else psnr(images, reference),
            "ssim_vs_dense": None if reference is None else ssim(images, reference),
        }
        if counts is not None:
            entry.update(object_update_share(counts, masks, patch))
        log(json.dumps(entry))
        return entry

    dense, _ = generate(pipe, prompts, cfg, cfg.steps)
    rows = [row(f"dense {cfg.steps} steps", cfg.steps, dense, dense_flops, None)]
    for ratio in cfg.ratios:
        for high in cfg.high_ratios:
            for kv_dtype in cfg.get("kv_dtypes", ["model"]):
                sampler = _sampler(cfg, float(ratio), float(high), kv_dtype)
                images, counts = generate(pipe, prompts, cfg, cfg.steps, sampler)
                flops = count_flops(pipe, prompts[0], cfg, cfg.steps, sampler)
                name = f"RAS {ratio}, h={high}" + ("" if kv_dtype == "model" else f", K/V {kv_dtype}")
                rows.append(row(name, cfg.steps, images, flops, dense, counts))
        matched = max(1, round(cfg.steps * flops / dense_flops))
        fewer, _ = generate(pipe, prompts, cfg, matched)
        rows.append(row(f"dense {matched} steps (FLOPs of RAS {ratio})", matched, fewer,
                        count_flops(pipe, prompts[0], cfg, matched), dense))  # fmt: skip
    return {"prompts": len(prompts), "weights": pipe.weights_source, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    """The study's table as markdown."""

    def num(value, fmt):
        return "—" if value is None else format(value, fmt)

    lines = [
        f"{result['prompts']} prompts; weights: {result['weights']}\n",
        "| method | steps | FLOP ratio | alignment | shape / colour / size / position | FD | sFD | PSNR vs dense | SSIM vs dense | object update share / area |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        focus = "—" if "object_update_share" not in r else f"{r['object_update_share']:.3f} / {r['object_area_share']:.3f}"
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['flops_ratio']:.3f} | {r['alignment_accuracy']:.3f} | "
            f"{r['shape_accuracy']:.2f} / {r['colour_accuracy']:.2f} / {r['size_accuracy']:.2f} / {r['position_accuracy']:.2f} | "
            f"{r['fd']:.2f} | {r['sfd']:.2f} | {num(r['psnr_vs_dense'], '.2f')} | {num(r['ssim_vs_dense'], '.3f')} | {focus} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    from rasfw.cli import table_app

    table_app("study", run_study, lambda result, cfg: markdown(result))


if __name__ == "__main__":
    main()
