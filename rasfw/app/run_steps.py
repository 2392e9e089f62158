"""One run of the main command (`python -m rasfw`), as named steps over a `RunContext`: generate with the
method, recount its FLOPs where graphs hid them, the dense baseline, timing, the pictures and the summary.

`run(cfg, output_dir)` validates everything before the model loads, then takes the steps in that order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rasfw.app import job, pictures, stats
from rasfw.app.console import show
from rasfw.app.files import write_text
from rasfw.app.settings import (
    GROUPS,
    STRATEGY_GROUPS,
    UsageError,
    build_method,
    check_settings,
    execution_option,
    image_size,
)
from rasfw.attach import apply_ras, ras_backend, ras_execution, remove_ras
from rasfw.build import build
from rasfw.compare import psnr, psnr_per_image
from rasfw.flops import count_flops
from rasfw.pipelines.runners import PipelineRunner
from rasfw.sampler import DenseSampler, RegionAdaptiveSampler


@dataclass(frozen=True)
class RunContext:
    """What every step of a run reads: the config, its checked settings, what it built, and where it runs.

    Args:
        cfg: the composed config.
        out: the output folder.
        settings: the checked settings (`check_settings`) and `full_steps`, the dense baseline's steps.
        sampler: the method's sampler (a `DenseSampler` for `sampler=dense`).
        cache: the step cache (`cache=none`: its `config_class` is None).
        runner: the model's runner.
        size: `(height, width)` in pixels.
        rank: this process's rank; `world` the number of processes (`torchrun`).
        steps: the method's steps (`match_flops` may change them).
        mode: the execution mode; `execution` its options.
    """

    cfg: DictConfig
    out: Path
    settings: dict[str, Any]
    sampler: RegionAdaptiveSampler
    cache: Any
    runner: PipelineRunner
    size: tuple[int, int]
    rank: int
    world: int
    steps: int
    mode: str
    execution: dict[str, Any]

    @property
    def is_dense(self) -> bool:
        """The method is the dense sampler."""
        return isinstance(self.sampler, DenseSampler)

    @property
    def full_steps(self) -> int:
        """Steps of the dense baseline."""
        return self.settings["full_steps"]

    def progress(self, label: str) -> bool | str:
        """A progress bar's label where bars are shown (rank 0, `progress=true`), else False."""
        return self.settings["progress"] and self.rank == 0 and label

    def make(self, chunk: list[str], start: int, steps: int | None = None, progress: bool | str = False) -> torch.Tensor:
        """Generate `chunk` (its first image seeded `seed + start`) with whatever is attached to the pipeline.

        Args:
            chunk: the prompts of one call.
            start: the index of its first prompt.
            steps: sampling steps (None: the method's).
            progress: the progress bar's label, or False.
        """
        return self.runner.generate(chunk, steps=self.steps if steps is None else steps, guidance=self.settings["guidance"],
                                    height=self.size[0], width=self.size[1], seed=self.settings["seed"] + start,
                                    progress=progress)  # fmt: skip


@dataclass(frozen=True)
class MethodRun:
    """What the method's generation left: its images and FLOPs, and what RAS recorded while it ran.

    Args:
        images: `(B, 3, H, W)` images or `(B, F, 3, H, W)` videos.
        updates: `(B, frames, rows, cols)` how often each token was recomputed.
        flops: FLOPs of all the calls.
        selections: per step the `(B, a)` active tokens of the first call, None at dense steps.
        active: active tokens per step.
        backend: the backend that ran; `backend_note` why, where it is not the requested one.
        executed: the executor's description (`ras_execution(pipe).describe()`).
    """

    images: torch.Tensor
    updates: torch.Tensor
    flops: int
    selections: list
    active: list[int]
    backend: str
    backend_note: str
    executed: dict[str, Any]


def run(cfg: DictConfig, output_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Generate with the configured method and the dense baseline (if `compare_dense`), write pictures and
    `summary.json`.

    Everything is validated before the model loads. Returns the summary (None on ranks other than 0 of a
    `torchrun` job: rank 0 writes it).

    Args:
        cfg: the composed main config (`conf/config.yaml`).
        output_dir: where the pictures and `summary.json` go.
    """
    settings = check_settings(cfg)
    sampler, cache = build_method(cfg, settings)
    runner: PipelineRunner = build(cfg.model, "runner", "model")
    size = image_size(runner, settings)
    with job.distributed() as (rank, world):
        if rank == 0:
            show(f"model: {choice('model', cfg.model)} ({runner.weights})")
        return run_steps(context(cfg, Path(output_dir), settings, sampler, cache, runner, size, rank, world))


def context(cfg: DictConfig, out: Path, settings: dict[str, Any], sampler: RegionAdaptiveSampler, cache: Any,
            runner: PipelineRunner, size: tuple[int, int], rank: int, world: int) -> RunContext:  # fmt: skip
    """The run's context: the baseline's steps added to the settings, the method's steps (`match_flops`) and
    the execution mode split from its options. Args as `RunContext`'s."""
    settings = {**settings, "full_steps": settings["baseline_steps"] or settings["steps"]}
    mode, execution = execution_option(cfg.execution)
    ctx = RunContext(cfg, out, settings, sampler, cache, runner, size, rank, world, settings["steps"], mode, execution)
    if settings["match_flops"] and ctx.is_dense:
        ctx = dataclasses.replace(ctx, steps=matched_steps(ctx))
    return ctx


def run_steps(ctx: RunContext) -> dict[str, Any] | None:
    """The steps of a run, in order; the summary (None on ranks other than 0).

    Args:
        ctx: the run's context.
    """
    method = generate(ctx)
    check_finite(method.images, ctx.settings)
    if ctx.mode != "eager":  # graphs run outside the FLOP counter's reach: count the same calls eagerly, after
        method = dataclasses.replace(method, flops=recount_flops(ctx))
    dense = baseline(ctx)
    timed = timing(ctx, dense)
    if ctx.rank != 0:
        return None
    files = write_pictures(ctx, method, dense)
    return write_summary(ctx, method, dense, timed, files)


# -- the steps ------------------------------------------------------------------------------------


LONG_RUN_S = 1800.0  # an estimate above this is said on the console after the first batch


def _estimate(ctx: RunContext, first_s: float) -> None:
    """After the first batch: a run estimated to take longer than `LONG_RUN_S` says so, with what to lower."""
    settings = ctx.settings
    batches = -(-len(settings["prompts"]) // settings["batch"]) / max(ctx.world, 1)
    dense = 1 if settings.get("compare_dense") else 0  # the dense baseline costs about as much per batch, or more
    timed = 2 * (settings.get("repeats", 0) + settings.get("warmup", 0))  # each timed run: one batch of the method and of dense
    total = first_s * (batches * (1 + dense) + timed)
    if total > LONG_RUN_S:
        show(f"note: at {first_s:.0f} s for the first batch of {settings['batch']}, this run takes about "
             f"{total / 3600:.1f} h; lower eval.prompts or steps for a quicker look")  # fmt: skip


def generate(ctx: RunContext) -> MethodRun:
    """Generate every prompt with the method attached; record the first call's selections and each image's
    update counts (FLOPs counted here in eager mode).

    Args:
        ctx: the run's context.
    """
    label = ctx.progress(_run_label(ctx.sampler))
    first: dict[str, Any] = {}  # the pictures show the first call's prompts, with its selections
    with attached(ctx, ctx.mode, ctx.execution) as state:

        def make_counted(chunk: list[str], start: int) -> tuple[torch.Tensor, torch.Tensor]:
            state.record_selection = start == 0
            began = time.perf_counter()
            images = ctx.make(chunk, start, progress=label)
            if start == 0:
                first["selections"] = state.selections
                if ctx.rank == 0:
                    _estimate(ctx, time.perf_counter() - began)
            return images, state.update_count.clone().cpu()  # (B, N)

        settings = ctx.settings
        generated = job.generate_all(settings["prompts"], settings["batch"], make_counted, ctx.rank, ctx.world,
                                     count=ctx.mode == "eager")  # fmt: skip
        state.record_selection = False
        updates = generated.extras.reshape(-1, *state.grid_shape)  # (B, frames, rows, cols)
        backend, backend_note = ras_backend(ctx.runner.pipe).ran()
        executed = ras_execution(ctx.runner.pipe).describe()
        return MethodRun(generated.images, updates, generated.flops, first.get("selections"),
                         state.active_tokens_per_step, backend, backend_note, executed)  # fmt: skip


def recount_flops(ctx: RunContext) -> int:
    """FLOPs of the method's calls, counted again in eager mode (compiled or captured graphs hide them).

    Args:
        ctx: the run's context.
    """
    settings = ctx.settings
    with attached(ctx, "eager", {}):
        return job.generate_all(settings["prompts"], settings["batch"], lambda c, s: (ctx.make(c, s), None), ctx.rank,
                                ctx.world).flops  # fmt: skip


def baseline(ctx: RunContext) -> dict[str, Any] | None:
    """The dense baseline at `full_steps` (None where none is wanted, or where the method is that baseline),
    from `eval.baseline_store` if it holds it, else computed (and stored there).

    Args:
        ctx: the run's context.
    """
    settings, cfg = ctx.settings, ctx.cfg
    if not settings["compare_dense"] or (ctx.is_dense and ctx.steps == ctx.full_steps and not ctx.cache.config_class):
        return None
    fields = {
        "model": choice("model", cfg.model), "weights": ctx.runner.weights,
        "runner": OmegaConf.to_container(cfg.model, resolve=True), "steps": ctx.full_steps,
        "guidance": settings["guidance"], "size": list(ctx.size), "seed": settings["seed"],
        "prompts": settings["prompts"], "batch": settings["batch"],
    }  # fmt: skip
    key = job.baseline_key(fields)
    folder = settings["baseline_store"]
    found = job.load_baseline(folder, key, len(settings["prompts"]), ctx.size) if ctx.rank == 0 else None
    if ctx.world > 1:
        found = job.from_rank0(found, ctx.world)
    if found is not None:
        return {**found, "key": key, "origin": f"read from the store, {key}"}
    label = ctx.progress("dense")
    make = lambda c, s: (ctx.make(c, s, ctx.full_steps, label), None)  # noqa: E731
    generated = job.generate_all(settings["prompts"], settings["batch"], make, ctx.rank, ctx.world)
    result = {"images": generated.images, "flops": generated.flops, "key": key,
              "origin": "computed" if folder is None else f"computed, stored as {key}"}  # fmt: skip
    if ctx.rank == 0:
        job.store_baseline(folder, key, generated.images, {"flops": generated.flops})
    return result


def timing(ctx: RunContext, dense: dict[str, Any] | None) -> dict[str, Any]:
    """Warm-up, then the median of `timing.repeats` runs of the first chunk, the method and dense alternating.

    Dense is timed in every job, even when its images come from the baseline store: a time measured
    beside the method's, on the machine as it is now, is the only fair one.

    Args:
        ctx: the run's context.
        dense: the dense baseline, or None.
    """
    settings = ctx.settings
    reason = _untimed_reason(ctx, dense)
    result = {"time_s": None, "dense_time_s": None, "speedup": None, "speedup_note": reason,
              "timing": {"warmup": settings["warmup"], "repeats": settings["repeats"], "order": "alternating",
                         "prompts": min(settings["batch"], len(settings["prompts"]))}}  # fmt: skip
    if reason is not None:
        return result
    chunk = settings["prompts"][: settings["batch"]]

    def method() -> None:
        with attached(ctx, ctx.mode, ctx.execution):
            ctx.make(chunk, 0)

    dense_run = lambda: ctx.make(chunk, 0, ctx.full_steps)  # noqa: E731
    seconds, dense_seconds = job.time_alternating(method, dense_run, settings["warmup"], settings["repeats"])
    return {**result, "time_s": seconds, "dense_time_s": dense_seconds, "speedup": dense_seconds / seconds}


def write_pictures(ctx: RunContext, method: MethodRun, dense: dict[str, Any] | None) -> dict[str, Any]:
    """The pictures of the first call's images (`rasfw.app.pictures`); their file names by role.

    Args:
        ctx: the run's context.
        method: the method's generation.
        dense: the dense baseline, or None.
    """
    shown = min(ctx.settings["batch"], len(ctx.settings["prompts"]))
    dense_shown = None if dense is None else dense["images"][:shown]
    prompts, updates = ctx.settings["prompts"][:shown], method.updates[:shown]
    names = pictures.columns(ctx.is_dense, ctx.steps, ctx.full_steps, ctx.cache.name if ctx.cache.config_class else None)
    ctx.out.mkdir(parents=True, exist_ok=True)
    if method.images.ndim == 5:  # videos (B, frames, 3, H, W)
        return pictures.write_videos(ctx.out, method.images[:shown], dense_shown, updates, method.selections, prompts,
                                     names)  # fmt: skip
    return pictures.write_pictures(ctx.out, method.images[:shown], dense_shown, updates[:, 0], method.selections,
                                   ctx.sampler, prompts, names)  # fmt: skip


def write_summary(ctx: RunContext, method: MethodRun, dense: dict[str, Any] | None, timed: dict[str, Any],
                  files: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Evaluate the images, and write `summary.json` (with `eval_features.npz` where the runner has features).

    Args:
        ctx: the run's context.
        method: the method's generation.
        dense: the dense baseline, or None.
        timed: the timing step's fields.
        files: the pictures' file names by role.
    """
    cfg, settings, images, prompts = ctx.cfg, ctx.settings, method.images, ctx.settings["prompts"]
    dense_images = None if dense is None else dense["images"]
    dense_flops = None if dense is None else dense["flops"]
    tokens = method.updates[0].numel()
    summary = {
        "model": choice("model", cfg.model),
        "weights": ctx.runner.weights,
        "sampler": choice("sampler", cfg.sampler),
        "cache": ctx.cache.name,
        "backend": method.backend,  # what ran (a Triton request falls back to the torch reference where it cannot run)
        "backend_note": method.backend_note or None,
        **method.executed,
        "kv_dtype": ctx.sampler.kv_dtype,
        "count": ctx.sampler.count,
        "steps": ctx.steps,
        "full_steps": ctx.full_steps,
        "guidance": settings["guidance"],
        "seed": settings["seed"],
        "height": ctx.size[0],
        "width": ctx.size[1],
        "prompts": prompts if settings["eval_prompts"] is None else f"prompt_set({len(prompts)}, seed={settings['prompt_seed']})",
        "prompt_count": len(prompts),
        "processes": ctx.world,
        "tokens": tokens,
        "active_tokens_per_step": method.active,
        **timed,
        "flops": method.flops,
        "dense_flops": dense_flops,
        "flops_ratio": None if dense_flops is None else method.flops / dense_flops,
        "dense_baseline": None if dense is None else dense["origin"],
        "max_abs_diff_vs_dense": None if dense_images is None else float((images - dense_images).abs().max()),
        "psnr_vs_dense": None if dense_images is None else psnr(images, dense_images),
        **files,
    }
    dense_steps = sum(1 for a in method.active if a == tokens)
    updates = method.updates if images.ndim == 5 else method.updates[:, 0]  # images: one frame, (B, rows, cols)
    evaluated = ctx.runner.evaluate(prompts, images, dense_images, updates - dense_steps)
    features, per_prompt = evaluated.pop("features", None), _per_prompt(settings, images, dense_images, evaluated)
    summary.update(evaluated)
    skipped = len(prompts) - summary.get("evaluated_images", len(prompts))
    if summary.get("eval_note"):
        show(f"note: {summary['eval_note']}")
    elif skipped:
        show(f"note: {skipped} of {len(prompts)} prompts are not in the model's prompt grammar; "
               "its quality metrics skip them")  # fmt: skip
    if features:
        summary["eval_features"] = stats.save_features(ctx.out / stats.FEATURES_FILE, features).name
    summary.update(stats.annotate({**summary, "per_prompt": per_prompt}, features))
    summary["settings"] = job.resolved_settings(cfg, _choices(), GROUPS)
    summary["config_digest"] = job.config_digest(cfg)  # a rerun sweep skips this job (`job.finished`)
    summary["overrides"] = _task_overrides()
    summary["per_prompt"] = per_prompt  # last: long lists
    write_text(ctx.out / "summary.json", json.dumps(summary, indent=2) + "\n")  # last: the job is complete
    return summary


# -- what the steps share -------------------------------------------------------------------------


@contextlib.contextmanager
def attached(ctx: RunContext, mode: str, execution: dict[str, Any]) -> Iterator[Any]:
    """The step cache and RAS (or dense sampling through the same hooks) applied; both removed after.

    Args:
        ctx: the run's context (its runner, sampler and cache).
        mode: the execution mode; `execution` its options.
    """
    transformer = ctx.runner.pipe.transformer
    ctx.cache.apply(transformer)
    try:
        state = apply_ras(ctx.runner.pipe, ctx.sampler, execution=mode, **execution)
        try:
            yield state
        finally:
            remove_ras(ctx.runner.pipe)
    finally:
        ctx.cache.remove(transformer)


def matched_steps(ctx: RunContext) -> int:
    """`match_flops=true` with `sampler=dense`: the step count whose dense FLOPs match RAS with this config's
    strategies (one prompt counted each way; FLOPs scale with the batch).

    Args:
        ctx: the run's context (before its steps are matched).
    """
    settings, runner = ctx.settings, ctx.runner
    ras = RegionAdaptiveSampler(**{g: build(ctx.cfg[g], g, g) for g in STRATEGY_GROUPS}, seed=settings["seed"])
    prompt = settings["prompts"][:1]

    def gen() -> torch.Tensor:
        return ctx.make(prompt, 0, settings["steps"])

    def flops(sampler: RegionAdaptiveSampler | None) -> int:
        if sampler is None:
            return count_flops(gen)[1]
        apply_ras(runner.pipe, sampler)
        try:
            return count_flops(gen)[1]
        finally:
            remove_ras(runner.pipe)

    return max(1, round(settings["steps"] * flops(ras) / flops(None)))


def _untimed_reason(ctx: RunContext, dense: dict[str, Any] | None) -> str | None:
    """Why the run is not timed, or None."""
    if ctx.is_dense and not ctx.cache.config_class and dense is None:
        return "sampler=dense: this run is the baseline"
    if dense is None:
        return "compare_dense=false: no baseline to compare with"
    if ctx.world > 1:
        return f"{ctx.world} processes: timing needs one process"
    if ctx.settings["repeats"] == 0:
        return "timing.repeats=0: not timed"
    return None


def _per_prompt(settings: dict[str, Any], images: torch.Tensor, dense_images: torch.Tensor | None,
                evaluated: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """What a bootstrap over prompts needs from the run (`rasfw.app.stats`): each prompt's seed (that of its call),
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


def _run_label(sampler: RegionAdaptiveSampler) -> str:
    """The method's progress-bar label: "RAS 0.5" for a constant ratio, else the schedule's class."""
    if isinstance(sampler, DenseSampler):
        return "dense sampler"
    value = getattr(sampler.ratio, "value", None)
    return f"RAS {value:g}" if isinstance(value, float) else f"RAS {type(sampler.ratio).__name__}"


def _choices() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def choice(group: str, node: DictConfig) -> str:
    """The option chosen for `group` (e.g. "default"), or the target's class name outside Hydra.

    Args:
        group: the config group.
        node: its composed option.
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group))
    return str(node.get("_target_", group)).rsplit(".", 1)[-1]


def check_finite(images: torch.Tensor, settings: dict[str, Any]) -> None:
    """Never write a silently wrong image: NaN or infinite pixels stop the run with one line.

    Args:
        images: the generated images.
        settings: the checked settings (named in the message).
    """
    if not torch.isfinite(images).all():
        raise UsageError(
            f"the generated images contain NaN or infinite values (guidance={settings['guidance']}, "
            f"steps={settings['steps']}); try a smaller guidance or the model's own dtype"
        )
