"""Image-quality and prompt-alignment metrics on the procedural domain.

``fd`` / ``sfd`` are the FID / sFID analogues computed on the embedded attribute classifier's features;
``psnr`` / ``ssim`` compare images pairwise (all images float in [0, 1], shape (B, 3, H, W)).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from rasfw.compare import psnr  # noqa: F401 - one PSNR for the CLI and the evaluator

if TYPE_CHECKING:
    from rasfw.embedded.eval.classifier import AttributeClassifier

__all__ = [
    "alignment_accuracy",
    "attribute_accuracy",
    "attribute_hits",
    "frechet_distance",
    "fd",
    "sfd",
    "psnr",
    "ssim",
    "ssim_per_image",
    "object_update_share",
]


def _evaluator(evaluator: AttributeClassifier | None) -> AttributeClassifier:
    """The given evaluator, or the shipped one (a small CNN: loading it takes milliseconds)."""
    if evaluator is not None:
        return evaluator
    from rasfw.embedded.eval.classifier import load_evaluator

    return load_evaluator()


def alignment_accuracy(
    images: torch.Tensor, attributes: dict[str, torch.Tensor], evaluator: AttributeClassifier | None = None
) -> float:
    """Share of images whose predicted shape, colour, size and position all match the prompt's."""
    return attribute_accuracy(images, attributes, evaluator)["all"]


def attribute_accuracy(
    images: torch.Tensor, attributes: dict[str, torch.Tensor], evaluator: AttributeClassifier | None = None
) -> dict[str, float]:
    """Per attribute, the share of images whose prediction matches the prompt; "all" for all four at once."""
    return {k: float(v.float().mean()) for k, v in attribute_hits(images, attributes, evaluator).items()}


def attribute_hits(
    images: torch.Tensor, attributes: dict[str, torch.Tensor], evaluator: AttributeClassifier | None = None
) -> dict[str, torch.Tensor]:
    """Per image, whether the prediction matches the prompt: bool `(B,)` per attribute, and "all" for all of them.

    Args:
        images: `(B, 3, H, W)` in [0, 1].
        attributes: the prompts' attribute indices, `(B,)` per attribute.
        evaluator: the attribute classifier (None: the shipped one).
    """
    preds = _evaluator(evaluator).predict(images)
    hits = {k: preds[k] == torch.as_tensor(attributes[k]).cpu() for k in attributes}  # each (B,)
    return {**hits, "all": torch.stack(list(hits.values())).all(0)}  # (B,)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two feature sets.

    The trace of the matrix square root is computed as the sum of square roots of the eigenvalues of
    S_a^(1/2) S_b S_a^(1/2), which is symmetric, so only symmetric eigendecompositions (float64) are used.
    """
    a = feats_a.detach().double().flatten(1).cpu()
    b = feats_b.detach().double().flatten(1).cpu()
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("frechet_distance needs at least two samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(cov_a)
    sqrt_a = (vecs * vals.clamp(min=0).sqrt()) @ vecs.T
    middle = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    dist = (mu_a - mu_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * tr_sqrt
    return max(float(dist), 0.0)


def fd(images_a: torch.Tensor, images_b: torch.Tensor, evaluator: AttributeClassifier | None = None) -> float:
    """Frechet distance between the classifier's penultimate features of two image sets (the FID role)."""
    ev = _evaluator(evaluator)
    return frechet_distance(ev.features(images_a), ev.features(images_b))


def sfd(images_a: torch.Tensor, images_b: torch.Tensor, evaluator: AttributeClassifier | None = None) -> float:
    """Frechet distance on spatial feature maps of an intermediate conv stage (the sFID role)."""
    ev = _evaluator(evaluator)
    return frechet_distance(ev.spatial_features(images_a), ev.spatial_features(images_b))


def _batch(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 3 else x


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean structural similarity (Wang et al. 2004; Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03)."""
    return float(_ssim_map(a, b, window, sigma).mean())


def ssim_per_image(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image mean structural similarity, float64 `(B,)` (their mean is `ssim`, the images being one size).

    Args:
        a: `(B, 3, H, W)` or `(3, H, W)` images in [0, 1].
        b: images of the same shape.
        window: side of the Gaussian window (at most the image's side).
        sigma: the window's standard deviation.
    """
    return _ssim_map(a, b, window, sigma).flatten(1).mean(1)  # (B,)


def _ssim_map(a: torch.Tensor, b: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """The SSIM map `(B, C, H - window + 1, W - window + 1)`, float64."""
    a, b = _batch(a).double(), _batch(b).double()
    c = a.shape[1]
    window = min(window, a.shape[-1], a.shape[-2])
    kernel = _gaussian_window(window, sigma).expand(c, 1, window, window)
    c1, c2 = 0.01**2, 0.03**2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def object_update_share(update_counts: torch.Tensor, masks: torch.Tensor, patch: int) -> dict[str, float]:
    """How much of the per-token update budget lands on object pixels, against the object's area.

    ``update_counts`` (B, rows, cols) counts how often each image token was recomputed; ``masks`` (B, H, W)
    with H = rows * patch, W = cols * patch. Each token is weighted by the fraction of its pixels on the object.
    Returns ``object_update_share`` (share of all updates on object pixels), ``object_area_share`` (share
    of pixels on the object) and ``enrichment`` (their ratio; > 1 means updates favour the object).
    """
    counts = torch.as_tensor(update_counts).double()
    masks = torch.as_tensor(masks)
    if counts.dim() == 2:
        counts = counts.unsqueeze(0)
    if masks.dim() == 2:
        masks = masks.unsqueeze(0)
    b, rows, cols = counts.shape
    if masks.shape[-2:] != (rows * patch, cols * patch):
        raise ValueError(f"masks of size {tuple(masks.shape[-2:])} do not match {rows}x{cols} tokens of patch {patch}")
    if masks.shape[0] != b:
        masks = masks.expand(b, *masks.shape[-2:])
    frac = F.avg_pool2d(masks.double().unsqueeze(1), patch).squeeze(1)  # (B, rows, cols)
    total = counts.sum()
    share = float((counts * frac).sum() / total) if total > 0 else 0.0
    area = float(frac.mean())
    return {
        "object_update_share": share,
        "object_area_share": area,
        "enrichment": share / area if area > 0 else None,  # None: no object pixels (JSON has no NaN)
    }
