"""The embedded default model: a small pixel-space SD3 transformer, a learned text encoder and a mini pipeline.

The denoiser is a real diffusers ``SD3Transformer2DModel`` working directly on 32x32 RGB pixels with
``patch_size=2`` (256 image tokens); the scheduler is diffusers' ``FlowMatchEulerDiscreteScheduler``. The
sampling loop has the standard diffusers shape, so hooks on the transformer's submodules and wrappers around
``scheduler.set_timesteps`` / ``scheduler.step`` see exactly what they would see in a diffusers pipeline.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.cache_utils import CacheMixin
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rasfw._compat import reset_stateful_hooks
from rasfw.checks import first_line
from rasfw.embedded.models.text import TextEncoder
from rasfw.pipelines.loop import sd3_denoise
from rasfw.sizes import check_image_size

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

    @property
    def default_size(self) -> int:
        """Pixels per side when `height` / `width` are not given (the transformer's `sample_size`)."""
        return int(self.transformer.config.sample_size)

    @property
    def max_size(self) -> int | None:
        """The most pixels per side the position embedding covers (None: no limit)."""
        limit = getattr(self.transformer.config, "pos_embed_max_size", None)
        return None if limit is None else int(limit) * self.patch_size

    def encode_prompts(
        self,
        prompts: list[str],
        guidance: bool,
        negative_prompts: list[str] | None = None,
        num_images_per_prompt: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text conditioning, each prompt's rows repeated per image; with guidance the unconditional half first.

        Args:
            prompts: the prompts, one per image group.
            guidance: classifier-free guidance: the negative prompts are encoded too, in the same batch.
            negative_prompts: one per prompt; None: the empty prompt "" (the unconditional prompt).
            num_images_per_prompt: images per prompt: each prompt's rows repeated that often, in a row.

        Returns:
            `(ctx (R, L, D), pooled (R, P))` with `R = (2 if guidance else 1) * len(prompts) * num_images_per_prompt`.
        """
        negatives = [""] * len(prompts) if negative_prompts is None else list(negative_prompts)
        texts = negatives + list(prompts) if guidance else list(prompts)
        ctx, pooled = self.text_encoder(texts)
        if num_images_per_prompt > 1:  # (neg_0, neg_0, neg_1, ..., pos_0, pos_0, pos_1, ...), as diffusers orders them
            ctx, pooled = (
                ctx.repeat_interleave(num_images_per_prompt, 0),
                pooled.repeat_interleave(num_images_per_prompt, 0),
            )
        return ctx.to(self.dtype), pooled.to(self.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        *,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int | None = 1,
        num_inference_steps: int = 28,
        guidance_scale: float = 4.0,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict[str, torch.Tensor]] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | tuple[str, ...] = ("latents",),
        progress: bool | str = True,
        **unsupported: Any,
    ) -> ImagePipelineOutput | tuple:
        """Generate `num_images_per_prompt` images per prompt, as diffusers' `StableDiffusion3Pipeline` does.

        Args:
            prompt: a prompt or a list of prompts (also the first positional argument).
            negative_prompt: the prompt(s) of the unconditional half of classifier-free guidance, one for all
                prompts or a list of one per prompt; None: the empty prompt. Ignored without guidance.
            num_images_per_prompt: images per prompt; each prompt's images are consecutive in the output.
            num_inference_steps: sampling steps.
            guidance_scale: classifier-free guidance scale; at most 1 turns guidance off.
            height: image height in pixels, a multiple of the patch size; None: the model's native size.
            width: image width in pixels, a multiple of the patch size; None: the model's native size.
            generator: draws the starting noise: one generator for the whole batch, or a list of one per image
                (image i drawn from generator i alone, as if generated by itself). On the generator's device.
            latents: the starting noise `(images, 3, height, width)` instead of drawing it.
            output_type: "pil" (a list of RGB `PIL.Image`s), "pt" (a `(B, 3, H, W)` float tensor in [0, 1])
                or "np" (a `(B, H, W, 3)` float array in [0, 1]).
            return_dict: return an `ImagePipelineOutput`; False returns the tuple `(images,)`.
            callback_on_step_end: called after each step as `callback(pipe, step, timestep, callback_kwargs)`,
                `callback_kwargs` holding the tensors named in `callback_on_step_end_tensor_inputs`; it returns
                a dict whose "latents", "prompt_embeds" or "pooled_prompt_embeds" replace those tensors.
            callback_on_step_end_tensor_inputs: names from "latents", "prompt_embeds" (the text embeddings,
                unconditional half first) and "pooled_prompt_embeds".
            progress: show a progress bar; a string is its label.
            **unsupported: refused with one line (diffusers' keywords this model has no use for).

        Returns:
            `ImagePipelineOutput` whose `.images` are in the `output_type` asked for.

        Raises:
            ValueError: one line naming the argument that is wrong and what is allowed.

        Example:
            >>> from rasfw.embedded.models import load_pipeline
            >>> pipe = load_pipeline()
            >>> image = pipe("a small red circle at the top left", num_inference_steps=8, progress=False).images[0]
            >>> image.size
            (32, 32)
        """
        if unsupported:
            raise ValueError(
                f"{', '.join(sorted(unsupported))}: not an argument of the embedded pipeline; it takes {', '.join(ARGUMENTS)}"
            )
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer of at least 1; got {num_inference_steps!r}")
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number; got {guidance_scale!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}; got {output_type!r}")
        prompts = _prompt_list(prompt)
        negatives = _negative_prompts(negative_prompt, len(prompts))
        per_prompt = _images_per_prompt(num_images_per_prompt)
        height = self.default_size if height is None else height
        width = self.default_size if width is None else width
        check_image_size(height, width, self.patch_size, self.max_size)
        tensor_inputs = _tensor_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
        shape = (len(prompts) * per_prompt, self.transformer.config.in_channels, height, width)
        latents = self._starting_noise(shape, generator, latents)
        ctx, pooled = self.encode_prompts(prompts, guidance_scale > 1, negatives, per_prompt)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        step_end = None if callback_on_step_end is None else self._step_end(callback_on_step_end, tensor_inputs)
        try:
            latents = sd3_denoise(
                self.transformer, self.scheduler, latents, ctx, pooled, guidance_scale, progress, step_end
            )
        finally:  # as diffusers' pipelines do after each call (maybe_free_model_hooks): a step cache starts afresh
            reset_stateful_hooks(self.transformer)
        images = ((latents.float() + 1) / 2).clamp(0, 1)  # (B, 3, H, W): the model works in [-1, 1] pixels
        if output_type == "pil":
            images = VaeImageProcessor.numpy_to_pil(VaeImageProcessor.pt_to_numpy(images))
        elif output_type == "np":
            images = images.permute(0, 2, 3, 1).cpu().numpy()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _starting_noise(
        self, shape: tuple[int, ...], generator: torch.Generator | list[torch.Generator] | None, latents: Any
    ) -> torch.Tensor:
        """The starting noise `shape` on the pipeline's device and dtype: `latents` if given, else drawn.

        Args:
            shape: `(images, channels, height, width)`.
            generator: one generator, a list of one per image, or None (torch's default CPU generator).
            latents: a tensor of `shape`, or None.
        """
        if latents is not None:
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
                got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise ValueError(
                    f"latents must be a tensor of shape {shape} (images, channels, height, width); got {got}"
                )
            return latents.to(self.device, self.dtype)
        generators = _generators(generator, shape[0])
        if generators is None:  # one draw for the whole batch (on the generator's device; the CPU by default)
            device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
            return noise.to(self.device, self.dtype)
        rows = [torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32, device=g.device) for g in generators]
        return torch.cat([row.to(self.device) for row in rows]).to(self.dtype)

    def _step_end(
        self, callback: Callable[..., dict[str, torch.Tensor]], names: tuple[str, ...]
    ) -> Callable[[int, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """`sd3_denoise`'s `step_end` that calls a diffusers `callback_on_step_end`.

        Args:
            callback: `callback(pipe, step, timestep, callback_kwargs) -> dict`.
            names: the tensors it is handed (`callback_on_step_end_tensor_inputs`).
        """

        def step_end(step: int, timestep: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            outputs = callback(self, step, timestep, {name: tensors[name] for name in names})
            if not isinstance(outputs, dict):
                raise ValueError(
                    f"callback_on_step_end must return a dict (of tensors from {', '.join(CALLBACK_TENSOR_INPUTS)}); "
                    f"got {type(outputs).__name__}"
                )
            return {name: outputs.get(name, tensor) for name, tensor in tensors.items()}

        return step_end


ARGUMENTS = (
    "prompt", "negative_prompt", "num_images_per_prompt", "num_inference_steps", "guidance_scale", "height",
    "width", "generator", "latents", "output_type", "return_dict", "callback_on_step_end",
    "callback_on_step_end_tensor_inputs", "progress",
)  # fmt: skip
"""The keywords `MiniPipeline.__call__` takes."""

CALLBACK_TENSOR_INPUTS = ("latents", "prompt_embeds", "pooled_prompt_embeds")
"""The tensors a `callback_on_step_end` may ask for and replace (those of diffusers' SD3 pipeline)."""


def _prompt_list(prompt: Any) -> list[str]:
    """`prompt` as a non-empty list of strings.

    Args:
        prompt: a string or a list (or tuple) of strings.
    """
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        shown = "an empty list" if isinstance(prompts, (list, tuple)) and not prompts else repr(prompt)
        raise ValueError(f"prompt must be a string or a non-empty list of strings; got {shown}")
    return list(prompts)


def _negative_prompts(negative_prompt: Any, count: int) -> list[str] | None:
    """One negative prompt per prompt, or None (the empty prompt) when none is given.

    Args:
        negative_prompt: None, a string (for every prompt) or a list of `count` strings.
        count: the number of prompts.
    """
    if negative_prompt is None:
        return None
    if isinstance(negative_prompt, str):
        return [negative_prompt] * count
    if not isinstance(negative_prompt, (list, tuple)) or not all(isinstance(p, str) for p in negative_prompt):
        raise ValueError(f"negative_prompt must be a string or a list of strings; got {negative_prompt!r}")
    if len(negative_prompt) != count:
        raise ValueError(
            f"negative_prompt must be a string or a list of one per prompt ({count}); got a list of {len(negative_prompt)}"
        )
    return list(negative_prompt)


def _images_per_prompt(value: Any) -> int:
    """`num_images_per_prompt` checked: an integer >= 1 (None: 1, as in diffusers).

    Args:
        value: the argument as given.
    """
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"num_images_per_prompt must be an integer >= 1; got {value!r}")
    return value


def _generators(generator: Any, images: int) -> list[torch.Generator] | None:
    """A list of one generator per image, or None when one generator (or none) draws the whole batch.

    Args:
        generator: None, a `torch.Generator`, or a list of one per image (as diffusers requires).
        images: the number of images in the batch (prompts x `num_images_per_prompt`).
    """
    if generator is None or isinstance(generator, torch.Generator):
        return None
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise ValueError(f"generator must be a torch.Generator or a list of them; got {generator!r}")
    if len(generator) != images:
        raise ValueError(
            f"generator must be one torch.Generator or a list of one per image ({images}: prompts x "
            f"num_images_per_prompt); got a list of {len(generator)}"
        )
    return list(generator)


def _tensor_inputs(callback: Any, names: Any) -> tuple[str, ...]:
    """`callback_on_step_end_tensor_inputs` checked against `CALLBACK_TENSOR_INPUTS`; the callback must be callable.

    Args:
        callback: `callback_on_step_end` (None: no callback).
        names: the tensor names the callback is handed.
    """
    if callback is not None and not callable(callback):
        raise ValueError(
            f"callback_on_step_end must be callable (pipe, step, timestep, callback_kwargs); got {callback!r}"
        )
    allowed = ", ".join(CALLBACK_TENSOR_INPUTS)
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"callback_on_step_end_tensor_inputs must be a list of names from {allowed}; got {names!r}")
    unknown = [name for name in names if name not in CALLBACK_TENSOR_INPUTS]
    if unknown:
        raise ValueError(f"callback_on_step_end_tensor_inputs must be names from {allowed}; got {unknown[0]!r}")
    return tuple(names)


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
    config = json.loads(metadata["config"])
    if not isinstance(config, dict) or "transformer" not in config:
        what = "an evaluator's classifier (rasfw.embedded.eval)" if "record" in metadata else "not an embedded model"
        raise ValueError(
            f"model.weights: {path} is {what}, not a model the training script wrote (its config has no transformer); "
            "give a file from rasfw/embedded/models/weights/ or one the training script wrote"
        )
    pipe = build_pipeline(config)
    state = load_file(str(path))
    for name, module in (("transformer", pipe.transformer), ("text_encoder", pipe.text_encoder)):
        prefix = name + "."
        try:
            module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        except RuntimeError as exc:
            raise ValueError(f"model.weights: {path} does not fit the model's {name} ({first_line(exc)})") from exc
    pipe.weights_source = str(path)
    return pipe
