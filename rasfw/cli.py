"""`python -m rasfw`: the Hydra application. A thin `@hydra.main` around `run(cfg)`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rasfw import _compat, job, stats, viz
from rasfw.build import build, plain
from rasfw.compare import psnr, psnr_per_image
from rasfw.flops import count_flops
from rasfw.hooks import apply_ras, ras_backend, ras_execution, remove_ras
from rasfw.registry import REGISTRY, STRATEGY_KINDS
from rasfw.runners import PipelineRunner
from rasfw.sampler import DenseSampler, RegionAdaptiveSampler
from rasfw.strategies._checks import first_line, integer, number

EXIT_USAGE = 2
EXIT_FAILURE = 1  # not a usage error: something failed while running
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
STRATEGY_GROUPS = STRATEGY_KINDS  # each strategy kind is a config group of the same name


PICTURES = ("grid", "heatmap", "selection", "selection_strip")
"""Summary keys of the pictures a run writes (besides one PNG per image)."""


def report(message: str) -> None:
    """Print `message` for the user and log it (Hydra's job log, `<output dir>/rasfw.log`)."""
    print(message, flush=True)
    logging.getLogger("rasfw").info(message)


def _run_label(sampler: RegionAdaptiveSampler) -> str:
    """The RAS run's progress-bar label: "RAS 0.5" for a constant ratio, else the schedule's class."""
    if isinstance(sampler, DenseSampler):
        return "dense sampler"
    value = getattr(sampler.ratio, "value", None)
    return f"RAS {value:g}" if isinstance(value, float) else f"RAS {type(sampler.ratio).__name__}"


class UsageError(ValueError):
    """A setting is wrong; the message is one line naming the setting and what is allowed."""


# -- building from a config -----------------------------------------------------------------------


def build_sampler(cfg: DictConfig) -> RegionAdaptiveSampler:
    """Instantiate the sampler and its strategies from a composed config."""
    strategies = {group: build(cfg[group], group, group) for group in STRATEGY_GROUPS}
    return build(cfg.sampler, "sampler", "sampler", backend=backend_name(cfg.backend), seed=cfg.seed, **strategies)


def backend_name(node: DictConfig) -> str:
    """The registered name of the backend class a `backend` option's `_target_` names (it takes no settings:
    the sampler builds the backend for the pipeline's device)."""
    data = plain(node, "backend")
    target = data.pop("_target_", None)
    if target is None:
        raise UsageError("backend._target_ is missing; it must name a registered backend class")
    if data:
        raise UsageError(f"backend.{next(iter(data))}: unknown setting; a backend option has only a _target_")
    cls = REGISTRY.by_target("backend", target, "backend._target_")
    return next(name for name, registered in REGISTRY.items("backend") if registered is cls)


SETTINGS = {
    "steps": "sampling steps",
    "guidance": "classifier-free guidance scale (at most 1: no guidance)",
    "height": "image height in pixels (null: the model's native size)",
    "width": "image width in pixels (null: the model's native size)",
    "seed": "seed of the starting noise (image i uses seed + i) and of metric=random",
    "prompts": "one image per prompt, e.g. 'prompts=[a red circle,a blue square]'",
    "compare_dense": "also run dense sampling and report speed-up, FLOPs and PSNR against it",
    "progress": "show progress bars",
    "verbose": "let diffusers', transformers' and the hub's own warnings through",
    "match_flops": "with sampler=dense: sample with the step count whose FLOPs match RAS with this config's strategies",
    "eval": "evaluation: prompts (N: the first N of the fixed prompt set; null: the prompts list), prompt_seed, "
            "batch (prompts per call), baseline_cache (folder reusing the dense baseline; null: none), baseline_steps (null: steps)",
    "timing": "warmup (untimed runs of each) and repeats (median of that many alternating runs; 0: no speed-up)",
}  # fmt: skip
"""The plain top-level keys and what each means (the `--help` text)."""
GROUPS = ("model", "sampler", *STRATEGY_GROUPS, "backend", "execution", "cache")


def build_method(cfg: DictConfig, settings: dict[str, Any]) -> tuple[RegionAdaptiveSampler, Any]:
    """The sampler (validated against the step count) and the step cache of a config."""
    sampler = build_sampler(cfg)
    sampler.reset.validate(settings["steps"])
    cache = build(cfg.cache, "cache", "cache")
    if sampler.fill.forecasts and cache.config_class:
        raise ValueError(
            f"fill={REGISTRY.name_of('fill', type(sampler.fill))} forecasts from the outputs the model computed, and "
            f"cache={cache.name} replaces some of them with its own reuse; use fill=reuse with a step cache, or cache=none"
        )
    return sampler, cache


SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
MAX_TOKENS = 65536  # image tokens per image: 4096x4096 pixels for SD3/Flux, far past what any of them was trained on
MAX_CHECKED_JOBS = 512  # sweeps larger than this are checked on their first jobs, the rest job by job


def check_settings(cfg: DictConfig) -> dict[str, Any]:
    """Validate the top-level settings; return them as plain Python values."""
    unknown = [key for key in cfg if key not in (*SETTINGS, *GROUPS)]
    if unknown:
        raise UsageError(f"{unknown[0]}: unknown setting; the settings are {', '.join(SETTINGS)} and the groups {', '.join(GROUPS)}")
    for flag in ("compare_dense", "progress", "verbose"):
        if not isinstance(cfg.get(flag, True), bool):
            raise UsageError(f"{flag} must be true or false; got {cfg.get(flag)!r}")
    prompts = OmegaConf.to_container(cfg.prompts) if OmegaConf.is_list(cfg.prompts) else cfg.prompts
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise UsageError(f"prompts must be a non-empty list of strings; got {prompts!r}")
    extra = job.check_job_settings(cfg)
    if extra["eval_prompt_set"] is not None:
        prompts = extra["eval_prompt_set"]  # eval.prompts=N: the fixed prompt set replaces the prompts list
    return {
        **extra,
        "steps": integer("steps", cfg.steps, "[1, inf)", lambda v: v >= 1),
        "guidance": number("guidance", cfg.guidance, "[0, inf)", lambda v: v >= 0),
        "height": None if cfg.height is None else integer("height", cfg.height, "[1, inf)", lambda v: v >= 1),
        "width": None if cfg.width is None else integer("width", cfg.width, "[1, inf)", lambda v: v >= 1),
        "seed": integer("seed", cfg.seed, f"[{SEED_RANGE[0]}, {SEED_RANGE[1]}]", lambda v: SEED_RANGE[0] <= v <= SEED_RANGE[1]),
        "prompts": prompts,
        "compare_dense": cfg.compare_dense,
        "progress": cfg.get("progress", True),
    }


# -- one run --------------------------------------------------------------------------------------


def run(cfg: DictConfig, output_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Generate with the configured method and the dense baseline (if `compare_dense`), write pictures and
    `summary.json`.

    Everything is validated before the model loads. Returns the summary (None on ranks other than 0 of a
    `torchrun` job: rank 0 writes it).
    """
    settings = check_settings(cfg)
    sampler, cache = build_method(cfg, settings)
    runner: PipelineRunner = build(cfg.model, "runner", "model")
    height, width = _size(runner, settings)
    model_name = _choice("model", cfg.model)
    with job.distributed() as (rank, world):
        if rank == 0:
            report(f"model: {model_name} ({runner.weights})")
        return _run(cfg, Path(output_dir), settings, sampler, cache, runner, (height, width), rank, world)


def _run(cfg, out, settings, sampler, cache, runner, size, rank, world) -> dict[str, Any] | None:
    height, width = size
    prompts, is_dense = settings["prompts"], isinstance(sampler, DenseSampler)
    steps, full_steps = settings["steps"], settings["baseline_steps"] or settings["steps"]
    settings = {**settings, "full_steps": full_steps}
    if settings["match_flops"] and is_dense:
        steps = _matched_steps(cfg, runner, sampler, size, settings)

    def make(chunk: list[str], start: int, at_steps: int = steps, progress: bool | str = False) -> torch.Tensor:
        return runner.generate(chunk, steps=at_steps, guidance=settings["guidance"], height=height, width=width,
                               seed=settings["seed"] + start, progress=progress)  # fmt: skip

    execution = OmegaConf.to_container(cfg.execution)
    mode = execution.pop("name")
    label = settings["progress"] and rank == 0 and _run_label(sampler)
    first: dict[str, Any] = {}  # the pictures show the first call's prompts, with its selections
    with _method(runner, sampler, cache, mode, execution) as state:

        def make_counted(chunk: list[str], start: int) -> tuple[torch.Tensor, torch.Tensor]:
            state.record_selection = start == 0
            images = make(chunk, start, progress=label)
            if start == 0:
                first["selections"] = state.selections
            return images, state.update_count.clone().cpu()  # (B, N)

        generated = job.generate_all(prompts, settings["batch"], make_counted, rank, world, count=mode == "eager")
        state.record_selection = False
        active = state.active_tokens_per_step
        grid_shape = state.grid_shape  # (frames, rows, cols)
        backend, backend_note = ras_backend(runner.pipe).ran()
        executed = ras_execution(runner.pipe).describe()
    images, updates, flops = generated.images, generated.extras, generated.flops
    _check_finite(images, settings)
    if mode != "eager":  # graphs run outside the FLOP counter's reach: count the same calls eagerly, after
        with _method(runner, sampler, cache, "eager", {}):
            flops = job.generate_all(prompts, settings["batch"], lambda c, s: (make(c, s), None), rank, world).flops

    baseline = None
    if settings["compare_dense"] and not (is_dense and steps == full_steps and not cache.config_class):
        dense_label = settings["progress"] and rank == 0 and "dense"
        baseline = _baseline(cfg, runner, settings, size, lambda c, s: (make(c, s, full_steps, dense_label), None), rank, world)
    timing = _timing(settings, runner, sampler, cache, mode, execution, baseline, make, is_dense, world)
    if rank != 0:
        return None
    dense_images = None if baseline is None else baseline["images"]
    dense_flops = None if baseline is None else baseline["flops"]

    updates = updates.reshape(-1, *grid_shape)  # (B, frames, rows, cols)
    tokens = updates[0].numel()
    shown = min(settings["batch"], len(prompts))
    dense_shown = None if dense_images is None else dense_images[:shown]
    out.mkdir(parents=True, exist_ok=True)
    if images.ndim == 5:  # videos (B, frames, 3, H, W)
        files = _write_videos(out, images[:shown], dense_shown, updates[:shown], first["selections"], prompts[:shown])
    else:
        updates = updates[:, 0]  # images: one frame, (B, rows, cols)
        files = _write_pictures(out, images[:shown], dense_shown, updates[:shown], first["selections"], sampler,
                                prompts[:shown])  # fmt: skip
    summary = {
        "model": _choice("model", cfg.model),
        "weights": runner.weights,
        "sampler": _choice("sampler", cfg.sampler),
        "cache": cache.name,
        "backend": backend,  # what ran (a Triton request falls back to the torch reference where it cannot run)
        "backend_note": backend_note or None,
        **executed,
        "kv_dtype": sampler.kv_dtype,
        "count": sampler.count,
        "steps": steps,
        "full_steps": full_steps,
        "guidance": settings["guidance"],
        "seed": settings["seed"],
        "height": height,
        "width": width,
        "prompts": prompts if settings["eval_prompts"] is None else f"prompt_set({len(prompts)}, seed={settings['prompt_seed']})",
        "prompt_count": len(prompts),
        "processes": world,
        "tokens": tokens,
        "active_tokens_per_step": active,
        **timing,
        "flops": flops,
        "dense_flops": dense_flops,
        "flops_ratio": None if dense_flops is None else flops / dense_flops,
        "dense_baseline": None if baseline is None else baseline["origin"],
        "max_abs_diff_vs_dense": None if dense_images is None else float((images - dense_images).abs().max()),
        "psnr_vs_dense": None if dense_images is None else psnr(images, dense_images),
        **files,
    }
    dense_steps = sum(1 for a in active if a == tokens)
    evaluated = runner.evaluate(prompts, images, dense_images, updates - dense_steps)
    features, per_prompt = evaluated.pop("features", None), _per_prompt(settings, images, dense_images, evaluated)
    summary.update(evaluated)
    skipped = len(prompts) - summary.get("evaluated_images", len(prompts))
    if skipped:
        report(f"note: {skipped} of {len(prompts)} prompts are not in the model's prompt grammar; "
               "its quality metrics skip them")  # fmt: skip
    if features:
        summary["eval_features"] = stats.save_features(out / stats.FEATURES_FILE, features).name
    summary.update(stats.annotate({**summary, "per_prompt": per_prompt}, features))
    summary["settings"] = job.resolved_settings(cfg, _choices(), GROUPS)
    summary["overrides"] = _task_overrides()
    summary["per_prompt"] = per_prompt  # last: long lists
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _per_prompt(settings: dict[str, Any], images: torch.Tensor, dense_images: torch.Tensor | None,
                evaluated: dict[str, Any]) -> dict[str, Any]:
    """What a bootstrap over prompts needs from the run (`rasfw.stats`): each prompt's seed (that of its call),
    PSNR against the dense image of the same seed (null: identical) and the runner's per-prompt values.

    Args:
        settings: the checked settings (`prompts`, `seed`, `batch`).
        images: `(B, 3, H, W)` (or videos) of the method.
        dense_images: the dense baseline's images of the same shape, or None.
        evaluated: the runner's evaluation; its `per_prompt` is moved into the result.
    """
    batch, count = settings["batch"], len(settings["prompts"])
    result: dict[str, Any] = {"seeds": [settings["seed"] + i - i % batch for i in range(count)]}
    if dense_images is not None:
        per_image = psnr_per_image(images, dense_images)  # (B,)
        result["psnr_vs_dense"] = [None if v == float("inf") else v for v in per_image.tolist()]
    return {**result, **evaluated.pop("per_prompt", {})}


@contextlib.contextmanager
def _method(runner, sampler, cache, mode: str, execution: dict) -> Iterator[Any]:
    """The step cache and RAS (or dense sampling through the same hooks) applied; both removed after."""
    cache.apply(runner.pipe.transformer)
    try:
        state = apply_ras(runner.pipe, sampler, execution=mode, **execution)
        cache.follow(state, runner.pipe.transformer)  # beside RAS: forgets its per-token state when tokens change
        try:
            yield state
        finally:
            remove_ras(runner.pipe)
    finally:
        cache.remove(runner.pipe.transformer)


def _matched_steps(cfg, runner, sampler, size, settings) -> int:
    """`match_flops=true` with `sampler=dense`: the step count whose dense FLOPs match RAS with this config's
    strategies (one prompt counted each way; FLOPs scale with the batch)."""
    ras = RegionAdaptiveSampler(**{g: build(cfg[g], g, g) for g in STRATEGY_GROUPS}, seed=settings["seed"])
    prompt = settings["prompts"][:1]

    def flops(s: RegionAdaptiveSampler | None) -> int:
        def gen() -> torch.Tensor:
            return runner.generate(prompt, steps=settings["steps"], guidance=settings["guidance"], height=size[0],
                                   width=size[1], seed=settings["seed"], progress=False)  # fmt: skip

        if s is None:
            return count_flops(gen)[1]
        apply_ras(runner.pipe, s)
        try:
            return count_flops(gen)[1]
        finally:
            remove_ras(runner.pipe)

    return max(1, round(settings["steps"] * flops(ras) / flops(None)))


def _baseline(cfg, runner, settings, size, make, rank: int, world: int) -> dict[str, Any]:
    """The dense baseline at the configured steps, from `eval.baseline_cache` if it holds it, else computed
    (and stored there)."""
    fields = {
        "model": _choice("model", cfg.model), "weights": runner.weights,
        "runner": OmegaConf.to_container(cfg.model, resolve=True), "steps": settings["full_steps"],
        "guidance": settings["guidance"], "size": list(size), "seed": settings["seed"],
        "prompts": settings["prompts"], "batch": settings["batch"],
    }  # fmt: skip
    key = job.baseline_key(fields)
    folder = settings["baseline_cache"]
    found = job.load_baseline(folder, key) if rank == 0 else None
    if world > 1:
        found = job.from_rank0(found, world)
    if found is not None:
        return {**found, "key": key, "origin": f"cache {key}"}
    generated = job.generate_all(settings["prompts"], settings["batch"], make, rank, world)
    result = {"images": generated.images, "flops": generated.flops, "key": key,
              "origin": "computed" if folder is None else f"computed, stored as {key}"}  # fmt: skip
    if rank == 0:
        job.store_baseline(folder, key, generated.images, {"flops": generated.flops})
    return result


def _timing(settings, runner, sampler, cache, mode, execution, baseline, make, is_dense, world) -> dict[str, Any]:
    """Warm-up, then the median of `timing.repeats` runs of the first chunk, the method and dense alternating.

    Dense is timed in every job, even when its images come from the baseline cache: a time measured
    beside the method's, on the machine as it is now, is the only fair one."""
    reason = None
    if is_dense and not cache.config_class and baseline is None:
        reason = "sampler=dense: this run is the baseline"
    elif baseline is None:
        reason = "compare_dense=false: no baseline to compare with"
    elif world > 1:
        reason = f"{world} processes: timing needs one process"
    elif settings["repeats"] == 0:
        reason = "timing.repeats=0: not timed"
    result = {"time_s": None, "dense_time_s": None, "speedup": None, "speedup_note": reason,
              "timing": {"warmup": settings["warmup"], "repeats": settings["repeats"], "order": "alternating",
                         "prompts": min(settings["batch"], len(settings["prompts"]))}}  # fmt: skip
    if reason is not None:
        return result
    chunk = settings["prompts"][: settings["batch"]]

    def method() -> None:
        with _method(runner, sampler, cache, mode, execution):
            make(chunk, 0)

    dense = lambda: make(chunk, 0, settings["full_steps"])  # noqa: E731
    seconds, dense_seconds = job.time_alternating(method, dense, settings["warmup"], settings["repeats"])
    return {**result, "time_s": seconds, "dense_time_s": dense_seconds, "speedup": dense_seconds / seconds}


def _choices() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _choice(group: str, node: DictConfig) -> str:
    """The option chosen for `group` (e.g. "default"), or the target's class name outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group))
    return str(node.get("_target_", group)).rsplit(".", 1)[-1]


def _check_finite(images: torch.Tensor, settings: dict[str, Any]) -> None:
    """Never write a silently wrong image: NaN or infinite pixels stop the run with one line."""
    if not torch.isfinite(images).all():
        raise UsageError(
            f"the generated images contain NaN or infinite values (guidance={settings['guidance']}, "
            f"steps={settings['steps']}); try a smaller guidance or the model's own dtype"
        )


def _size(runner: PipelineRunner, settings: dict[str, Any]) -> tuple[int, int]:
    height = settings["height"] or runner.default_size[0]
    width = settings["width"] or runner.default_size[1]
    multiple = runner.patch_size * runner.latent_scale
    largest = runner.max_size
    for name, value in (("height", height), ("width", width)):
        if largest is not None and value > largest:
            raise UsageError(f"{name} must be at most {largest} for this model (its position embedding); got {value}")
        if value % multiple:
            raise UsageError(f"{name} must be a multiple of {multiple} (patch size x latent scale); got {value}")
    tokens = (height // multiple) * (width // multiple)
    if tokens > MAX_TOKENS:
        raise UsageError(f"height x width is {height}x{width}: {tokens} tokens; at most {MAX_TOKENS} "
                         f"({int(MAX_TOKENS ** 0.5) * multiple}x{int(MAX_TOKENS ** 0.5) * multiple} for this model)")  # fmt: skip
    return height, width


def _write_pictures(out: Path, images, dense_images, updates, selections, sampler, prompts) -> dict[str, Any]:
    """Write every picture of a run; return their file names by role.

    Args:
        images: `(B, 3, H, W)` RAS images; `dense_images` the dense ones or None.
        updates: `(B, rows, cols)` how often each patch was recomputed, over all steps.
        selections: per step the `(B, a)` active tokens, None at dense steps.
    """
    steps, (b, rows, cols) = len(selections), updates.shape
    scale = max(1, 256 // max(images.shape[-2:]))
    files: dict[str, Any] = {"images": []}
    for i in range(b):
        for name, picture in (("ras", images[i]), ("dense", None if dense_images is None else dense_images[i])):
            if picture is not None:
                viz.to_pil(picture, scale).save(out / f"{name}_{i}.png")
                files["images"].append(f"{name}_{i}.png")
    ras_steps = sum(1 for s in selections if s is not None)
    dense_steps = steps - ras_steps
    share = (updates - dense_steps).float() / ras_steps if ras_steps else torch.zeros(b, rows, cols)  # (B, rows, cols)
    tile = viz.to_pil(images[0], scale).size[::-1]
    heat = [viz.heatmap(share[i], tile) for i in range(b)]
    units = viz.HEAT_UNITS if ras_steps else "no RAS steps in this run: every patch recomputed at every step"
    bar = viz.colour_bar(tile[0], units)
    heat_header = f"heat map ({ras_steps} RAS steps)"
    viz.comparison_grid([heat], prompts, [heat_header], side=bar).save(out / "heatmap.png")  # one column per image
    headers = (["dense"] if dense_images is not None else []) + ["RAS", heat_header]
    tiles = [
        ([viz.to_pil(dense_images[i], scale)] if dense_images is not None else []) + [viz.to_pil(images[i], scale), heat[i]]
        for i in range(b)
    ]  # fmt: skip
    viz.comparison_grid(tiles, headers, prompts, side=bar).save(out / "grid.png")
    actives = [None if s is None else _active_map(s, rows, cols) for s in selections]
    labels = _step_labels(sampler, selections, rows * cols)
    viz.save_gif(viz.selection_frames(images, actives, labels, max(1, scale // 2)), out / "selection.gif")
    headers = [f"{i}\n{'dense' if s is None else f'{s.shape[1] / (rows * cols):.2f}'}" for i, s in enumerate(selections)]
    viz.selection_strip(images, actives, headers, prompts, max(1, scale // 4)).save(out / "selection.png")
    return {**files, "heatmap": "heatmap.png", "grid": "grid.png", "selection": "selection.gif", "selection_strip": "selection.png"}


def _active_map(selected: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """`(B, a)` active token indices -> `(B, rows, cols)` boolean map."""
    active = torch.zeros(selected.shape[0], rows * cols, dtype=torch.bool)
    active.scatter_(1, selected, True)
    return active.reshape(-1, rows, cols)


def _step_labels(sampler: RegionAdaptiveSampler, selections: list, tokens: int) -> list[str]:
    """Per step: its number (0-based, as `reset.steps` counts), what kind of step it was, and how many patches ran."""
    steps, labels = len(selections), []
    for i, selected in enumerate(selections):
        if selected is not None:
            a = selected.shape[1]
            labels.append(f"step {i}/{steps - 1}: RAS, ratio {a / tokens:.2f}: {a} of {tokens} patches recomputed (grey: cached)")
        else:
            why = "error reset" if i and sampler.reset.is_dense(i, steps) else "warm-up" if sampler.ratio.ratio(i, steps, tokens) >= 1 or i == 0 else "ratio rounds to every patch"
            labels.append(f"step {i}/{steps - 1}: dense ({why}): all {tokens} patches recomputed")
    return labels


def _write_videos(out: Path, videos, dense_videos, updates, selections, prompts) -> dict[str, Any]:
    """Write the pictures of a video run; return their file names by role.

    Per video `ras_<i>.gif` (and `dense_<i>.gif`), and `heatmap_<i>.gif`: each frame beside the heat map of
    the latent frame it was decoded from; `heatmap.png`: a row per video, a column per latent frame;
    `grid.png`: the middle frame, dense | RAS | heat map.

    Args:
        videos: `(B, F, 3, H, W)` RAS videos; `dense_videos` the dense ones or None.
        updates: `(B, latent frames, rows, cols)` how often each token was recomputed, over all steps.
        selections: per step the `(B, a)` active tokens, None at dense steps.
        prompts: one per video (the captions).
    """
    b, frames, latent = videos.shape[0], videos.shape[1], updates.shape[1]
    scale = max(1, 256 // max(videos.shape[-2:]))
    ras_steps = sum(1 for s in selections if s is not None)
    share = (updates - (len(selections) - ras_steps)).float() / max(ras_steps, 1)  # (B, latent frames, rows, cols)
    ms = 125  # 8 frames per second
    names = []
    for i in range(b):
        viz.save_gif([viz.to_pil(frame, scale) for frame in videos[i]], out / f"ras_{i}.gif", ms)
        names.append(f"ras_{i}.gif")
        if dense_videos is not None:
            viz.save_gif([viz.to_pil(frame, scale) for frame in dense_videos[i]], out / f"dense_{i}.gif", ms)
            names.append(f"dense_{i}.gif")
        viz.save_gif(viz.video_heatmap_frames(videos[i], share[i], scale), out / f"heatmap_{i}.gif", ms)
        names.append(f"heatmap_{i}.gif")
    tile = viz.to_pil(videos[0, 0], scale).size[::-1]
    bar = viz.colour_bar(tile[0], viz.HEAT_UNITS if ras_steps else "no RAS steps in this run")
    captions = list(prompts)
    strips = [[viz.heatmap(share[i, f], tile) for f in range(latent)] for i in range(b)]
    viz.comparison_grid(strips, [f"latent frame {f}" for f in range(latent)], captions, side=bar).save(out / "heatmap.png")
    middle = frames // 2
    tiles = [
        ([viz.to_pil(dense_videos[i, middle], scale)] if dense_videos is not None else [])
        + [viz.to_pil(videos[i, middle], scale), viz.heatmap(share[i, viz.latent_frame_of(middle, frames, latent)], tile)]
        for i in range(b)
    ]
    headers = (["dense"] if dense_videos is not None else []) + ["RAS", f"heat map ({ras_steps} RAS steps)"]
    viz.comparison_grid(tiles, [f"{h}, frame {middle}" for h in headers], captions, side=bar).save(out / "grid.png")
    return {"videos": names, "heatmap": "heatmap.png", "grid": "grid.png"}


# -- the command line -----------------------------------------------------------------------------


def _hydra_entry() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base=None, config_path="pkg://rasfw.conf", config_name="config")
    def task(cfg: DictConfig) -> None:
        output_dir = HydraConfig.get().runtime.output_dir
        try:
            summary = run(cfg, output_dir)
        except (ValueError, TypeError, FileNotFoundError) as exc:
            _fail(exc)
        except KeyboardInterrupt:
            print("error: interrupted; nothing was written past the last finished file", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - no bare traceback from the CLI, whatever went wrong
            if os.environ.get("RASFW_DEBUG"):
                raise
            print(f"error: {type(exc).__name__}: {first_line(exc)} (RASFW_DEBUG=1 shows the traceback)", file=sys.stderr)
            sys.exit(EXIT_FAILURE)
        if summary is None:  # a torchrun rank other than 0: rank 0 reports
            return
        keys = ("execution", "graphs", "speedup", "speedup_note", "flops_ratio", "max_abs_diff_vs_dense", "psnr_vs_dense")
        shown = {k: summary[k] for k in keys}
        report(f"summary: {json.dumps(shown)}")
        files = [*summary.get("images", []), *summary.get("videos", []), *(summary[k] for k in PICTURES if k in summary)]
        written = [*files, "summary.json", *([summary["eval_features"]] if summary.get("eval_features") else []),
                   f"{HydraConfig.get().job.name}.log"]  # fmt: skip
        written = [name for name in written if (Path(output_dir) / name).exists()]
        report(f"wrote {len(written)} files to {output_dir}:\n" + "\n".join(f"  {name}" for name in written))

    task()


def table_app(config_name: str, compute: Callable[[DictConfig], dict], render: Callable[[dict, DictConfig], str]) -> None:
    """Run a Hydra app that measures something and reports a table.

    `compute(cfg)` returns a JSON-serialisable dict; it is written with the config as
    `<config_name>.json`, and `render(result, cfg)` as `<config_name>.md`, in Hydra's output folder.
    A `ValueError` from `compute` is a usage error: one line, exit code 2.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base=None, config_path="pkg://rasfw.conf", config_name=config_name)
    def task(cfg: DictConfig) -> None:
        try:
            result = compute(cfg)
        except ValueError as exc:
            _fail(exc)
        out = Path(HydraConfig.get().runtime.output_dir)
        result = {**result, "config": OmegaConf.to_container(cfg)}
        (out / f"{config_name}.json").write_text(json.dumps(result, indent=2) + "\n")
        table = render(result, cfg)
        (out / f"{config_name}.md").write_text(table)
        print(table)
        print(f"wrote {out / f'{config_name}.json'}")

    task()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI with `argv` (default: `sys.argv[1:]`); bad settings exit with code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.lower() in ("verbose=true", "verbose=1") for a in args):
        _quiet_libraries()
    try:
        search_paths = REGISTRY.load_plugins()
    except Exception as exc:  # a broken plugin must not hide behind a traceback
        _fail(UsageError(f"plugin failed to load: {first_line(exc)}"))
    overrides, help_only = _overrides(args)
    if search_paths:
        _add_search_paths(args, overrides, search_paths)
        overrides, _ = _overrides(args)
    if help_only and any(a in ("-h", "--help") for a in args):
        print(_help(search_paths))
        return
    if not help_only:
        _precheck(overrides)
    sys.argv = [sys.argv[0], *args]
    _hydra_entry()


def _help(search_paths: list[str]) -> str:
    """`--help`: every group's options, plugins' included, and every key explained (rasfw.help)."""
    from hydra import compose, initialize_config_module

    from rasfw.help import render_help

    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        cfg = compose("config", return_hydra_config=True)
    plain = OmegaConf.to_container(cfg)
    defaults = {**OmegaConf.to_container(cfg.hydra.runtime.choices), **{k: plain.get(k) for k in SETTINGS}}
    return render_help(GROUPS, SETTINGS, defaults, search_paths)


def _quiet_libraries() -> None:
    """Keep diffusers', transformers' and the hub's warnings (missing optional packages, hub retries) off
    the console, so an error is the one line it should be; `verbose=true` lets them through. Set through
    their environment variables, before they are imported, and only where the user has not set them."""
    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    for logger in ("diffusers", "transformers", "huggingface_hub"):  # already imported (in-process callers)
        logging.getLogger(logger).setLevel(logging.ERROR)


def _add_search_paths(args: list[str], overrides: list[str], paths: list[str]) -> None:
    """Add the plugins' config folders to `hydra.searchpath`: into the user's own override if there is one
    (a second one would replace it), else next to the user's overrides (Hydra reads them as one run of
    positional arguments, so an override after a flag would be refused)."""
    for i, arg in enumerate(args):
        if arg.startswith("hydra.searchpath="):
            existing = arg.split("=", 1)[1].strip().strip("[]")
            args[i] = f"hydra.searchpath=[{','.join([p for p in existing.split(',') if p] + paths)}]"
            return
    at = args.index(overrides[0]) if overrides else len(args)
    args.insert(at, f"hydra.searchpath=[{','.join(paths)}]")


def _overrides(args: list[str]) -> tuple[list[str], bool]:
    """The overrides among `args` (Hydra's own argument parser splits them from flags), and whether
    `args` only ask for help (`--help`, `--hydra-help`), which needs no check."""
    try:
        parsed = _compat.hydra_args_parser().parse_args(args)
    except SystemExit:  # argparse printed its own one-line usage error
        sys.exit(EXIT_USAGE)
    return list(parsed.overrides), bool(parsed.help or parsed.hydra_help)


def _precheck(overrides: list[str]) -> None:
    """Compose once before Hydra runs, so composition errors become one line and exit code 2.

    Sweep overrides (`-m ratio.value=0.25,0.5`) are left out of this composition (each job checks its own
    values); everything else, the experiment and plugin files they select included, is composed and
    passes the same gates as a run: unknown keys and options, and Hydra callbacks only of registered
    classes (Hydra would run whatever their `_target_` names).
    """
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and value:
            _check_writable(key.lstrip("+"), value)
    try:
        parsed = _parser().parse_overrides(overrides)
        kept = [
            o.input_line for o in parsed
            if not o.is_sweep_override() and (not o.key_or_group.startswith(("hydra.", "hydra/"))
                                              or o.key_or_group == "hydra.searchpath"
                                              or o.key_or_group.startswith(_CHECKED_HYDRA))
        ]  # fmt: skip
        with initialize_config_module(config_module="rasfw.conf", version_base=None):
            cfg = compose("config", overrides=kept, return_hydra_config=True)
    except MissingConfigException as exc:
        group, _, option = (exc.missing_cfg_file or "").rpartition("/")
        hint = "; Hydra plugins come with pip install \"rasfw[launchers]\"" if group.startswith("hydra/") else ""
        if exc.options is not None and group:
            _fail(UsageError(f"{group}: unknown option '{option}'; available: {', '.join(exc.options)}{hint}"))
        _fail(UsageError(first_line(exc) + hint))
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ or exc
        key = getattr(cause, "full_key", None)
        if key:
            _fail(UsageError(f"{key}: unknown setting ({first_line(cause)}); check the spelling"))
        _fail(UsageError(first_line(exc)))
    _check_callbacks(cfg.hydra.get("callbacks") or {})
    _check_plugins(cfg)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    sweeps += _config_sweeps(cfg, {o.get_key_element() for o in sweeps})
    if sweeps:
        _check_sweep(kept, sweeps)


def _check_callbacks(callbacks: DictConfig) -> None:
    """Hydra instantiates every `hydra.callbacks` entry; allow only classes registered as callbacks."""
    from rasfw.build import plain, reject_nested_targets

    for name, node in callbacks.items():
        setting = f"hydra.callbacks.{name}"
        try:
            data = plain(node, setting)
            reject_nested_targets({k: v for k, v in data.items() if k != "_target_"}, setting)
            REGISTRY.by_target("callback", data.get("_target_"), f"{setting}._target_")
        except ValueError as exc:
            _fail(UsageError(f"{first_line(exc)} (Hydra callbacks run code: only registered callback classes are allowed)"))


_CHECKED_HYDRA = ("hydra.callbacks", "hydra.launcher", "hydra/launcher", "hydra.sweeper", "hydra/sweeper")
"""Hydra settings composed by the precheck: they name classes Hydra instantiates."""


def _check_plugins(cfg: DictConfig) -> None:
    """Hydra builds the launcher and the sweeper only from installed Hydra plugins, but builds any `_target_`
    nested in their settings: refuse those."""
    from rasfw.build import reject_nested_targets

    for name in ("launcher", "sweeper"):
        node = cfg.hydra.get(name)
        if node is not None:
            data = OmegaConf.to_container(node, resolve=False)
            try:
                reject_nested_targets({k: v for k, v in data.items() if k != "_target_"}, f"hydra.{name}")
            except ValueError as exc:
                _fail(UsageError(str(exc)))


def _config_sweeps(cfg: DictConfig, given: set[str]) -> list:
    """The sweep an experiment file declares (`hydra.sweeper.params`), less the keys the command line sweeps."""
    params = cfg.hydra.get("sweeper", {}).get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items() if key not in given]
    try:
        return [o for o in _parser().parse_overrides(lines) if o.is_sweep_override()] if lines else []
    except Exception as exc:  # noqa: BLE001 - a malformed sweep in a config file: one line
        _fail(UsageError(f"hydra.sweeper.params: {first_line(exc)}"))


def _parser():
    """Hydra's override parser with a config loader, so sweeps over groups (`glob(*)`) list their options
    as Hydra's sweeper does."""
    return _compat.hydra_overrides_parser("rasfw.conf")


def _check_sweep(kept: list[str], sweeps: list) -> None:
    """Validate every job of a sweep before the first one starts: compose it, check its settings and
    build its sampler (no model is loaded). One line names the bad setting and the job's overrides."""
    import itertools

    from hydra import compose, initialize_config_module

    choices = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] for o in sweeps]
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        for job in itertools.islice(itertools.product(*choices), MAX_CHECKED_JOBS):
            try:
                cfg = compose("config", overrides=[*kept, *job])
                build_method(cfg, check_settings(cfg))
            except Exception as exc:  # noqa: BLE001 - a bad setting or a composition error: one line either way
                _fail(UsageError(f"{first_line(exc)} (in the sweep job {' '.join(job)})"))


def _check_writable(setting: str, folder: str) -> None:
    """Hydra creates the output folder before the job starts; make sure it can, so a bad one is one line."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe = Path(folder) / f".rasfw-write-check-{os.getpid()}"  # per process: torchrun ranks check at once
        probe.touch()
        probe.unlink(missing_ok=True)
    except OSError as exc:
        _fail(UsageError(f"{setting}: cannot write to '{folder}': {exc.strerror or type(exc).__name__}"))



def _fail(exc: BaseException) -> None:
    if os.environ.get("RASFW_DEBUG"):
        raise exc
    print(f"error: {first_line(exc)}", file=sys.stderr)
    sys.exit(EXIT_USAGE)
