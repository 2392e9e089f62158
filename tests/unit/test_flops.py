"""FLOP counting covers attention on the CPU (torch's counter alone does not)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rasfw.flops import count_flops


def test_cpu_attention_is_counted_as_its_two_matrix_products():
    q, k = torch.randn(2, 4, 100, 32), torch.randn(2, 4, 150, 32)  # (B, H, S, d)
    _, flops = count_flops(lambda: F.scaled_dot_product_attention(q, k, k))
    assert flops == 2 * (2 * 2 * 4 * 100 * 150 * 32)  # Q K^T and P V, two FLOPs per multiply-add


def test_linear_layers_are_still_counted():
    layer = torch.nn.Linear(8, 16, bias=False)
    x = torch.randn(3, 8)
    result, flops = count_flops(lambda: layer(x))
    assert flops == 2 * 3 * 8 * 16 and result.shape == (3, 16)


def test_grouped_query_attention_counts_as_its_broadcast_heads():
    """`enable_gqa=True` (Lumina-Next: 4 key/value heads for 12 query heads) costs what the expanded call costs."""
    q, k, v = torch.randn(2, 12, 16, 8), torch.randn(2, 4, 24, 8), torch.randn(2, 4, 24, 8)
    _, grouped = count_flops(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
    expanded = (k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1))
    _, full = count_flops(lambda: F.scaled_dot_product_attention(q, *expanded))
    assert grouped == full == 4 * 2 * 12 * 16 * 24 * 8
