"""Triton implementation of the token operations, with a fallback to the torch reference.

Each call runs the Triton kernel from `rasfw.kernels` when Triton can run it on the tensors' device and
dtype, and the pure-torch reference otherwise; `last_impl` / `describe()` say which ran and why. Importing
this module imports neither Triton nor the kernels, and compiles nothing.
"""

from __future__ import annotations

import logging
from types import ModuleType

import torch

from rasfw.backends.base import TokenBackend
from rasfw.backends.torch_ref import TorchBackend
from rasfw.registry import register

logger = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INDEX_DTYPES = (torch.int64, torch.int32)


def _load_kernels() -> tuple[ModuleType | None, str]:
    """Import `rasfw.kernels`: `(module, "")`, or `(None, why not)`. Each backend does this once."""
    try:
        import rasfw.kernels as kernels
        import rasfw.kernels.gather
        import rasfw.kernels.linear_scatter
        import rasfw.kernels.scatter  # noqa: F401
    except ImportError as error:
        return None, f"Triton kernels unavailable ({error})"
    return kernels, ""


def _unsupported(kernels: ModuleType | None, why: str, index: torch.Tensor, *data: torch.Tensor | None) -> str:
    """Why the Triton kernels cannot run on these tensors, or "" when they can."""
    tensors = [t for t in data if t is not None]
    if kernels is None:
        return why
    devices = {t.device for t in [index, *tensors]}
    if len(devices) != 1:
        return f"tensors on several devices {sorted(map(str, devices))}"
    device = devices.pop()
    if device.type == "cpu" and not kernels.interpreted():
        return "CPU tensors need Triton's interpreter (TRITON_INTERPRET=1 before the kernels are imported)"
    if device.type not in ("cpu", "cuda"):
        return f"device {device.type} is not supported"
    if index.dtype not in _INDEX_DTYPES:
        return f"index dtype {index.dtype} is not supported"
    bad = sorted({str(t.dtype) for t in tensors if t.dtype not in _DTYPES})
    return f"dtype {', '.join(bad)} is not supported" if bad else ""


@register("backend", "triton")
class TritonBackend(TokenBackend):
    """Token operations as Triton kernels: the projection fuses the scatter into the matmul.

    Falls back per call to `TorchBackend` when Triton cannot run (no Triton, CPU tensors outside the
    interpreter, an unsupported dtype). After each call `last_impl` is `"triton"` or `"torch"` and
    `last_reason` says why the reference ran; each distinct fallback is logged once at INFO level.
    """

    name = "triton"

    def __init__(self) -> None:
        self._reference = TorchBackend()
        self._kernels, self._missing = _load_kernels()
        self._logged: set[tuple[str, str]] = set()
        self.last_impl: str | None = None
        self.last_reason = ""

    def describe(self) -> str:
        """Which implementation ran the last operation, e.g. `"triton"` or `"torch (reason)"`."""
        if self.last_impl is None:
            return "triton backend: no operation run yet"
        return self.last_impl if self.last_impl == "triton" else f"{self.last_impl} ({self.last_reason})"

    def ran(self) -> tuple[str, str]:
        if self.last_impl is None:
            return self.name, ""
        return self.last_impl, (f"triton requested: {self.last_reason}" if self.last_impl != "triton" else "")

    def gather(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self._use_triton("gather", index, x):
            return self._kernels.gather.gather(x, index)
        return self._reference.gather(x, index)

    def scatter(self, dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        if self._use_triton("scatter", index, dst, src):
            return self._kernels.scatter.scatter(dst, index, src)
        return self._reference.scatter(dst, index, src)

    def linear_scatter(self, x, weight, bias, index, dst):
        if self._use_triton("linear_scatter", index, x, weight, bias, dst, same_dtype=(x, weight, bias)):
            return self._kernels.linear_scatter.linear_scatter(x, weight, bias, index, dst)
        return self._reference.linear_scatter(x, weight, bias, index, dst)

    def _use_triton(self, op: str, index: torch.Tensor, *data: torch.Tensor | None, same_dtype=()) -> bool:
        """Decide Triton or reference for one call, and record (and log once) the choice."""
        reason = _unsupported(self._kernels, self._missing, index, *data)
        dtypes = {t.dtype for t in same_dtype if t is not None}
        if not reason and len(dtypes) > 1:
            reason = f"mixed input dtypes {sorted(map(str, dtypes))}"  # the reference raises the usual error
        self.last_impl, self.last_reason = ("torch", reason) if reason else ("triton", "")
        if reason and (op, reason) not in self._logged:
            self._logged.add((op, reason))
            logger.info("triton backend: %s runs on the torch reference: %s", op, reason)
        return not reason
