"""`scatter`: `dst[b, index[b, j]] = src[b, j]`, in place."""

from rasfw.kernels.scatter.reference import scatter as scatter_reference
from rasfw.kernels.scatter.triton import scatter

__all__ = ["scatter", "scatter_reference"]
