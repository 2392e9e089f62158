"""Token operations used by the adapters: gather, scatter and fused projection variants.

`TorchBackend` is the pure-torch reference; `rasfw.kernels` holds the Triton implementation.
`resolve_backend("auto" | "torch" | "triton", device)` picks one.
"""

from rasfw.backends.auto import AutoBackend
from rasfw.backends.base import TokenBackend, resolve_backend
from rasfw.backends.torch_ref import TorchBackend
from rasfw.backends.triton import TritonBackend

__all__ = ["AutoBackend", "TokenBackend", "TorchBackend", "TritonBackend", "resolve_backend"]
