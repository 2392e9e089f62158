"""The old path of `rasfw.pipelines.loop` (the SD3-style denoising loop); it re-exports that module.

Imports and `_target_`s that name `rasfw.loop` keep working; new code names `rasfw.pipelines.loop`.
"""

from rasfw.pipelines.loop import *  # noqa: F403 - the old import path
