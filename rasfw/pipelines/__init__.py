"""Pipelines and the runners that drive them: what a `model=` config builds.

`runners` (the runner interface and the embedded model's), `runners_diffusers` (diffusers' SD3, Lumina-Next,
Flux and Wan pipelines, real or tiny), `tiny` (tiny random transformers, built offline) and `loop` (the
SD3-style denoising loop, written once).
"""
