"""`gather`: `out[b, j] = x[b, index[b, j]]`."""

from rasfw.kernels.gather.reference import gather as gather_reference
from rasfw.kernels.gather.triton import gather

__all__ = ["gather", "gather_reference"]
