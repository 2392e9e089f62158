"""The old path of `rasfw.pipelines.runners_diffusers` (the runners of diffusers' pipelines); it re-exports that module.

Imports and `_target_`s that name `rasfw.runners_diffusers` keep working; new code names `rasfw.pipelines.runners_diffusers`.
"""

from rasfw.pipelines.runners_diffusers import *  # noqa: F403 - the old import path
