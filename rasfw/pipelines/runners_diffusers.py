"""Runners for unmodified diffusers pipelines: SD3, Lumina-Next, Flux and Wan (video).

Two kinds per family, each the `_target_` of a model config (`conf/model/<name>.yaml`):

* `<Family>Runner(path, device, dtype)`: real weights from a local folder or a Hugging Face hub id, with
  the pipeline's own text encoders;
* `Tiny<Family>Runner(seed, device, dtype)`: the tiny random pipelines of `rasfw.pipelines.tiny`, with prompt
  embeddings drawn from a seed derived from the prompt text, so `python -m rasfw model=sd3_tiny` runs
  anywhere, offline, in seconds (its pictures are noise; use it for speed and exactness checks).

Image i of a call is seeded with `seed + i` (one CPU generator per image, so results do not depend on
the device's random number generator).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch

from rasfw.checks import device as check_device
from rasfw.checks import first_line
from rasfw.pipelines.runners import MiniRunner, PipelineRunner  # noqa: F401 - MiniRunner: every runner is registered once this imports
from rasfw.registry import register

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_TINY = {
    "StableDiffusion3Pipeline": "model=sd3_tiny",
    "LuminaPipeline": "model=lumina_next_tiny",
    "FluxPipeline": "model=flux_tiny",
    "WanPipeline": "model=wan_tiny",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class DiffusersRunner(PipelineRunner):
    """Shared `generate` for diffusers text-to-image pipelines that return images with `output_type="pt"`."""

    latent_scale = 8
    default_size = (1024, 1024)

    def __init__(self, pipe: Any, weights: str) -> None:
        self.pipe = pipe
        self.weights = weights

    output: str = "images"  # the pipeline output's field with the result

    def generate(self, prompts, *, steps, guidance, height, width, seed, progress=True) -> torch.Tensor:
        prompts = list(prompts)
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
        self.pipe.set_progress_bar_config(disable=not progress, desc=progress if isinstance(progress, str) else None)
        with torch.no_grad():
            result = self.pipe(
                **self.prompt_inputs(prompts),
                **self.call_options(),
                num_inference_steps=steps,
                guidance_scale=guidance,
                height=height,
                width=width,
                generator=generators,
                output_type="pt",
            )
        return getattr(result, self.output).float().cpu()  # (B, 3, H, W) in [0, 1]; videos (B, F, 3, H, W)

    def call_options(self) -> dict[str, Any]:
        """Further arguments of the pipeline call (none for images)."""
        return {}

    def prompt_inputs(self, prompts: list[str]) -> dict[str, Any]:
        """The pipeline's prompt arguments; the real pipelines encode the text themselves."""
        return {"prompt": prompts}


class VideoRunner(DiffusersRunner):
    """Shared `generate` for diffusers text-to-video pipelines (`.frames` with `output_type="pt"`).

    `generate` returns videos `(B, frames, 3, H, W)` in [0, 1]; `frames` is the number of video frames.
    """

    frames: int = 1
    output = "frames"

    def call_options(self) -> dict[str, Any]:
        return {"num_frames": self.frames}

    @property
    def patch_size(self) -> int:
        return int(self.pipe.transformer.config.patch_size[1])  # (t, h, w): the spatial patch


def _frames(frames: object) -> int:
    """Video frames a Wan VAE can make: `4k + 1` (its temporal stride is 4)."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1 or (frames - 1) % 4:
        raise ValueError(f"model.frames must be an integer 4k + 1 (1, 5, 9, ..., 81); got {frames!r}")
    return frames


# -- real weights ---------------------------------------------------------------------------------


@register("runner", "sd3")
class SD3Runner(DiffusersRunner):
    """Stable Diffusion 3 / 3.5 (`StableDiffusion3Pipeline`) from `path`.

    Args:
        path: a local pipeline folder or a hub id.
        device: where the pipeline runs ("cuda", "cpu", ...).
        dtype: "float16", "bfloat16" or "float32".
    """

    pipeline_name: ClassVar[str] = "StableDiffusion3Pipeline"

    def __init__(
        self,
        path: str = "stabilityai/stable-diffusion-3-medium-diffusers",
        device: str = "cuda",
        dtype: str = "float16",
    ) -> None:
        super().__init__(load_diffusers_pipeline(self.pipeline_name, path, device, dtype), path)


@register("runner", "lumina_next")
class LuminaNextRunner(DiffusersRunner):
    """Lumina-Next (`LuminaPipeline`) from `path`; arguments as `SD3Runner`."""

    pipeline_name: ClassVar[str] = "LuminaPipeline"

    def __init__(
        self, path: str = "Alpha-VLLM/Lumina-Next-SFT-diffusers", device: str = "cuda", dtype: str = "bfloat16"
    ) -> None:
        super().__init__(load_diffusers_pipeline(self.pipeline_name, path, device, dtype), path)


@register("runner", "flux")
class FluxRunner(DiffusersRunner):
    """Flux.1 (`FluxPipeline`) from `path`; `guidance` is the distilled guidance embedding (3.5 is typical)."""

    pipeline_name: ClassVar[str] = "FluxPipeline"

    def __init__(
        self, path: str = "black-forest-labs/FLUX.1-dev", device: str = "cuda", dtype: str = "bfloat16"
    ) -> None:
        super().__init__(load_diffusers_pipeline(self.pipeline_name, path, device, dtype), path)

    @property
    def patch_size(self) -> int:
        return 2  # the pipeline packs 2x2 latent pixels per token; the transformer's own patch size is 1


@register("runner", "wan")
class WanRunner(VideoRunner):
    """Wan 2.1 / 2.2 text-to-video (`WanPipeline`) from `path`; arguments as `SD3Runner`, plus `frames`.

    A Wan 2.2 folder with `transformer_2` gets RAS on both transformers (see `docs/models/wan.md`).
    """

    pipeline_name: ClassVar[str] = "WanPipeline"
    default_size = (480, 832)

    def __init__(
        self,
        path: str = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        device: str = "cuda",
        dtype: str = "bfloat16",
        frames: int = 81,
    ) -> None:
        self.frames = _frames(frames)
        super().__init__(load_diffusers_pipeline(self.pipeline_name, path, device, dtype), path)


def load_diffusers_pipeline(pipeline_name: str, path: str, device: str, dtype: str) -> Any:
    """`diffusers.<pipeline_name>.from_pretrained(path)` on `device` in `dtype`, failing with one clear line.

    Raises:
        ValueError: unknown dtype, or a folder that is not a loadable pipeline.
        FileNotFoundError: `path` is neither a folder nor a hub id the hub can provide.
    """
    import diffusers

    torch_dtype = _dtype(dtype)
    folder = Path(path).expanduser()
    if not folder.is_dir() and not _HUB_ID.match(str(path)):
        raise FileNotFoundError(
            f"model.path: cannot load '{path}': no such folder (and not a hub id of the form org/name); "
            f"pass model.path=<local folder>, or try {_TINY.get(pipeline_name, 'a *_tiny model')} offline"
        )
    check_device("model.device", device)  # before loading gigabytes of weights
    pipeline_class = getattr(diffusers, pipeline_name)
    try:
        with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; accept both
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = pipeline_class.from_pretrained(str(folder) if folder.is_dir() else path, torch_dtype=torch_dtype)
    except Exception as exc:  # noqa: BLE001 - diffusers and huggingface_hub raise many kinds; one line for all
        if folder.is_dir():
            raise ValueError(f"model.path: cannot load '{path}' as a {pipeline_name}: {first_line(exc, limit=160)}") from exc
        raise FileNotFoundError(
            f"model.path: cannot load '{path}': no such folder and {_hub_reason(exc)}; "
            f"pass model.path=<local folder>, or try {_TINY.get(pipeline_name, 'a *_tiny model')} offline"
        ) from exc
    return pipe.to(device)


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {', '.join(_DTYPES)}; got {name!r}")
    return _DTYPES[name]


def _hub_reason(exc: BaseException) -> str:
    """Why the hub could not provide a model, in a few words."""
    names = set()
    seen: BaseException | None = exc
    while seen is not None and len(names) < 16:
        names.add(type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    if names & {"RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"}:
        return "the hub has no such model"
    if "GatedRepoError" in names:
        return "the hub model is gated (log in with a token that has access)"
    return "the hub is unreachable"


# -- tiny random pipelines --------------------------------------------------------------------------


class TinyRunner(DiffusersRunner):
    """Base of the tiny random runners: builds `rasfw.pipelines.tiny.<builder>(seed)` on `device` in `dtype`."""

    builder: ClassVar[str] = ""
    family: ClassVar[str] = ""
    default_size = (256, 256)

    def __init__(self, seed: int = 0, device: str = "cpu", dtype: str = "float32") -> None:
        from rasfw.pipelines import tiny

        torch_dtype = _dtype(dtype)
        pipe = getattr(tiny, self.builder)(seed).to(check_device("model.device", device))
        if torch_dtype != torch.float32:
            pipe = pipe.to(dtype=torch_dtype)
        super().__init__(pipe, f"random tiny {self.family} (seed {seed})")

    def embeddings(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from rasfw.pipelines.tiny import prompt_embeddings

        device, dtype = self.pipe.transformer.device, self.pipe.transformer.dtype
        tokens, pooled = prompt_embeddings(prompts)
        return tokens.to(device, dtype), pooled.to(device, dtype)


@register("runner", "sd3_tiny")
class TinySD3Runner(TinyRunner):
    """A tiny random `StableDiffusion3Pipeline` (see `rasfw.pipelines.tiny`)."""

    builder, family = "tiny_sd3_pipeline", "SD3"

    def prompt_inputs(self, prompts):
        (tokens, pooled), (neg_tokens, neg_pooled) = self.embeddings(prompts), self.embeddings([""] * len(prompts))
        return {
            "prompt_embeds": tokens,
            "pooled_prompt_embeds": pooled,
            "negative_prompt_embeds": neg_tokens,
            "negative_pooled_prompt_embeds": neg_pooled,
        }


@register("runner", "lumina_next_tiny")
class TinyLuminaNextRunner(TinyRunner):
    """A tiny random `LuminaPipeline` (Lumina-Next; see `rasfw.pipelines.tiny`)."""

    builder, family = "tiny_lumina_next_pipeline", "Lumina-Next"

    def prompt_inputs(self, prompts):
        tokens, _ = self.embeddings(prompts)
        neg_tokens, _ = self.embeddings([""] * len(prompts))
        mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)
        return {
            "prompt_embeds": tokens,
            "prompt_attention_mask": mask,
            "negative_prompt_embeds": neg_tokens,
            "negative_prompt_attention_mask": mask,
        }


@register("runner", "flux_tiny")
class TinyFluxRunner(TinyRunner):
    """A tiny random `FluxPipeline` with a guidance embedding (see `rasfw.pipelines.tiny`)."""

    builder, family = "tiny_flux_pipeline", "Flux"

    def prompt_inputs(self, prompts):
        tokens, pooled = self.embeddings(prompts)
        return {"prompt_embeds": tokens, "pooled_prompt_embeds": pooled}

    @property
    def patch_size(self) -> int:
        return 2


@register("runner", "wan_tiny")
class TinyWanRunner(TinyRunner, VideoRunner):
    """A tiny random `WanPipeline` (see `rasfw.pipelines.tiny`); `two_stage` builds Wan 2.2's two-transformer layout."""

    builder, family = "tiny_wan_pipeline", "Wan"
    default_size = (64, 96)

    def __init__(
        self, seed: int = 0, device: str = "cpu", dtype: str = "float32", frames: int = 9, two_stage: bool = False
    ) -> None:
        from rasfw.pipelines import tiny

        if not isinstance(two_stage, bool):
            raise ValueError(f"model.two_stage must be true or false; got {two_stage!r}")
        self.frames = _frames(frames)
        torch_dtype = _dtype(dtype)
        pipe = tiny.tiny_wan_pipeline(seed, two_stage=two_stage).to(device)
        if torch_dtype != torch.float32:
            pipe = pipe.to(dtype=torch_dtype)
        name = "Wan 2.2 (two transformers)" if two_stage else "Wan"
        DiffusersRunner.__init__(self, pipe, f"random tiny {name} (seed {seed})")

    def prompt_inputs(self, prompts):
        tokens, _ = self.embeddings(prompts)
        neg_tokens, _ = self.embeddings([""] * len(prompts))
        return {"prompt_embeds": tokens, "negative_prompt_embeds": neg_tokens}
