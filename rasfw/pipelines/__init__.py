"""Pipelines and the runners that drive them: what a `model=` config builds, and every pipeline rasfw ships.

`runners` (the runner interface and the embedded model's), `runners_diffusers` (diffusers' SD3, Lumina-Next,
Flux and Wan pipelines, real or tiny), `tiny` (tiny random diffusers models and pipelines, built offline),
`synthetic` (the bench's pipelines: real architectures with random weights) and `loop` (the denoising loop,
written once). The embedded model's own pipeline is in `rasfw.embedded.models`; the checkers' calling
convention around these pipelines is `rasfw.testing.tiny`.
"""
