"""The embedded default model: a tiny pixel-space text-to-image DiT that rasfw ships, runs on any CPU, and
evaluates exactly.

- `rasfw.embedded.data`: the procedural shapes world (prompts, renderer, vocabulary);
- `rasfw.embedded.models`: the text encoder and the SD3-style pipeline (`MiniPipeline`, `load_pipeline`);
- `rasfw.embedded.train`: training (`python -m rasfw.embedded.train`);
- `rasfw.embedded.eval`: the evaluator (attribute classifier, FD, PSNR, SSIM, alignment).

The library's core (`rasfw.sampler`, `rasfw.attach`, `rasfw.adapters`, ...) does not import this package.
"""
