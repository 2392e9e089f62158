"""`python -m rasfw.bench`: how much of the FLOP saving of RAS turns into wall-clock time.

For each ratio: median wall time of whole generations against dense sampling of the same model in the
same process (alternating order), the FLOP ratio (`FlopCounterMode`), efficiency = speed-up divided by the
FLOP-ideal speed-up, peak memory and its overhead against dense (CUDA only), and the selection overhead.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import torch
from omegaconf import DictConfig

from rasfw.backends import resolve_backend
from rasfw.hooks import apply_ras, find_adapter, ras_backend, remove_ras
from rasfw.sampler import RegionAdaptiveSampler
from rasfw.state import ForwardPlan, RegionState
from rasfw.strategies.ratios import ConstantRatio
from rasfw.strategies.resets import FixedReset


class SyntheticSD3Pipeline:
    """An SD3-architecture transformer with random weights and fixed random text embeddings."""

    def __init__(self, preset: DictConfig, seed: int) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

        torch.manual_seed(seed)
        self.device = torch.device(preset.device)
        self.dtype = getattr(torch, preset.dtype)
        with torch.device(self.device):  # initialise in place: the GPU preset has 2 B parameters
            transformer = SD3Transformer2DModel(
                sample_size=preset.latent_side,
                patch_size=preset.patch,
                in_channels=preset.channels,
                out_channels=preset.channels,
                num_layers=preset.layers,
                attention_head_dim=preset.head_dim,
                num_attention_heads=preset.heads,
                joint_attention_dim=preset.text_dim,
                caption_projection_dim=preset.heads * preset.head_dim,
                pooled_projection_dim=preset.pooled_dim,
                pos_embed_max_size=max(preset.latent_side // preset.patch, 96),
            )
        # nn.Module.to: diffusers' own `to` warns about fp32-only modules that this model does not have
        self.transformer = torch.nn.Module.to(transformer, self.device, self.dtype).eval()
        self.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
        rows = 2 if preset.cfg else 1
        gen = torch.Generator().manual_seed(seed)
        side = preset.latent_side
        self.latents = torch.randn(1, preset.channels, side, side, generator=gen).to(self.device, self.dtype)
        self.context = torch.randn(rows, preset.context, preset.text_dim, generator=gen).to(self.device, self.dtype)
        self.pooled = torch.randn(rows, preset.pooled_dim, generator=gen).to(self.device, self.dtype)
        self.cfg = preset.cfg

    def forward_inputs(self, t: float = 500.0) -> dict[str, torch.Tensor]:
        x = torch.cat([self.latents] * 2) if self.cfg else self.latents
        timestep = torch.full((x.shape[0],), t, device=self.device, dtype=self.dtype)
        return {"hidden_states": x, "encoder_hidden_states": self.context, "pooled_projections": self.pooled, "timestep": timestep}

    @torch.no_grad()
    def __call__(self, steps: int, guidance: float = 7.0) -> torch.Tensor:
        self.scheduler.set_timesteps(steps, device=self.device)
        latents = self.latents.clone()
        for t in self.scheduler.timesteps:
            x = torch.cat([latents] * 2) if self.cfg else latents
            out = self.transformer(
                hidden_states=x,
                encoder_hidden_states=self.context,
                pooled_projections=self.pooled,
                timestep=t.expand(x.shape[0]).to(self.dtype),
                return_dict=False,
            )[0]
            if self.cfg:
                uncond, cond = out.chunk(2)
                out = uncond + guidance * (cond - uncond)
            latents = self.scheduler.step(out, t, latents, return_dict=False)[0]
        return latents


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generation(pipe: SyntheticSD3Pipeline, steps: int) -> tuple[float, int | None]:
    """Seconds for one generation and its peak memory (CUDA only)."""
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(pipe.device)
    _sync(pipe.device)
    start = time.perf_counter()
    pipe(steps)
    _sync(pipe.device)
    seconds = time.perf_counter() - start
    return seconds, (torch.cuda.max_memory_allocated(pipe.device) if cuda else None)


@torch.no_grad()
def forward_flops(pipe: SyntheticSD3Pipeline, active: int, backend_name: str) -> int:
    """FLOPs of one transformer call recomputing `active` image tokens (a dense call when all are)."""
    from torch.utils.flop_counter import FlopCounterMode

    transformer = pipe.transformer
    adapter = find_adapter(transformer)()
    state = RegionState()
    adapter.install(transformer, state, resolve_backend(backend_name, pipe.device))
    try:
        inputs = pipe.forward_inputs()
        grid = adapter.grid(inputs["hidden_states"])
        state.forward = ForwardPlan(None, capture=True)
        transformer(**inputs, return_dict=False)
        if active < grid.num_tokens:
            rows = inputs["hidden_states"].shape[0]
            index = torch.arange(active, device=pipe.device).expand(rows, -1)
            state.forward = ForwardPlan(index)
        else:
            state.forward = ForwardPlan(None)
        with FlopCounterMode(display=False) as counter:
            transformer(**inputs, return_dict=False)
        return int(counter.get_total_flops())
    finally:
        adapter.remove(transformer)


def _sampler(cfg: DictConfig, ratio: float) -> RegionAdaptiveSampler:
    return RegionAdaptiveSampler(
        ratio=ConstantRatio(ratio, cfg.warmup), reset=FixedReset(list(cfg.resets)), backend=cfg.backend, seed=cfg.seed
    )


def _timed_observe(sampler: RegionAdaptiveSampler, device: torch.device, totals: list[float]) -> None:
    """Time the sampler's per-step selection work (instance-level wrapper on this bench's own sampler)."""
    observe = sampler.observe

    def timed(*args: Any, **kwargs: Any) -> None:
        _sync(device)
        start = time.perf_counter()
        observe(*args, **kwargs)
        _sync(device)
        totals.append(time.perf_counter() - start)

    sampler.observe = timed


def measure(cfg: DictConfig) -> list[dict[str, Any]]:
    """Run the benchmark described by `cfg`; one row per ratio."""
    if cfg.preset not in cfg.presets:
        raise ValueError(f"preset must be one of {', '.join(cfg.presets)}; got {cfg.preset!r}")
    preset = cfg.presets[cfg.preset]
    if preset.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("preset=gpu needs a CUDA device; use preset=cpu here")
    pipe = SyntheticSD3Pipeline(preset, cfg.seed)
    n = (preset.latent_side // preset.patch) ** 2
    ratios = [float(r) for r in cfg.ratios]
    samplers = {r: _sampler(cfg, r) for r in ratios}
    selection: dict[float, list[float]] = {r: [] for r in ratios}
    for r, sampler in samplers.items():
        _timed_observe(sampler, pipe.device, selection[r])

    def run(ratio: float | None, steps: int) -> tuple[float, int | None, str]:
        if ratio is None:
            return (*_generation(pipe, steps), "none")
        apply_ras(pipe, samplers[ratio])
        try:
            seconds, peak = _generation(pipe, steps)
            backend = ras_backend(pipe).name
        finally:
            remove_ras(pipe)
        return seconds, peak, backend

    configs: list[float | None] = [None, *ratios]
    # warm-up: on a GPU every configuration once (kernels compiled, allocator primed); on a CPU one call
    for ratio in configs if pipe.device.type == "cuda" else [None]:
        run(ratio, cfg.steps if pipe.device.type == "cuda" else 1)
    for timings in selection.values():
        timings.clear()
    times: dict[float | None, list[float]] = {c: [] for c in configs}
    peaks: dict[float | None, int | None] = {}
    backends: dict[float, str] = {}
    for repeat in range(cfg.repeats):
        for ratio in configs if repeat % 2 == 0 else reversed(configs):
            seconds, peak, backend = run(ratio, cfg.steps)
            times[ratio].append(seconds)
            peaks[ratio] = peak if peaks.get(ratio) is None else max(peaks[ratio], peak)
            if ratio is not None:
                backends[ratio] = backend
            print(f"  ratio {ratio if ratio is not None else 'dense'}: {seconds:.3f} s", flush=True)

    flops_cache: dict[int, int] = {}

    def generation_flops(sampler: RegionAdaptiveSampler | None) -> int:
        total = 0
        for step in range(cfg.steps):
            skip = 0 if sampler is None else sampler.skip_count(step, cfg.steps, n)
            if n - skip not in flops_cache:
                flops_cache[n - skip] = forward_flops(pipe, n - skip, cfg.backend)
            total += flops_cache[n - skip]
        return total

    dense_time = statistics.median(times[None])
    dense_flops = generation_flops(None)
    rows = []
    for ratio in ratios:
        seconds = statistics.median(times[ratio])
        flops = generation_flops(samplers[ratio])
        speedup = dense_time / seconds
        ideal = dense_flops / flops
        peak, dense_peak = peaks[ratio], peaks[None]
        rows.append(
            {
                "ratio": ratio,
                "backend": backends[ratio],
                "speedup": speedup,
                "flops_ratio": flops / dense_flops,
                "ideal_speedup": ideal,
                "efficiency": speedup / ideal,
                "time_s": seconds,
                "dense_time_s": dense_time,
                "peak_memory_bytes": peak,
                "dense_peak_memory_bytes": dense_peak,
                "memory_overhead": None if peak is None or not dense_peak else peak / dense_peak - 1,
                "selection_ms_per_step": 1000 * sum(selection[ratio]) / max(len(selection[ratio]), 1),
            }
        )
    return rows


def machine() -> str:
    """A one-line description of where the benchmark ran."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads, torch {torch.__version__}"


def markdown(rows: list[dict[str, Any]], cfg: DictConfig) -> str:
    """The result table as markdown."""
    preset = cfg.presets[cfg.preset]
    head = (
        f"preset `{cfg.preset}` ({preset.layers} layers, hidden {preset.heads * preset.head_dim}, "
        f"{(preset.latent_side // preset.patch) ** 2} image tokens, {preset.context} context tokens, "
        f"{'CFG batch 2' if preset.cfg else 'batch 1'}, {preset.dtype}), {cfg.steps} steps, warm-up {cfg.warmup}, "
        f"resets {list(cfg.resets)}, median of {cfg.repeats}; {machine()}\n\n"
    )
    lines = [
        "| ratio | backend | speed-up | FLOP ratio | FLOP-ideal speed-up | efficiency | peak memory | memory overhead | selection ms/step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        peak = "n/a (CPU)" if row["peak_memory_bytes"] is None else f"{row['peak_memory_bytes'] / 2**30:.2f} GiB"
        overhead = "n/a" if row["memory_overhead"] is None else f"{100 * row['memory_overhead']:.1f} %"
        lines.append(
            f"| {row['ratio']} | {row['backend']} | {row['speedup']:.2f}x | {row['flops_ratio']:.3f} | "
            f"{row['ideal_speedup']:.2f}x | {row['efficiency']:.2f} | {peak} | {overhead} | {row['selection_ms_per_step']:.2f} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    from rasfw.cli import table_app

    table_app("bench", lambda cfg: {"machine": machine(), "rows": measure(cfg)}, lambda result, cfg: markdown(result["rows"], cfg))


if __name__ == "__main__":
    main()
