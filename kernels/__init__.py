"""Triton kernels for the token operations, each beside the plain-torch function it must equal.

Shipped as `rasfw.kernels`. Each operation is a subpackage `rasfw.kernels.<op>` holding `reference.py`
(plain torch, the specification) and `triton.py` (`_<op>_kernel` and its host launcher `<op>`). Importing a
subpackage imports Triton and defines the kernels; nothing is compiled until a launcher is called. Triton
decides at definition time whether a kernel runs compiled or in its interpreter (`TRITON_INTERPRET=1`), so
set that variable before the first import.
"""

from __future__ import annotations

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

