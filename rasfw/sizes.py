"""Image sizes a model can sample: the one check the CLI and the embedded pipeline share, with one wording."""

from __future__ import annotations

from rasfw.checks import integer

__all__ = ["check_image_size"]


def check_image_size(height: object, width: object, multiple: int, largest: int | None = None) -> None:
    """Raise a one-line `ValueError` naming `height` or `width` if the model cannot sample that size.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        multiple: pixels per token side, the patch size times the latent scale (pixels per latent pixel).
        largest: the most pixels per side the model's position embedding covers; None for no limit.

    Raises:
        ValueError: a side is not a positive integer, is above `largest` or is not a multiple of `multiple`.
    """
    for name, value in (("height", height), ("width", width)):
        integer(name, value, "[1, inf)", lambda v: v >= 1)
        if largest is not None and value > largest:
            raise ValueError(f"{name} must be at most {largest} for this model (its position embedding); got {value}")
        if value % multiple:
            raise ValueError(f"{name} must be a multiple of {multiple} (patch size x latent scale); got {value}")
