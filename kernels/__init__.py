"""Triton kernels for the token operations, each beside the plain-torch function it must equal.

Shipped as `rasfw.kernels`. Each operation is a subpackage `rasfw.kernels.<op>` holding `reference.py`
(plain torch, the specification) and `triton.py` (`_<op>_kernel` and its host launcher `<op>`). Importing a
subpackage imports Triton and defines the kernels; nothing is compiled until a launcher is called. Triton
decides at definition time whether a kernel runs compiled or in its interpreter (`TRITON_INTERPRET=1`), so
set that variable before the first import.
"""

from __future__ import annotations

if __name__ == "kernels":  # pragma: no cover - exercised by tests/kernels/test_shadowing.py in a subprocess
    # Imported under the folder's own name: the repository's root is on sys.path (`python -m rasfw` run
    # there), and this folder hides the `kernels` distribution (transformers requires it, diffusers imports
    # it). Hand the import on to that distribution; rasfw itself always imports this folder as rasfw.kernels.
    import importlib as _importlib
    import os as _os
    import sys as _sys

    _root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _saved = list(_sys.path)
    _sys.path[:] = [p for p in _saved if _os.path.abspath(p or _os.getcwd()) != _root]
    del _sys.modules["kernels"]
    try:
        _importlib.import_module("kernels")  # the distribution, now in sys.modules in this module's place
    finally:
        _sys.path[:] = _saved

TOLERANCES = {
    "float32": (1e-5, 1e-5),
    "float16": (2e-3, 2e-3),
    "bfloat16": (1.6e-2, 1.6e-2),
}
"""`(rtol, atol)` per dtype within which each projection kernel equals its reference.

Use the looser of the input's and the destination's dtype. Both accumulate in fp32 but in a different
order, and the reference may round its product to the input dtype before casting to the destination's; the
bounds are about two units in the last place of each dtype for outputs of order one (fp32 assumes TF32 off,
torch's default). The row gather/scatter kernels copy values and equal their references exactly (under
Triton's interpreter a cast to bf16 truncates, so there a bf16 destination written from wider data may be
one unit in the last place off).
"""


def interpreted() -> bool:
    """Whether the kernels were defined for Triton's interpreter (and so run on CPU tensors)."""
    from rasfw.kernels.linear_scatter.triton import _INTERPRETED

    return _INTERPRETED

