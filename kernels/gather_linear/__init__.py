"""`gather_linear`: `Y[b, j] = x[b, index[b, j]] @ weight.T + bias`, the gather fused into the prologue."""

from rasfw.kernels.gather_linear.reference import gather_linear as gather_linear_reference
from rasfw.kernels.gather_linear.triton import gather_linear

__all__ = ["gather_linear", "gather_linear_reference"]
