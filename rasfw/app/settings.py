"""The main command's settings: what each top-level key means, their checks, and the sampler, step cache
and image size a checked config builds. A wrong setting is a `UsageError`: one line naming it."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from rasfw.app import job
from rasfw.build import build, plain, registered_name
from rasfw.checks import integer, number
from rasfw.pipelines.runners import PipelineRunner
from rasfw.registry import REGISTRY, STRATEGY_KINDS
from rasfw.sampler import RegionAdaptiveSampler
from rasfw.sizes import check_image_size

STRATEGY_GROUPS = STRATEGY_KINDS  # each strategy kind is a config group of the same name


class UsageError(ValueError):
    """A setting is wrong; the message is one line naming the setting and what is allowed."""


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
            "batch (prompts per call), baseline_store (folder where the dense baseline is stored and reused; null: none), baseline_steps (null: steps)",
    "timing": "warmup (untimed runs of each) and repeats (median of that many alternating runs; 0: no speed-up)",
}  # fmt: skip
"""The plain top-level keys and what each means (the `--help` text)."""
GROUPS = ("model", "sampler", *STRATEGY_GROUPS, "backend", "execution", "cache")

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
MAX_TOKENS = 65536  # image tokens per image: 4096x4096 pixels for SD3/Flux, far past what any of them was trained on


def build_sampler(cfg: DictConfig) -> RegionAdaptiveSampler:
    """Instantiate the sampler and its strategies from a composed config.

    Args:
        cfg: the composed main config (`conf/config.yaml`).
    """
    strategies = {group: build(cfg[group], group, group) for group in STRATEGY_GROUPS}
    return build(cfg.sampler, "sampler", "sampler", backend=backend_name(cfg.backend), seed=cfg.seed, **strategies)


def backend_name(node: DictConfig) -> str:
    """The registered name of the backend class a `backend` option's `_target_` names (it takes no settings:
    the sampler builds the backend for the pipeline's device).

    Args:
        node: the `backend` group's option.
    """
    data = plain(node, "backend")
    target = data.pop("_target_", None)
    if target is None:
        raise UsageError("backend._target_ is missing; it must name a registered backend class")
    if data:
        raise UsageError(f"backend.{next(iter(data))}: unknown setting; a backend option has only a _target_")
    cls = REGISTRY.by_target("backend", target, "backend._target_")
    return next(name for name, registered in REGISTRY.items("backend") if registered is cls)


def execution_option(node: DictConfig) -> tuple[str, dict[str, Any]]:
    """The execution mode an `execution` option's `_target_` names, and the executor's settings from the option.

    Args:
        node: the `execution` group's option.
    """
    return registered_name(plain(node, "execution"), "execution", "execution")


def build_method(cfg: DictConfig, settings: dict[str, Any]) -> tuple[RegionAdaptiveSampler, Any]:
    """The sampler (validated against the step count) and the step cache of a config.

    Args:
        cfg: the composed main config.
        settings: its checked settings (`check_settings`).
    """
    sampler = build_sampler(cfg)
    sampler.reset.validate(settings["steps"])
    cache = build(cfg.cache, "cache", "cache")
    if sampler.fill.forecasts and cache.config_class:
        raise ValueError(
            f"fill={REGISTRY.name_of('fill', type(sampler.fill))} forecasts from the outputs the model computed, and "
            f"cache={cache.name} replaces some of them with its own reuse; use fill=reuse with a step cache, or cache=none"
        )
    return sampler, cache


def check_settings(cfg: DictConfig) -> dict[str, Any]:
    """Validate the top-level settings; return them as plain Python values.

    Args:
        cfg: the composed main config.
    """
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


def image_size(runner: PipelineRunner, settings: dict[str, Any]) -> tuple[int, int]:
    """The `(height, width)` to sample at: the settings' or the model's native size, checked against the model.

    Args:
        runner: the model's runner (its patch size, latent scale, native and largest size).
        settings: the checked settings (`height`, `width`; None: native).
    """
    height = settings["height"] or runner.default_size[0]
    width = settings["width"] or runner.default_size[1]
    multiple = runner.patch_size * runner.latent_scale
    try:
        check_image_size(height, width, multiple, runner.max_size)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tokens = (height // multiple) * (width // multiple)
    if tokens > MAX_TOKENS:
        raise UsageError(f"height x width is {height}x{width}: {tokens} tokens; at most {MAX_TOKENS} "
                         f"({int(MAX_TOKENS ** 0.5) * multiple}x{int(MAX_TOKENS ** 0.5) * multiple} for this model)")  # fmt: skip
    return height, width
