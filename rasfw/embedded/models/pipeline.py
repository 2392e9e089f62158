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
from diffusers.models.cache_utils import CacheMixin
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rasfw.embedded.models.text import TextEncoder
from rasfw.loop import sd3_denoise
from rasfw.strategies._checks import first_line
from rasfw.viz import to_pil

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


class MiniTransformer(SD3Transformer2DModel, CacheMixin):
    """diffusers' `SD3Transformer2DModel` with diffusers' `CacheMixin` (`enable_cache`, `cache_context`),
    as diffusers' cache-capable transformers have: step caches (`cache=first_block`, ...) attach to it."""


OUTPUT_TYPES = ("pil", "pt", "np")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class MiniPipeline:
    """Text-to-image sampling with classifier-free guidance, called like a diffusers pipeline.

    `pipe(prompt).images[0]` is a PIL image; `output_type="pt"` gives a `(B, 3, H, W)` tensor in [0, 1].
    """

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
        prompts: str | list[str],
        *,
        num_inference_steps: int = 28,
        guidance_scale: float = 4.0,
        height: int = 32,
        width: int = 32,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        progress: bool | str = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate one image per prompt, as a diffusers pipeline does.

        Args:
            prompts: a prompt or a list of prompts.
            num_inference_steps: sampling steps.
            guidance_scale: classifier-free guidance scale; at most 1 turns guidance off.
            height: image height in pixels, a multiple of the patch size.
            width: image width in pixels, a multiple of the patch size.
            generator: draws the starting noise (CPU).
            output_type: "pil" (a list of RGB `PIL.Image`s), "pt" (a `(B, 3, H, W)` float tensor in [0, 1])
                or "np" (a `(B, H, W, 3)` float array in [0, 1]).
            return_dict: return an `ImagePipelineOutput`; False returns the tuple `(images,)`.
            progress: show a progress bar; a string is its label.

        Returns:
            `ImagePipelineOutput` whose `.images` are in the `output_type` asked for.

        Example:
            >>> from rasfw.embedded.models import load_pipeline
            >>> pipe = load_pipeline()
            >>> image = pipe("a small red circle at the top left", num_inference_steps=8, progress=False).images[0]
            >>> image.size
            (32, 32)
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}; got {output_type!r}")
        if isinstance(prompts, str):
            prompts = [prompts]
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"height and width must be multiples of the patch size {p}, got {height}x{width}")
        ctx, pooled = self.encode_prompts(prompts, guidance_scale > 1)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        shape = (len(prompts), self.transformer.config.in_channels, height, width)
        latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype)
        try:
            latents = sd3_denoise(self.transformer, self.scheduler, latents, ctx, pooled, guidance_scale, progress)
        finally:  # as diffusers' pipelines do after each call (maybe_free_model_hooks): a step cache starts afresh
            reset = getattr(self.transformer, "_reset_stateful_cache", None)
            if reset is not None:
                reset()
        images = ((latents.float() + 1) / 2).clamp(0, 1)  # (B, 3, H, W): the model works in [-1, 1] pixels
        if output_type == "pil":
            images = [to_pil(image) for image in images]
        elif output_type == "np":
            images = images.permute(0, 2, 3, 1).cpu().numpy()
        return ImagePipelineOutput(images=images) if return_dict else (images,)


def build_pipeline(config: dict | None = None, seed: int = 0) -> MiniPipeline:
    """A pipeline with freshly initialised weights (deterministic from ``seed``)."""
    config = copy.deepcopy(DEFAULT_CONFIG if config is None else config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = MiniTransformer(**config["transformer"])
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

