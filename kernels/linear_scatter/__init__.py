"""`linear_scatter`: `dst[b, index[b, j]] = x[b, j] @ weight.T + bias`, the scatter fused into the epilogue."""

from rasfw.kernels.linear_scatter.reference import linear_scatter as linear_scatter_reference
from rasfw.kernels.linear_scatter.triton import linear_scatter

__all__ = ["linear_scatter", "linear_scatter_reference"]
