"""Procedural 32x32 images of coloured shapes on soft backgrounds, with prompts, masks and labels.

Every sample is one object (optionally two) described by four attributes: shape, colour, size and one of
nine named positions on a 3x3 grid. Generation is vectorised over the batch and deterministic from a seed:
all randomness comes from a local ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "SHAPES",
    "COLOURS",
    "COLOUR_RGB",
    "SIZES",
    "POSITIONS",
    "ATTRIBUTES",
    "IMAGE_SIZE",
    "Batch",
    "make_prompt",
    "parse_prompt",
    "render",
    "sample_batch",
    "sample_attributes",
    "prompt_set",
    "balanced_labels",
    "vocabulary_words",
]

IMAGE_SIZE = 32
SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
COLOUR_RGB = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.10, 0.78, 0.20),
    "blue": (0.12, 0.25, 0.95),
    "yellow": (0.96, 0.90, 0.10),
    "purple": (0.62, 0.15, 0.82),
    "orange": (1.00, 0.55, 0.05),
}
SIZES = ("small", "large")
# Row-major 3x3 grid: index = 3 * row + col.
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS}

# Object geometry in pixels (for IMAGE_SIZE = 32): cell centres and object radii.
_CELL_CENTRES = (5.5, 16.0, 26.5)
_RADIUS = {"small": (3.0, 4.0), "large": (6.0, 7.0)}
_JITTER = 1.5


@dataclass
class Batch:
    """A batch of procedural samples.

    ``images`` is float (B, 3, H, W) in [-1, 1]; ``masks`` is bool (B, H, W), the union of object pixels;
    ``labels`` maps each attribute name to a long (B,) tensor of indices into ``ATTRIBUTES[name]`` for the
    first object, and ``labels2`` the same for the second object (-1 where a sample has only one).
    """

    images: torch.Tensor
    prompts: list[str]
    masks: torch.Tensor
    labels: dict[str, torch.Tensor]
    labels2: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.prompts)


def _phrase(shape: int, colour: int, size: int, position: int) -> str:
    return f"a {SIZES[size]} {COLOURS[colour]} {SHAPES[shape]} at the {POSITIONS[position]}"


def make_prompt(labels: dict[str, int], labels2: dict[str, int] | None = None) -> str:
    """``{"shape": 0, "colour": 0, "size": 0, "position": 0}`` -> ``"a small red circle at the top left"``."""
    text = _phrase(labels["shape"], labels["colour"], labels["size"], labels["position"])
    if labels2 is not None and labels2["shape"] >= 0:
        text += " and " + _phrase(labels2["shape"], labels2["colour"], labels2["size"], labels2["position"])
    return text


def parse_prompt(prompt: str) -> dict[str, int] | None:
    """The attribute labels of a single-object prompt in the data's grammar, or None if it is not one.

    ``"a small red circle at the top left"`` -> ``{"shape": 0, "colour": 0, "size": 0, "position": 0}``.
    """
    wanted = " ".join(prompt.lower().split())
    for shape in range(len(SHAPES)):
        for colour in range(len(COLOURS)):
            for size in range(len(SIZES)):
                for position in range(len(POSITIONS)):
                    if _phrase(shape, colour, size, position) == wanted:
                        return {"shape": shape, "colour": colour, "size": size, "position": position}
    return None


def vocabulary_words(attributes: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Every word a prompt can contain, in a fixed order (`attributes`: another testbed's; None: these)."""
    words = ["a", "at", "the", "and"]
    for values in (ATTRIBUTES if attributes is None else attributes).values():
        for value in values:
            for w in value.split():
                if w not in words:
                    words.append(w)
    return words


def sample_attributes(
    n: int, generator: torch.Generator, attributes: dict[str, tuple[str, ...]] | None = None
) -> dict[str, torch.Tensor]:
    """Uniform random attribute indices, each a long (n,) tensor (`attributes`: another testbed's; None: these)."""
    attributes = ATTRIBUTES if attributes is None else attributes
    return {name: torch.randint(len(values), (n,), generator=generator) for name, values in attributes.items()}


def _background(n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """Muted two-colour gradients with a faint low-frequency texture, (n, 3, h, w) in [0, 1]."""
    ys = torch.linspace(-1, 1, h).view(1, h, 1)
    xs = torch.linspace(-1, 1, w).view(1, 1, w)
    grey = 0.2 + 0.4 * torch.rand(n, 2, 1, generator=g)
    tint = 0.12 * (2 * torch.rand(n, 2, 3, generator=g) - 1)
    ends = (grey + tint).clamp(0, 1)  # (n, 2, 3): the two gradient end colours
    angle = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    ramp = (torch.cos(angle) * xs + torch.sin(angle) * ys) * 0.5 + 0.5  # (n, h, w) in [0, 1]
    ramp = ramp.clamp(0, 1)
    img = ends[:, 0, :, None, None] * (1 - ramp[:, None]) + ends[:, 1, :, None, None] * ramp[:, None]
    freq = 1.0 + 2.0 * torch.rand(n, 2, 1, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 2, 1, 1, generator=g)
    texture = torch.sin(freq[:, 0] * math.pi * xs + phase[:, 0]) * torch.sin(freq[:, 1] * math.pi * ys + phase[:, 1])
    amp = 0.04 + 0.05 * torch.rand(n, 1, 1, generator=g)
    img = img + (amp * texture)[:, None]
    return img.clamp(0, 1)


def _signed_distance(
    shape: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """Signed distance (negative inside) of each pixel centre to each object, (n, h, w)."""
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
    dx = xs - cx.view(-1, 1, 1)
    dy = ys - cy.view(-1, 1, 1)
    r = r.view(-1, 1, 1)
    circle = torch.sqrt(dx * dx + dy * dy) - r
    half = 0.88 * r  # a square of the same visual weight as the circle
    square = torch.maximum(dx.abs(), dy.abs()) - half
    # Upward equilateral triangle with circumradius R (y grows downwards): three half-planes.
    big = 1.3 * r
    inr = big / 2
    dy = dy - big / 4  # centre the bounding box, not the centroid, on the object position
    tri = torch.maximum(
        dy - inr,
        torch.maximum(0.866 * dx - 0.5 * dy - inr, -0.866 * dx - 0.5 * dy - inr),
    )
    s = shape.view(-1, 1, 1)
    return torch.where(s == 0, circle, torch.where(s == 1, square, tri))


def render(
    labels: dict[str, torch.Tensor],
    generator: torch.Generator,
    labels2: dict[str, torch.Tensor] | None = None,
    size: int = IMAGE_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the objects described by ``labels`` (and ``labels2`` where its shape is >= 0).

    Returns images (n, 3, size, size) in [-1, 1] and bool masks (n, size, size).
    """
    n = labels["shape"].shape[0]
    img = _background(n, size, size, generator)
    mask = torch.zeros(n, size, size, dtype=torch.bool)
    scale = size / IMAGE_SIZE
    palette = torch.tensor([COLOUR_RGB[c] for c in COLOURS])
    centres = torch.tensor(_CELL_CENTRES) * scale
    for lab in (labels, labels2):
        if lab is None:
            continue
        present = lab["shape"] >= 0
        shape = lab["shape"].clamp(min=0)
        pos = lab["position"].clamp(min=0)
        col = lab["colour"].clamp(min=0)
        big = lab["size"].clamp(min=0)
        lo = torch.where(big == 1, _RADIUS["large"][0], _RADIUS["small"][0])
        hi = torch.where(big == 1, _RADIUS["large"][1], _RADIUS["small"][1])
        radius = (lo + (hi - lo) * torch.rand(n, generator=generator)) * scale
        jitter = _JITTER * scale * (2 * torch.rand(n, 2, generator=generator) - 1)
        cx = centres[pos % 3] + jitter[:, 0]
        cy = centres[pos // 3] + jitter[:, 1]
        sd = _signed_distance(shape, cx, cy, radius, size, size)
        alpha = (0.5 - sd).clamp(0, 1) * present.view(-1, 1, 1)  # one-pixel anti-aliased edge
        shade = 0.88 + 0.12 * torch.rand(n, 1, 1, generator=generator)
        colour = palette[col] * shade.view(-1, 1)  # (n, 3)
        # A soft highlight so the object is not perfectly flat.
        light = 1.0 + 0.08 * (-sd / radius.view(-1, 1, 1)).clamp(0, 1)
        fill = (colour[:, :, None, None] * light[:, None]).clamp(0, 1)
        img = img * (1 - alpha[:, None]) + fill * alpha[:, None]
        mask |= (sd < 0) & present.view(-1, 1, 1)
    return img * 2 - 1, mask


def sample_batch(
    n: int,
    seed: int | None = None,
    *,
    generator: torch.Generator | None = None,
    two_object_prob: float = 0.0,
) -> Batch:
    """``n`` random samples; the same seed (or generator state) gives the same batch."""
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    labels = sample_attributes(n, generator)
    labels2 = sample_attributes(n, generator)
    second = torch.rand(n, generator=generator) < two_object_prob
    # Keep the second object in a different cell from the first.
    shift = torch.randint(1, len(POSITIONS), (n,), generator=generator)
    labels2["position"] = (labels["position"] + shift) % len(POSITIONS)
    for k in labels2:
        labels2[k] = torch.where(second, labels2[k], torch.full_like(labels2[k], -1))
    images, masks = render(labels, generator, labels2)
    prompts = [
        make_prompt({k: int(v[i]) for k, v in labels.items()}, {k: int(v[i]) for k, v in labels2.items()})
        for i in range(n)
    ]
    return Batch(images=images, prompts=prompts, masks=masks, labels=labels, labels2=labels2)


def prompt_set(n: int = 200, seed: int = 1234) -> tuple[list[str], dict[str, torch.Tensor]]:
    """A fixed evaluation set of single-object prompts and their attribute labels.

    The attributes cycle through every combination in a seeded order, so small sets are balanced.
    """
    labels = balanced_labels(n, seed, ATTRIBUTES)
    prompts = [make_prompt({k: int(v[i]) for k, v in labels.items()}) for i in range(n)]
    return prompts, labels


def balanced_labels(n: int, seed: int, attributes: dict[str, tuple[str, ...]]) -> dict[str, torch.Tensor]:
    """`n` attribute labels that cycle through every combination of `attributes` in a seeded order."""
    g = torch.Generator().manual_seed(seed)
    counts = [len(v) for v in attributes.values()]
    total = math.prod(counts)
    order = torch.cat([torch.randperm(total, generator=g) for _ in range(n // total + 1)])[:n]
    labels: dict[str, torch.Tensor] = {}
    rest = order.clone()
    for name, k in zip(reversed(list(attributes)), reversed(counts), strict=True):
        labels[name] = rest % k
        rest = rest // k
    return {name: labels[name] for name in attributes}
