"""The embedded default model: a tiny pixel-space SD3 transformer trained on procedural shapes."""

from rasfw.embedded.models.pipeline import MiniPipeline, load_pipeline

__all__ = ["MiniPipeline", "load_pipeline"]
