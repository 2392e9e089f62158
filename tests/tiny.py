"""Tiny random models and a standard diffusers-style sampling loop, for fast tests (shipped in
`rasfw.testing.tiny`, so plugin authors have them too)."""

from __future__ import annotations

from rasfw.pipelines.tiny import tiny_sd3_transformer
from rasfw.testing.tiny import TinySD3Pipeline

__all__ = ["TinySD3Pipeline", "tiny_sd3_transformer"]
