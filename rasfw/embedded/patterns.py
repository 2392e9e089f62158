"""Procedural 64x64 images of patterned objects on smooth backgrounds: the second embedded testbed.

The first testbed (`rasfw.embedded.data`, 32x32, 256 tokens) draws one flat-coloured object; every region is
about equally easy and dense sampling loses little with fewer steps. Here the image is 64x64 (1024 tokens at
patch 2) and the object carries a fine pattern, so the regions are of unequal difficulty: a smooth gradient
background that a few steps get right, beside an object whose 2-pixel stripes or 4-pixel checks need many.

A prompt names five attributes, the first testbed's four and the pattern:
``"a small red striped circle at the top left"``. Generation is vectorised over the batch and deterministic
from a seed: all randomness comes from a local ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch

from rasfw.embedded.data import (
    COLOUR_RGB,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Batch,
    _background,
    _signed_distance,
    balanced_labels,
)
from rasfw.embedded.data import sample_attributes as _sample_attributes
from rasfw.embedded.data import vocabulary_words as _vocabulary_words

__all__ = [
    "PATTERNS",
    "ATTRIBUTES",
    "IMAGE_SIZE",
    "make_prompt",
    "parse_prompt",
    "render",
    "sample_batch",
    "prompt_set",
    "vocabulary_words",
]

IMAGE_SIZE = 64
PATTERNS = ("plain", "striped", "checked")
ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS, "pattern": PATTERNS}

# Object geometry in pixels at 64x64: cell centres and object radii (twice the first testbed's).
_CELL_CENTRES = (11.0, 32.0, 53.0)
_RADIUS = {"small": (6.5, 8.0), "large": (12.0, 14.0)}
_JITTER = 3.0
_STRIPE_PERIOD = 4.0  # pixels: 2 light, 2 dark
_CHECK_CELL = 4.0  # pixels per check


def _phrase(shape: int, colour: int, size: int, position: int, pattern: int) -> str:
    return f"a {SIZES[size]} {COLOURS[colour]} {PATTERNS[pattern]} {SHAPES[shape]} at the {POSITIONS[position]}"


def make_prompt(labels: dict[str, int]) -> str:
    """``{"shape": 0, "colour": 0, "size": 0, "position": 0, "pattern": 1}`` ->
    ``"a small red striped circle at the top left"``."""
    return _phrase(labels["shape"], labels["colour"], labels["size"], labels["position"], labels["pattern"])


def parse_prompt(prompt: str) -> dict[str, int] | None:
    """The attribute labels of a prompt in this testbed's grammar, or None if it is not one."""
    words = " ".join(prompt.lower().split())
    if not words.startswith("a ") or " at the " not in words:
        return None
    head, position = words[2:].split(" at the ", 1)
    parts = head.split(" ")
    if len(parts) != 4 or position not in POSITIONS:
        return None
    size, colour, pattern, shape = parts
    try:
        labels = {
            "shape": SHAPES.index(shape),
            "colour": COLOURS.index(colour),
            "size": SIZES.index(size),
            "position": POSITIONS.index(position),
            "pattern": PATTERNS.index(pattern),
        }
    except ValueError:
        return None
    return labels


def vocabulary_words() -> list[str]:
    """Every word a prompt can contain, in a fixed order (the first testbed's words first)."""
    return _vocabulary_words(ATTRIBUTES)


def _pattern(pattern: torch.Tensor, n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Per-pixel brightness factors (n, size, size): 1 for plain, 2-pixel stripes at one of four angles, or
    4-pixel checks, each with a random phase."""
    ys = torch.arange(size, dtype=torch.float32).view(1, size, 1) + 0.5
    xs = torch.arange(size, dtype=torch.float32).view(1, 1, size) + 0.5
    angle = (math.pi / 4) * torch.randint(4, (n, 1, 1), generator=g).float()
    phase = torch.rand(n, 2, 1, 1, generator=g)
    u = (torch.cos(angle) * xs + torch.sin(angle) * ys) / _STRIPE_PERIOD + phase[:, 0]
    stripes = torch.sin(2 * math.pi * u).clamp(-0.5, 0.5) + 0.5  # (n, s, s) in [0, 1], sharp but anti-aliased
    cx = torch.floor(xs / _CHECK_CELL + 2 * phase[:, 0])
    cy = torch.floor(ys / _CHECK_CELL + 2 * phase[:, 1])
    checks = ((cx + cy) % 2).float()  # (n, s, s) in {0, 1}
    p = pattern.view(-1, 1, 1)
    dark = 0.45
    return torch.where(p == 1, 1 - dark * stripes, torch.where(p == 2, 1 - dark * checks, torch.ones_like(stripes)))


def render(
    labels: dict[str, torch.Tensor], generator: torch.Generator, size: int = IMAGE_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the object described by ``labels``; images (n, 3, size, size) in [-1, 1], bool masks (n, size, size)."""
    n = labels["shape"].shape[0]
    img = _background(n, size, size, generator)
    scale = size / IMAGE_SIZE
    palette = torch.tensor([COLOUR_RGB[c] for c in COLOURS])
    centres = torch.tensor(_CELL_CENTRES) * scale
    big = labels["size"]
    lo = torch.where(big == 1, _RADIUS["large"][0], _RADIUS["small"][0])
    hi = torch.where(big == 1, _RADIUS["large"][1], _RADIUS["small"][1])
    radius = (lo + (hi - lo) * torch.rand(n, generator=generator)) * scale
    jitter = _JITTER * scale * (2 * torch.rand(n, 2, generator=generator) - 1)
    cx = centres[labels["position"] % 3] + jitter[:, 0]
    cy = centres[labels["position"] // 3] + jitter[:, 1]
    sd = _signed_distance(labels["shape"], cx, cy, radius, size, size)
    alpha = (0.5 - sd).clamp(0, 1)  # one-pixel anti-aliased edge
    shade = 0.88 + 0.12 * torch.rand(n, 1, 1, generator=generator)
    colour = palette[labels["colour"]] * shade.view(-1, 1)  # (n, 3)
    texture = _pattern(labels["pattern"], n, size, generator)  # (n, s, s)
    fill = (colour[:, :, None, None] * texture[:, None]).clamp(0, 1)
    img = img * (1 - alpha[:, None]) + fill * alpha[:, None]
    return img * 2 - 1, sd < 0


def sample_attributes(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Uniform random attribute indices, each a long (n,) tensor."""
    return _sample_attributes(n, generator, ATTRIBUTES)


def sample_batch(n: int, seed: int | None = None, *, generator: torch.Generator | None = None, **_: object) -> Batch:
    """``n`` random samples; the same seed (or generator state) gives the same batch.

    Keywords of the first testbed's ``sample_batch`` (``two_object_prob``) are accepted and ignored: every
    sample here has one object.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    labels = sample_attributes(n, generator)
    images, masks = render(labels, generator)
    prompts = [make_prompt({k: int(v[i]) for k, v in labels.items()}) for i in range(n)]
    none = {k: torch.full_like(v, -1) for k, v in labels.items()}
    return Batch(images=images, prompts=prompts, masks=masks, labels=labels, labels2=none)


def prompt_set(n: int = 200, seed: int = 1234) -> tuple[list[str], dict[str, torch.Tensor]]:
    """A fixed evaluation set of prompts and their labels; the attributes cycle through every combination in
    a seeded order, so small sets are balanced."""
    labels = balanced_labels(n, seed, ATTRIBUTES)
    prompts = [make_prompt({k: int(v[i]) for k, v in labels.items()}) for i in range(n)]
    return prompts, labels
