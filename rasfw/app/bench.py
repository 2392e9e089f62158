"""`python -m rasfw.app.bench`: how much of the FLOP saving of RAS turns into wall-clock time, per execution mode.

A synthetic pipeline (`rasfw.pipelines.synthetic`: `SD3Synthetic`, `LuminaNextSynthetic`, `FluxSynthetic`, `WanSynthetic`, the
architecture of a real model with random weights and fixed random text embeddings; speed does not depend on the weights) runs
whole generations with the denoising loop of its diffusers pipeline; `preset=<name>` picks the architecture
(`conf/preset/<name>.yaml`). For each execution mode (`executions`: eager, compile, cudagraph) the dense baseline runs
through the same executor kind (`apply_ras` with a `DenseSampler`), then RAS for each ratio and each `kv_dtypes` entry,
its warm-up and error resets from the main command's `ratio` and `reset` groups (`ratio.warmup`, `reset.steps`). Every
configuration is attached once, run once untimed (compilation, graph capture and allocator warm-up are
never timed; on a CPU in eager mode one 1-step call per mode is enough), then timed `repeats` times;
the median is reported. Configurations run one after the other, not interleaved: captured graphs live
with one `apply_ras` attachment (compiled ones stay in torch's compile cache, so a later configuration
builds, and counts, only the graphs of its new call shapes).

Each row of `bench.json` reports:

* `speedup` (dense time / RAS time, same mode), `flops_ratio` and `ideal_speedup` (its inverse), and
  `efficiency` = speed-up / FLOP-ideal speed-up. FLOPs come from `rasfw.flops` (torch's `FlopCounterMode`,
  attention counted on the CPU too) around one transformer
  call per distinct active-token count (a capture call fills the caches first; the torch backend, so every
  matmul is visible), summed over the step schedule; they depend on the ratio only.
* `peak_memory_bytes` / `dense_peak_memory_bytes`: `torch.cuda.max_memory_allocated` over the timed
  generations (weights included; for cudagraph also over the warm-up, whose capture takes the graphs'
  memory), and `memory_overhead` = peak / dense peak - 1; `None` on a CPU.
* `kv_cache_bytes`: the largest `RegionState.memory_bytes()` read after each step's selection (before the
  last step frees them): the bytes RAS itself holds (key/value caches in `kv_dtype`, output cache, index
  and scratch buffers). It is measured on every device, the CPU included.
* `selection_ms_per_step`: time of `sampler.observe` (metric, starvation, top-k) per step, measured with
  CUDA events on a GPU (no extra host synchronisation) and with the host clock on a CPU.
* `graphs` / `call_shapes`: what the executor built (`ras_execution(pipe).describe()`); 0 graphs for eager.

The top level names the machine, the torch and diffusers versions and the git commit.
"""

from __future__ import annotations

import inspect
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rasfw.adapters.partial import PartialForward
from rasfw.app.console import fail, show
from rasfw.app.settings import UsageError, execution_option
from rasfw.attach import apply_ras, ras_backend, ras_execution, remove_ras
from rasfw.build import build, plain
from rasfw.execution.base import build_executor
from rasfw.flops import count_flops
from rasfw.interfaces import RatioSchedule, ResetSchedule
from rasfw.pipelines.synthetic import SyntheticPipeline, build_synthetic
from rasfw.registry import REGISTRY
from rasfw.sampler import KV_DTYPES, DenseSampler, RegionAdaptiveSampler
from rasfw.state import RegionState
from rasfw.strategies.ratios import warmup_steps

# -- measuring ------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generation(pipe: SyntheticPipeline, steps: int) -> tuple[float, int | None]:
    """Seconds for one generation and its peak memory (CUDA only)."""
    cuda = pipe.device.type == "cuda"
    _sync(pipe.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(pipe.device)
    start = time.perf_counter()
    pipe(steps)
    _sync(pipe.device)
    seconds = time.perf_counter() - start
    return seconds, (torch.cuda.max_memory_allocated(pipe.device) if cuda else None)


@torch.no_grad()
def forward_flops(pipe: SyntheticPipeline, active: int) -> int:
    """FLOPs of one transformer call recomputing `active` image tokens (a plain dense call when all are).

    A RAS call is counted after a capture call has filled the caches, as at a real RAS step; the torch
    backend runs the token operations, so the counter (`rasfw.flops`) sees every matmul and attention.

    Args:
        pipe: the synthetic pipeline (its transformer must have no RAS attached).
        active: image tokens recomputed per image.
    """
    transformer = pipe.transformer
    inputs = pipe.call_inputs(pipe.latents, torch.tensor(500.0, device=pipe.device), pipe.guidance)
    if active >= pipe.num_tokens:
        return count_flops(lambda: transformer(**inputs, return_dict=False))[1]
    with PartialForward(transformer, inputs) as calls:
        calls.capture()
        rows = inputs["hidden_states"].shape[0]
        calls.ras(torch.arange(active, device=pipe.device).expand(rows, -1))  # (Bt, a); fills the plan
        return count_flops(calls.call)[1]


def generation_flops(pipe: SyntheticPipeline, sampler: RegionAdaptiveSampler, steps: int, table: dict[int, int]) -> int:
    """FLOPs of a whole generation under `sampler`'s schedule; `table` caches FLOPs per active count.

    Args:
        pipe: the synthetic pipeline.
        sampler: decides the tokens skipped per step (a `DenseSampler` for the baseline).
        steps: steps of the generation.
        table: active count -> FLOPs of one call, filled as needed.
    """
    n, total = pipe.num_tokens, 0
    for step in range(steps):
        active = n - sampler.skip_count(step, steps, n)
        if active not in table:
            table[active] = forward_flops(pipe, active)
        total += table[active] * pipe.calls_per_step
    return total


@dataclass
class _Probe:
    """Wraps one sampler's `observe` (instance level, on the bench's own sampler) to time the selection
    per step and to read the bytes its state holds after each step's selection."""

    device: torch.device
    seconds: list[float] = field(default_factory=list)
    events: list[tuple[Any, Any]] = field(default_factory=list)
    cache_bytes: int = 0

    def attach(self, sampler: RegionAdaptiveSampler) -> None:
        observe = sampler.observe
        cuda = self.device.type == "cuda"

        def probed(state: RegionState, *args: Any, **kwargs: Any) -> None:
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                observe(state, *args, **kwargs)
                end.record()
                self.events.append((start, end))
            else:
                begin = time.perf_counter()
                observe(state, *args, **kwargs)
                self.seconds.append(time.perf_counter() - begin)
            self.cache_bytes = max(self.cache_bytes, state.memory_bytes())

        sampler.observe = probed

    def reset(self) -> None:
        self.seconds.clear()
        self.events.clear()
        self.cache_bytes = 0

    def ms_per_step(self) -> float:
        """Mean selection time per step so far (call after the device is synchronised)."""
        times = [1000 * s for s in self.seconds] + [start.elapsed_time(end) for start, end in self.events]
        return sum(times) / max(len(times), 1)


@dataclass
class Measurement:
    """One configuration (dense or one ratio and kv dtype) in one execution mode."""

    time_s: float
    peak_memory_bytes: int | None
    kv_cache_bytes: int
    selection_ms_per_step: float
    backend: str
    executor: dict[str, Any]


def _options(cfg: DictConfig, execution: str) -> dict[str, Any]:
    """Executor options for `execution`: the `execution` group's settings when one mode was picked
    (`execution=compile execution.compile_backend=aot_eager`), else `compile_backend` for compile."""
    if cfg.get("execution") is not None:
        return execution_option(cfg.execution)[1]
    return {"compile_backend": cfg.compile_backend} if execution == "compile" else {}


def run_configuration(
    pipe: SyntheticPipeline, cfg: DictConfig, execution: str, sampler: RegionAdaptiveSampler, warmup_steps: int
) -> Measurement:
    """Attach `sampler` with `execution`, run `warmup_steps` untimed (0: none), time `cfg.repeats` generations.

    Args:
        pipe: the synthetic pipeline.
        cfg: the bench settings.
        execution: the execution mode.
        sampler: the sampler (its `observe` gets a probe).
        warmup_steps: steps of the untimed warm-up generation.

    The peak memory is that of the timed generations; with captured CUDA graphs (`keeps_buffers`) also that
    of the warm-up, because graph replays allocate nothing: their memory was taken at capture.
    """
    probe = _Probe(pipe.device)
    probe.attach(sampler)
    apply_ras(pipe, sampler, execution, **_options(cfg, execution))
    try:
        peaks: list[int | None] = []
        if warmup_steps:
            _, peak = _generation(pipe, warmup_steps)
            if ras_execution(pipe).keeps_buffers:
                peaks.append(peak)
        probe.reset()
        times = []
        for _ in range(cfg.repeats):
            seconds, peak = _generation(pipe, cfg.steps)
            times.append(seconds)
            peaks.append(peak)
        _sync(pipe.device)
        executor, backend = ras_execution(pipe).describe(), ras_backend(pipe).name
    finally:
        remove_ras(pipe)
    peak = None if peaks[-1] is None else max(peaks)
    return Measurement(statistics.median(times), peak, probe.cache_bytes, probe.ms_per_step(), backend, executor)


def _list_setting(cfg: DictConfig, name: str, allowed: list[str]) -> list[str]:
    setting = cfg[name]
    values = [str(setting)] if isinstance(setting, str) else [str(v) for v in setting]
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise ValueError(f"{name} must be a non-empty list of {', '.join(allowed)}; got {values}")
    return values


def _executions(cfg: DictConfig) -> list[str]:
    """The mode of the `execution` group when one was picked (`execution=compile`), else the `executions` list."""
    if cfg.get("execution") is not None:
        return [execution_option(cfg.execution)[0]]
    return _list_setting(cfg, "executions", sorted(name for name, _ in REGISTRY.items("execution")))


def _preset(cfg: DictConfig) -> DictConfig:
    """The `preset` group's architecture (`conf/preset/<name>.yaml`); a GPU preset needs a GPU."""
    preset = cfg.preset
    if preset.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"preset={preset.name} needs a CUDA device; use a cpu preset here (preset=cpu)")
    return preset


def sampler_backend(cfg: DictConfig) -> str:
    """The registered backend name: the `backend` group's option (`backend=triton`), or a plain name.

    Args:
        cfg: the bench settings.
    """
    if isinstance(cfg.backend, str):
        return cfg.backend
    from rasfw.app.settings import backend_name

    return backend_name(cfg.backend)


def _sampler(cfg: DictConfig, ratio: float, kv_dtype: str) -> RegionAdaptiveSampler:
    return RegionAdaptiveSampler(
        ratio=_ratio(cfg, ratio), reset=_reset(cfg), backend=sampler_backend(cfg), seed=cfg.seed, kv_dtype=kv_dtype,
    )  # fmt: skip


def _ratio(cfg: DictConfig, value: float) -> RatioSchedule:
    """The `ratio` group's schedule (its `warmup` and other settings) with `value`, one of `ratios`, as its ratio."""
    data = plain(cfg.ratio, "ratio")
    cls = REGISTRY.by_target("ratio", data.get("_target_"), "ratio._target_")
    if "value" not in inspect.signature(cls).parameters:
        takes = [name for name, c in REGISTRY.items("ratio") if "value" in inspect.signature(c).parameters]
        raise ValueError(f"ratio={REGISTRY.name_of('ratio', cls)} has no ratio.value for `ratios` to set; "
                         f"the bench takes {' or '.join(f'ratio={name}' for name in takes)}")  # fmt: skip
    return build({**data, "value": value}, "ratio", "ratio")


def _reset(cfg: DictConfig) -> ResetSchedule:
    """The `reset` group's schedule, as the main command builds it (fixed: `reset.steps`, null the reference's 12 and
    20 of 28 scaled to `steps`)."""
    return build(cfg.reset, "reset", "reset")


def _dense_steps(reset: ResetSchedule, steps: int) -> list[int]:
    """The steps `reset` forces dense in a `steps` schedule."""
    return [step for step in range(steps) if reset.is_dense(step, steps)]


def measure(cfg: DictConfig) -> list[dict[str, Any]]:
    """Run the benchmark described by `cfg`; one row per execution mode, ratio and kv dtype.

    Raises:
        ValueError: a setting is out of range, a GPU preset without a GPU, or an execution mode that
            cannot run on the preset's device (cudagraph on a CPU).
    """
    preset = _preset(cfg)
    executions = _executions(cfg)
    kv_dtypes = _list_setting(cfg, "kv_dtypes", list(KV_DTYPES))
    ratios = [float(r) for r in cfg.ratios]
    if not ratios or not all(0 < r <= 1 for r in ratios):
        raise ValueError(f"ratios must be a non-empty list of numbers in (0, 1]; got {ratios}")
    if not isinstance(cfg.repeats, int) or cfg.repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1; got {cfg.repeats!r}")
    _ratio(cfg, ratios[0])  # a bad ratio or reset setting fails here, before a model is built
    _reset(cfg).validate(cfg.steps)
    for execution in executions:  # before building a model: cudagraph on a CPU fails here
        build_executor(execution, **_options(cfg, execution)).check(torch.device(preset.device))
    pipe = build_synthetic(preset, cfg.seed)
    table: dict[int, int] = {}
    dense_flops = generation_flops(pipe, DenseSampler(), cfg.steps, table)
    flops = {r: generation_flops(pipe, _sampler(cfg, r, "model"), cfg.steps, table) for r in ratios}
    rows = []
    for execution in executions:
        short = pipe.device.type == "cpu" and execution == "eager"  # no graphs to build: one 1-step call is enough
        dense_sampler = DenseSampler(sampler_backend(cfg), cfg.seed)
        dense = run_configuration(pipe, cfg, execution, dense_sampler, 1 if short else cfg.steps)
        show(f"  {execution} dense: {dense.time_s:.3f} s")
        for ratio in ratios:
            for kv_dtype in kv_dtypes:
                ras = run_configuration(pipe, cfg, execution, _sampler(cfg, ratio, kv_dtype), 0 if short else cfg.steps)
                row = _row(cfg, execution, ratio, kv_dtype, ras, dense, flops[ratio] / dense_flops)
                show(f"  {execution} ratio {ratio} kv {kv_dtype}: {ras.time_s:.3f} s  row {json.dumps(row)}")
                rows.append(row)
    return rows


def _row(cfg: DictConfig, execution: str, ratio: float, kv_dtype: str, ras: Measurement, dense: Measurement,
         flops_ratio: float) -> dict[str, Any]:  # fmt: skip
    speedup, ideal = dense.time_s / ras.time_s, 1 / flops_ratio
    peak, dense_peak = ras.peak_memory_bytes, dense.peak_memory_bytes
    return {
        "preset": cfg.preset.name,
        "execution": execution,
        "backend": ras.backend,
        "ratio": ratio,
        "kv_dtype": kv_dtype,
        "speedup": speedup,
        "flops_ratio": flops_ratio,
        "ideal_speedup": ideal,
        "efficiency": speedup / ideal,
        "time_s": ras.time_s,
        "dense_time_s": dense.time_s,
        "peak_memory_bytes": peak,
        "dense_peak_memory_bytes": dense_peak,
        "memory_overhead": None if peak is None or not dense_peak else peak / dense_peak - 1,
        "kv_cache_bytes": ras.kv_cache_bytes,
        "graphs": int(ras.executor.get("graphs", 0)),
        "call_shapes": int(ras.executor.get("call_shapes", 0)),
        "dense_graphs": int(dense.executor.get("graphs", 0)),
        "selection_ms_per_step": ras.selection_ms_per_step,
    }


# -- reporting ------------------------------------------------------------------------------------------


def machine() -> str:
    """A one-line description of where the benchmark ran."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads, torch {torch.__version__}"


def commit() -> str | None:
    """The git commit of this checkout (`git rev-parse HEAD`), or None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def results(cfg: DictConfig) -> dict[str, Any]:
    """Everything `bench.json` holds besides the config: where it ran, the versions, and the rows."""
    import diffusers

    if cfg.profile:
        from rasfw.app.step_profile import check_step

        check_step(cfg.profile_step, cfg.steps)  # a bad step fails before anything is measured
    result = {
        "machine": machine(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "commit": commit(),
        "rows": measure(cfg),
    }
    if cfg.profile:
        result["profile"] = profiles(cfg)
    return result


def profiles(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """`profile=true`: one eager step (`profile_step`) profiled dense and at each ratio (`rasfw.app.step_profile`)."""
    from rasfw.app.step_profile import check_step, profile_step

    step = check_step(cfg.profile_step, cfg.steps)
    pipe = build_synthetic(_preset(cfg), cfg.seed)
    result = {"dense": profile_step(pipe, DenseSampler(sampler_backend(cfg), cfg.seed), cfg.steps, step)}
    for ratio in cfg.ratios:
        result[f"RAS {ratio}"] = profile_step(pipe, _sampler(cfg, float(ratio), "model"), cfg.steps, step)
    return result


def report(result: dict[str, Any], cfg: DictConfig) -> str:
    """`bench.md`: the table, and with `profile=true` the step profile after it."""
    text = markdown(result["rows"], cfg)
    if "profile" in result:
        from rasfw.app import step_profile

        text += (
            f"\nOne eager step (step {cfg.profile_step}) under torch.profiler: self time per operator category, the "
            "selection as a whole, and what lies outside every operator (Python); the profiler's own cost is in it\n\n"
            + step_profile.markdown(result["profile"])
        )
    return text


def _size(value: int | None) -> str:
    """Bytes as KiB, MiB or GiB; "n/a (CPU)" for None."""
    if value is None:
        return "n/a (CPU)"
    power = min(max(int(math.log(max(value, 1), 1024)), 1), 3)
    return f"{value / 1024**power:.2f} {('KiB', 'MiB', 'GiB')[power - 1]}"


def _batching(family: str, cfg: bool) -> str:
    if not cfg:
        return "batch 1"
    return "CFG: two calls per step (cond, uncond)" if family == "wan" else "CFG batch 2"


def markdown(rows: list[dict[str, Any]], cfg: DictConfig) -> str:
    """The result table as markdown."""
    p = cfg.preset
    family = p.get("family", "sd3")
    layers = f"{p.layers}+{p.single_layers} layers" if family == "flux" else f"{p.layers} layers"
    if family == "wan":
        tokens = f"{p.latent_frames * (p.latent_height // p.patch) * (p.latent_width // p.patch)} video tokens"
    else:
        tokens = f"{(p.latent_side // p.patch) ** 2} image tokens"
    head = (
        f"preset `{p.name}` ({family}: {layers}, hidden {p.heads * p.head_dim}, "
        f"{tokens}, {p.context} context tokens, "
        f"{_batching(family, p.get('cfg', False))}, {p.dtype}), {cfg.steps} steps, "
        f"warm-up {warmup_steps(cfg.ratio.get('warmup'), cfg.steps)}, resets {_dense_steps(_reset(cfg), cfg.steps)}, "
        f"median of {cfg.repeats}; {machine()}\n\n"
    )
    lines = [
        "| execution | ratio | kv dtype | backend | graphs | speed-up | FLOP ratio | FLOP-ideal speed-up | efficiency "
        "| RAS cache | peak memory | memory overhead | selection ms/step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        overhead = "n/a" if row["memory_overhead"] is None else f"{100 * row['memory_overhead']:.1f} %"
        lines.append(
            f"| {row['execution']} | {row['ratio']} | {row['kv_dtype']} | {row['backend']} | {row['graphs']} | "
            f"{row['speedup']:.2f}x | {row['flops_ratio']:.3f} | {row['ideal_speedup']:.2f}x | {row['efficiency']:.2f} | "
            f"{_size(row['kv_cache_bytes'])} | {_size(row['peak_memory_bytes'])} | {overhead} | "
            f"{row['selection_ms_per_step']:.2f} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m rasfw.app.bench [overrides]`: measure, write `bench.json` and `bench.md`, print the table.

    Args:
        argv: the command line's arguments (default `sys.argv[1:]`).
    """
    from rasfw.app.table_app import table_app

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a in ("-h", "--help") for a in args):
        _check_options([a for a in args if not a.startswith("-")])
    description = "how much of the FLOP saving of RAS turns into wall-clock time, per execution mode"
    table_app("bench", results, report, args, description)


def _check_options(overrides: list[str]) -> None:
    """An unknown option of one of the bench's groups (`preset=h100`) or an unknown key (`warmup=2`: the warm-up
    is `ratio.warmup`) is one line and exit code 2, as in the main command, before Hydra runs (which would print
    its search path); other composition errors are left to Hydra."""
    from hydra import compose, initialize_config_module
    from hydra.errors import MissingConfigException

    try:
        with initialize_config_module(config_module="rasfw.conf", version_base=None):
            compose("bench", overrides=overrides)
    except MissingConfigException as exc:
        group, _, option = (exc.missing_cfg_file or "").rpartition("/")
        fail(UsageError(f"{group}: unknown option '{option}'; available: {', '.join(exc.options or [])}"))
    except Exception as exc:  # noqa: BLE001 - an unknown key is one line here; anything else Hydra's own run reports
        key, parent = getattr(exc.__cause__, "full_key", None), getattr(exc.__cause__, "parent_node", None)
        if key and isinstance(parent, DictConfig):
            fail(UsageError(_unknown_key(str(key), parent)))


def _unknown_key(key: str, parent: DictConfig) -> str:
    """`key: unknown setting` with the group key it likely means (`ratio.warmup` for `warmup`), else the keys its
    node has, nearest spelling first."""
    from rasfw.checks import nearest_first

    leaf = key.rpartition(".")[2]
    keys = [str(k) for k in parent.keys() if k not in ("hydra", "_target_")]
    nested = [f"{k}.{leaf}" for k in keys if isinstance(parent.get(k), DictConfig) and leaf in parent[k]]
    if nested:
        return f"{key}: unknown setting; did you mean {' or '.join(nested)}?"
    return f"{key}: unknown setting; it takes: {', '.join(nearest_first(leaf, keys))}"


if __name__ == "__main__":
    main()
