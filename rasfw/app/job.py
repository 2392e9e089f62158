"""What one `python -m rasfw` job does besides sampling: its prompt set, generation split across processes,
the dense baseline (computed once, then read from an on-disk cache), timing, and the resolved settings.

Generation runs in calls of `eval.batch` prompts; the call that starts at prompt `s` is given the seed
`seed + s` (runners that seed image `i` of a call with `seed + i` so seed every prompt as one call would),
so a call's images do not depend on which process made them. Under `torchrun` (`WORLD_SIZE > 1`) rank `r`
makes the calls `j % world == r` and every rank receives all of them in order (`torch.distributed`, gloo on a CPU,
nccl on GPUs): the merged images equal a single-process run's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rasfw.app.console import show
from rasfw.app.files import written
from rasfw.checks import first_line, integer
from rasfw.flops import count_flops

BASELINE_FORMAT = 1  # bump when the cached baseline's contents change


# -- settings -------------------------------------------------------------------------------------


def check_job_settings(cfg: DictConfig) -> dict[str, Any]:
    """Validate `eval.*`, `timing.*` and `match_flops`; return them as plain values.

    `eval.baseline_steps` sets the steps of the dense baseline (the images PSNR and SSIM compare with, and
    the dense run that is timed) apart from the job's own `steps`, as `+experiment=table2` does (RAS and dense
    at 3 to 10 steps against the 28-step dense image); null: the job's steps.
    """
    from rasfw.embedded.testbeds import get_testbed

    # The prompt set is in the grammar of the embedded testbed the model names (`model.testbed`), the
    # first testbed's for every other model.
    name = str(OmegaConf.select(cfg, "model.testbed", default="shapes"))
    testbed = get_testbed(name, "model.testbed").module()
    prompt_set = testbed.prompt_set
    keys = ("prompts", "prompt_seed", "batch", "baseline_store", "baseline_steps")
    ev = _section(cfg, "eval", keys)
    timing = _section(cfg, "timing", ("repeats", "warmup"))
    count = ev.get("prompts")
    if count is not None:
        count = integer("eval.prompts", count, "[1, 100000] or null (null: the prompts list)", lambda v: 1 <= v <= 100000)
    prompt_seed = integer("eval.prompt_seed", ev.get("prompt_seed", 1234), "[0, 2**63)", lambda v: 0 <= v < 2**63)
    distinct = math.prod(len(v) for v in testbed.ATTRIBUTES.values())
    if count is not None and count > distinct:
        show(f"note: eval.prompts={count} is more than the {distinct} distinct prompts of the {name} prompt set; "
             f"each prompt comes back about {count / distinct:.1f} times (with other noise)")  # fmt: skip
    batch = integer("eval.batch", ev.get("batch", 64), "[1, inf)", lambda v: v >= 1)
    folder = ev.get("baseline_store")
    if folder is not None and (not isinstance(folder, str) or not folder):
        raise ValueError(f"eval.baseline_store must be a folder path or null; got {folder!r}")
    if folder is not None and Path(folder).expanduser().exists() and not Path(folder).expanduser().is_dir():
        raise ValueError(f"eval.baseline_store={folder}: not a folder (a file is in the way); give a folder path or null")
    if not isinstance(cfg.get("match_flops", False), bool):
        raise ValueError(f"match_flops must be true or false; got {cfg.get('match_flops')!r}")
    baseline_steps = ev.get("baseline_steps")
    if baseline_steps is not None:
        baseline_steps = integer("eval.baseline_steps", baseline_steps, "[1, inf) or null (null: steps)", lambda v: v >= 1)
    return {
        "eval_prompts": count,
        "eval_prompt_set": None if count is None else prompt_set(count, prompt_seed)[0],
        "prompt_seed": prompt_seed,
        "batch": batch,
        "baseline_store": None if folder is None else Path(folder).expanduser(),
        "baseline_steps": baseline_steps,  # steps of the dense baseline; None: the job's steps
        "repeats": integer("timing.repeats", timing.get("repeats", 3), "[0, 1000]", lambda v: 0 <= v <= 1000),
        "warmup": integer("timing.warmup", timing.get("warmup", 1), "[0, 100]", lambda v: 0 <= v <= 100),
        "match_flops": cfg.get("match_flops", False),
    }


def _section(cfg: DictConfig, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The `name` node's settings as plain data (every key one of `keys`)."""
    node = cfg.get(name)
    if node is None:
        return {}
    if not OmegaConf.is_dict(node):
        raise ValueError(f"{name} must be a mapping with the keys {', '.join(keys)}; got {node!r}")
    unknown = [k for k in node if k not in keys]
    if unknown:
        raise ValueError(f"{name}.{unknown[0]}: unknown setting; the {name} settings are {', '.join(keys)}")
    return OmegaConf.to_container(node, resolve=True)


def resolved_settings(cfg: DictConfig, choices: dict[str, str], groups: tuple[str, ...]) -> dict[str, Any]:
    """Every group's option name and parameters (`{"name": ..., "params": {...}}`), as the job ran them."""
    out = {}
    for group in groups:
        node = OmegaConf.to_container(cfg[group], resolve=True) if group in cfg else {}
        params = {k: v for k, v in node.items() if k not in ("_target_", "name")}
        out[group] = {"name": choices.get(group) or node.get("name") or node.get("_target_"), "params": params}
    return out


# -- processes ------------------------------------------------------------------------------------


@contextlib.contextmanager
def distributed() -> Iterator[tuple[int, int]]:
    """`(rank, world)`; under `torchrun` the process group is opened here (and closed after) if nobody else has."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1
        return
    opened = not dist.is_initialized()
    if opened:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        if opened:
            dist.destroy_process_group()


def from_rank0(value: Any, world: int) -> Any:
    """Rank 0's `value` on every rank (so all ranks take the same path)."""
    return _all_gather(value, world)[0]


def _all_gather(value: Any, world: int) -> list[Any]:
    if world == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


@dataclass
class Generated:
    """The images of the whole prompt set, in prompt order, on every rank."""

    images: torch.Tensor  # (B, 3, H, W)
    extras: torch.Tensor | None  # (B, ...) per-image data returned with each chunk (RAS update counts)
    flops: int  # summed over all ranks


def generate_all(
    prompts: list[str], batch: int, make: Callable[[list[str], int], tuple[torch.Tensor, torch.Tensor | None]],
    rank: int, world: int, count: bool = True,
) -> Generated:
    """Run `make(chunk, start)` for this rank's calls (counting FLOPs if `count`) and merge every rank's."""

    def share() -> list[tuple[int, torch.Tensor, torch.Tensor | None]]:
        starts = range(0, len(prompts), batch)
        return [(s, *make(prompts[s : s + batch], s)) for j, s in enumerate(starts) if j % world == rank]

    mine, flops = count_flops(share) if count else (share(), 0)
    gathered = _all_gather((mine, flops), world)
    parts = sorted((part for got in gathered for part in got[0]), key=lambda p: p[0])
    total = sum(got[1] for got in gathered)
    extras = [p[2] for p in parts]
    return Generated(
        torch.cat([p[1] for p in parts]),
        torch.cat(extras) if all(e is not None for e in extras) else None,
        int(total),
    )


# -- finished jobs --------------------------------------------------------------------------------


def config_digest(cfg: DictConfig) -> str:
    """A digest of a job's resolved settings: two jobs with the same digest compute the same thing."""
    data = OmegaConf.to_container(cfg, resolve=True)
    blob = json.dumps({"config": data, "torch": torch.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def finished(folder: Path, cfg: DictConfig) -> bool:
    """Whether `folder` holds a complete `summary.json` of a job with these settings (a rerun sweep skips it)."""
    path = folder / "summary.json"
    if not path.is_file():
        return False
    from rasfw.app.stats import read_summary

    try:
        summary = read_summary(path)
    except ValueError:
        return False
    return summary.get("config_digest") == config_digest(cfg)


# -- the dense baseline ---------------------------------------------------------------------------


def baseline_key(fields: dict[str, Any]) -> str:
    """A file name for the dense baseline of these settings (model, weights, steps, guidance, size, seed,
    prompts, chunking, versions)."""
    blob = json.dumps({**fields, "format": BASELINE_FORMAT, "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_baseline(folder: Path | None, key: str, count: int | None = None,
                  size: tuple[int, int] | None = None) -> dict[str, Any] | None:  # fmt: skip
    """The stored baseline `{"images", "flops", "source"}`, or None if there is none to read.

    An entry that cannot be read whole (truncated, corrupt, without its metadata, not `count` images, or not
    of `size` (height, width)) is reported in one line and treated as missing: it is recomputed, and replaced
    when stored.
    """
    if folder is None:
        return None
    path = folder / f"{key}.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["baseline"])
            images = f.get_tensor("images")
        wrong_count = count is not None and images.shape[0] != count
        wrong_size = size is not None and tuple(images.shape[-2:]) != tuple(size)
        if not isinstance(meta, dict) or images.ndim not in (4, 5) or wrong_count or wrong_size:
            raise ValueError(f"{tuple(images.shape)} images")
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, the baseline is recomputed
        show(f"note: eval.baseline_store entry {path.name} is unreadable ({type(exc).__name__}: {first_line(exc)}); "
             "recomputing it")  # fmt: skip
        return None
    return {**meta, "images": images, "source": str(path)}


def store_baseline(folder: Path | None, key: str, images: torch.Tensor, meta: dict[str, Any]) -> None:
    """Write the baseline atomically (a parallel job may be writing the same one). A store that cannot be
    written (read-only) is reported in one line; the run goes on with the baseline it computed."""
    if folder is None:
        return
    from safetensors.torch import save_file

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with written(folder / f"{key}.safetensors") as tmp:
            save_file({"images": images.contiguous()}, str(tmp), metadata={"baseline": json.dumps(meta)})
    except OSError as exc:
        show(f"note: eval.baseline_store={folder} cannot be written ({exc.strerror or type(exc).__name__}); "
             "the baseline was computed for this run only")  # fmt: skip


# -- timing ---------------------------------------------------------------------------------------


def time_alternating(first: Callable[[], Any], second: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, float]:
    """Median seconds of `first` and `second` over `repeats` (>= 1) rounds, after `warmup` untimed runs of each.

    Round `i` runs them in the order (first, second) for even `i` and (second, first) for odd `i`, so
    neither always runs on a warmer machine.
    """
    for _ in range(warmup):
        first()
        second()
    a: list[float] = []
    b: list[float] = []
    for i in range(repeats):
        for fn, into in [(first, a), (second, b)] if i % 2 == 0 else [(second, b), (first, a)]:
            start = time.perf_counter()
            fn()
            into.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)
