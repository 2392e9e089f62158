"""Tiny random models and a standard diffusers-style sampling loop, for fast tests (shipped in
`rasfw.testing.tiny`, so plugin authors have them too)."""

from __future__ import annotations

from rasfw.testing.tiny import TinySD3Pipeline
from rasfw.pipelines.tiny import tiny_sd3_transformer

__all__ = ["TinySD3Pipeline", "tiny_sd3_transformer"]
