"""Runners: one uniform `generate` call over the different pipelines the CLI can drive.

A model config (`conf/model/<name>.yaml`) instantiates a runner. The CLI only talks to runners, so a
new model family needs a runner factory and a config file, not a change to the CLI.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from rasfw.checks import device as check_device
from rasfw.registry import register


class PipelineRunner(ABC):
    """Wraps a pipeline object that has `.transformer` and `.scheduler`.

    Attributes:
        pipe: the pipeline `apply_ras` is applied to.
        weights: a one-line description of the weights in use (path, hub id or "random ...").
        latent_scale: image pixels per latent pixel (8 for an SD3 VAE, 1 for a pixel-space model).
    """

    pipe: Any
    weights: str = ""
    latent_scale: int = 1
    default_size: tuple[int, int] = (32, 32)

    @abstractmethod
    def generate(
        self, prompts: list[str], *, steps: int, guidance: float, height: int, width: int, seed: int,
        progress: bool | str,
    ) -> torch.Tensor:
        """Images `(B, 3, height, width)` in [0, 1], one per prompt, deterministic given `seed`.

        `progress` shows a progress bar; a string is its label (the CLI's "dense", "RAS 0.5").
        """

    def evaluate(
        self,
        prompts: list[str],
        images: torch.Tensor,
        dense_images: torch.Tensor | None,
        ras_update_counts: torch.Tensor,
    ) -> dict[str, Any]:
        """Extra summary fields for this model (quality metrics); none by default.

        Two fields are for the bootstrap over prompts (`rasfw.app.stats`): `per_prompt`, per-prompt values whose
        means are metrics of the summary (`{metric: [value per prompt]}`), and `features`, evaluator
        features from which distances are recomputed on a resample (`{name: (N, D) tensor}`, one row per
        prompt; the CLI writes them to `eval_features.npz`, not into the summary).

        Args:
            ras_update_counts: `(B, rows, cols)` how often each token was recomputed at RAS steps.
        """
        return {}

    @property
    def patch_size(self) -> int:
        return int(self.pipe.transformer.config.patch_size)

    @property
    def max_size(self) -> int | None:
        """Largest height/width in pixels the model's position embedding covers; None: no fixed limit."""
        limit = getattr(self.pipe.transformer.config, "pos_embed_max_size", None)
        return None if limit is None else int(limit) * self.patch_size * self.latent_scale


@register("runner", "default")
class MiniRunner(PipelineRunner):
    """The embedded default model (`rasfw.embedded.models.MiniPipeline`), a pixel-space DiT."""

    latent_scale = 1

    def __init__(
        self, weights: str | None = None, device: str = "cpu", dtype: str = "float32", testbed: str = "shapes"
    ) -> None:
        """Args:
        weights: a safetensors file written by the training script; None: the testbed's shipped weights.
        device: where the pipeline runs.
        dtype: the weights' dtype.
        testbed: whose prompts, evaluator and default size to use (`rasfw.embedded.testbeds`): `shapes`
            (32x32, the default model) or `patterns` (64x64).
        """
        from rasfw.embedded.models import load_pipeline
        from rasfw.embedded.testbeds import get_testbed

        device = check_device("model.device", device)
        self.testbed = get_testbed(testbed, "model.testbed")
        if weights is None and self.testbed.name != "shapes":
            weights = str(self.testbed.weights)
        self.pipe = load_pipeline(weights, device=device, dtype=dtype)
        self.weights = self.pipe.weights_source
        self.default_size = (self.pipe.default_size, self.pipe.default_size)

    def evaluate(self, prompts, images, dense_images, ras_update_counts):
        """Alignment (all four attributes, and each), FD and spatial FD against real procedural images, for
        the images and the dense baseline (`dense_*`); SSIM against the dense images; and where the RAS
        updates fell. Beside them, what a bootstrap over prompts needs (`rasfw.app.stats`): `per_prompt` (each
        image's alignment, 0 or 1, and SSIM against dense) and `features` (the evaluator's features of the
        images, the dense images and the real images, one row per evaluated prompt).

        Only prompts in the testbed's grammar ("a small red circle at the top left") are scored, at the
        testbed's image size. Object pixels are those of the prompt's object as the data generator draws it
        (seeded), so the focus figures compare the updates with where the prompt asks the object to be.
        """
        from rasfw.embedded.eval import (
            attribute_hits,
            frechet_distance,
            load_evaluator,
            object_update_share,
            ssim_per_image,
        )

        data = self.testbed.module()
        parse_prompt, attributes = data.parse_prompt, data.ATTRIBUTES
        keep = [i for i, prompt in enumerate(prompts) if parse_prompt(prompt) is not None]
        side = data.IMAGE_SIZE
        if images.shape[-2:] != (side, side):  # the evaluator scores the testbed's size only
            h, w = images.shape[-2:]
            return {"evaluated_images": 0, "eval_note": f"the {self.testbed.name} evaluator scores {side}x{side} "
                    f"images; these are {h}x{w} (height, width), so no quality metric is computed"}  # fmt: skip
        if not keep:
            return {"evaluated_images": 0}
        labels = {k: torch.tensor([parse_prompt(prompts[i])[k] for i in keep]) for k in attributes}
        evaluator = load_evaluator(self.testbed.evaluator_weights)
        real, masks = data.render(labels, torch.Generator().manual_seed(0))
        real = (real + 1) / 2
        reference = _features(evaluator, real)
        several = len(keep) > 1  # a Frechet distance needs two images

        def scores(batch: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor, dict[str, torch.Tensor]]:
            hits = attribute_hits(batch, labels, evaluator)  # each (N,)
            feats = _features(evaluator, batch)
            distances = {k: frechet_distance(feats[k], reference[k]) if several else None for k in feats}
            accuracy = {f"{k}_accuracy": float(hits[k].float().mean()) for k in attributes}
            return {"alignment_accuracy": float(hits["all"].float().mean()), **distances, **accuracy}, hits["all"], feats

        result, hits, feats = scores(images[keep])
        result = {"evaluated_images": len(keep), **result}
        per_prompt = {"alignment_accuracy": hits.int().tolist()}
        features = {**feats, **{f"{k}_reference": v for k, v in reference.items()}}
        if dense_images is not None:
            dense, dense_hits, dense_feats = scores(dense_images[keep])
            similarity = ssim_per_image(images[keep], dense_images[keep])  # (N,)
            per_prompt["dense_alignment_accuracy"] = dense_hits.int().tolist()
            per_prompt["ssim_vs_dense"] = similarity.tolist()
            features.update({f"dense_{k}": v for k, v in dense_feats.items()})
        else:
            dense, similarity = dict.fromkeys(result), None
        result.update({f"dense_{k}": v for k, v in dense.items() if k != "evaluated_images"})
        result["ssim_vs_dense"] = None if similarity is None else float(similarity.mean())
        if ras_update_counts.sum() > 0:
            result.update(object_update_share(ras_update_counts[keep], masks, self.patch_size))
        return {**result, "per_prompt": per_prompt, "features": features}

    def generate(self, prompts, *, steps, guidance, height, width, seed, progress=True):
        return self.pipe(
            list(prompts),
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
            progress=progress,
        ).images


def _features(evaluator: Any, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The embedded evaluator's features of `images` `(N, 3, side, side)`: `fd` `(N, 128)` and `sfd` `(N, 256)`."""
    return {"fd": evaluator.features(images), "sfd": evaluator.spatial_features(images)}
