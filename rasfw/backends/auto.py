"""`backend=auto`: Triton on a CUDA device when Triton imports, the torch reference otherwise."""

from __future__ import annotations

import torch

from rasfw.backends.base import TokenBackend, resolve_backend
from rasfw.registry import register


@register("backend", "auto")
class AutoBackend(TokenBackend):
    """Chooses per device, at its first operation: Triton on CUDA when Triton imports, else the torch reference.

    `apply_ras` makes the same choice up front (`resolve_backend("auto", device)`), so the run's summary
    names the backend that ran; this class serves direct use and the config gate (`conf/backend/auto.yaml`).
    """

    name = "auto"

    def __init__(self) -> None:
        self._chosen: TokenBackend | None = None

    def chosen(self, device: torch.device) -> TokenBackend:
        """The backend for tensors on `device`, chosen once."""
        if self._chosen is None:
            self._chosen = resolve_backend(self.name, device)
        return self._chosen

    def ran(self) -> tuple[str, str]:
        return self._chosen.ran() if self._chosen is not None else (self.name, "")

    def gather(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.chosen(x.device).gather(x, index)

    def scatter(self, dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return self.chosen(dst.device).scatter(dst, index, src)

    def linear_scatter(self, x, weight, bias, index, dst):
        return self.chosen(x.device).linear_scatter(x, weight, bias, index, dst)
