"""The embedded default model: a small pixel-space SD3 transformer, a learned text encoder and a mini pipeline.

The denoiser is a real diffusers ``SD3Transformer2DModel`` working directly on 32x32 RGB pixels with
``patch_size=2`` (256 image tokens); the scheduler is diffusers' ``FlowMatchEulerDiscreteScheduler``. The
sampling loop has the standard diffusers shape, so hooks on the transformer's submodules and wrappers around
``scheduler.set_timesteps`` / ``scheduler.step`` see exactly what they would see in a diffusers pipeline.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from rasfw.embedded.models.text import TextEncoder
from rasfw.strategies._checks import first_line

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_WEIGHTS",
    "MiniPipeline",
    "build_pipeline",
    "load_pipeline",
    "save_pipeline",
]

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "mini_sd3.safetensors"
RANDOM_SOURCE = "random weights (seed 0): untrained"

DEFAULT_CONFIG: dict = {
    "transformer": {
        "sample_size": 32,
        "patch_size": 2,
        "in_channels": 3,
        "out_channels": 3,
        "num_layers": 4,
        "attention_head_dim": 32,
        "num_attention_heads": 4,
        "joint_attention_dim": 64,
        "caption_projection_dim": 128,
        "pooled_projection_dim": 64,
        "pos_embed_max_size": 32,
    },
    "text_encoder": {"dim": 64, "pooled_dim": 64, "max_length": 8, "layers": 1, "heads": 4},
    "scheduler": {"num_train_timesteps": 1000, "shift": 1.0},
}

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class MiniPipeline:
    """Text-to-image sampling with classifier-free guidance; images come back in [0, 1]."""

    def __init__(
        self,
        transformer: SD3Transformer2DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
        text_encoder: TextEncoder,
        config: dict,
        weights_source: str = RANDOM_SOURCE,
    ):
        self.transformer = transformer
        self.scheduler = scheduler
        self.text_encoder = text_encoder
        self.config = config
        self.weights_source = weights_source

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def patch_size(self) -> int:
        return self.transformer.config.patch_size

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> MiniPipeline:
        if dtype == self.dtype:
            dtype = None  # diffusers warns on every dtype cast, even a no-op one
        kwargs = {"device": device} if dtype is None else {"device": device, "dtype": dtype}
        self.transformer.to(**kwargs)
        self.text_encoder.to(**kwargs)
        return self

    def encode_prompts(self, prompts: list[str], guidance: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Text conditioning; with guidance the unconditional ("") half comes first."""
        texts = [""] * len(prompts) + list(prompts) if guidance else list(prompts)
        ctx, pooled = self.text_encoder(texts)
        return ctx.to(self.dtype), pooled.to(self.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        *,
        num_inference_steps: int = 28,
        guidance_scale: float = 4.0,
        height: int = 32,
        width: int = 32,
        generator: torch.Generator | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"height and width must be multiples of the patch size {p}, got {height}x{width}")
        guidance = guidance_scale > 1
        ctx, pooled = self.encode_prompts(prompts, guidance)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        shape = (len(prompts), self.transformer.config.in_channels, height, width)
        latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype)
        for t in tqdm(self.scheduler.timesteps, disable=not progress):
            x = torch.cat([latents] * 2) if guidance else latents
            out = self.transformer(
                hidden_states=x,
                encoder_hidden_states=ctx,
                pooled_projections=pooled,
                timestep=t.expand(x.shape[0]),
                return_dict=False,
            )[0]
            if guidance:
                u, c = out.chunk(2)
                out = u + guidance_scale * (c - u)
            latents = self.scheduler.step(out, t, latents, return_dict=False)[0]
        return ((latents.float() + 1) / 2).clamp(0, 1)


def build_pipeline(config: dict | None = None, seed: int = 0) -> MiniPipeline:
    """A pipeline with freshly initialised weights (deterministic from ``seed``)."""
    config = copy.deepcopy(DEFAULT_CONFIG if config is None else config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(**config["transformer"])
        text_encoder = TextEncoder(**config["text_encoder"])
    scheduler = FlowMatchEulerDiscreteScheduler(**config["scheduler"])
    transformer.eval()
    text_encoder.eval()
    return MiniPipeline(transformer, scheduler, text_encoder, config, RANDOM_SOURCE)


def save_pipeline(
    path: str | Path,
    transformer: torch.nn.Module,
    text_encoder: torch.nn.Module,
    config: dict,
    extra: dict | None = None,
) -> Path:
    """Write both modules' weights (float32) and the config to one safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"transformer.{k}": v.detach().float().cpu().contiguous() for k, v in transformer.state_dict().items()}
    tensors.update(
        {f"text_encoder.{k}": v.detach().float().cpu().contiguous() for k, v in text_encoder.state_dict().items()}
    )
    metadata = {"config": json.dumps(config)}
    if extra:
        metadata.update({k: json.dumps(v) for k, v in extra.items()})
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def load_pipeline(weights: str | None = None, device: str = "cpu", dtype: str = "float32") -> MiniPipeline:
    """Load the shipped model, or the safetensors file at ``weights``.

    With no ``weights`` and no shipped file, the model is built with fixed-seed random weights and
    ``weights_source`` says so.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"model.weights: no such file: {weights}")
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        pipe = build_pipeline()
    else:
        pipe = _load_weights(path)
    return pipe.to(device=device, dtype=_DTYPES[dtype])


def _load_weights(path: Path) -> MiniPipeline:
    """The pipeline saved at `path` by `save_pipeline`; any other file is a one-line `ValueError`."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"model.weights: {path} is not a safetensors file ({first_line(exc)})") from exc
    if "config" not in metadata:
        raise ValueError(f"model.weights: {path} is not an embedded-model file (no 'config' in its metadata)")
    pipe = build_pipeline(json.loads(metadata["config"]))
    state = load_file(str(path))
    for name, module in (("transformer", pipe.transformer), ("text_encoder", pipe.text_encoder)):
        prefix = name + "."
        try:
            module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        except RuntimeError as exc:
            raise ValueError(f"model.weights: {path} does not fit the model's {name} ({first_line(exc)})") from exc
    pipe.weights_source = str(path)
    return pipe

