"""The old path of `rasfw.pipelines.runners` (the runner interface and the embedded model's runner); it re-exports that module.

Imports and `_target_`s that name `rasfw.runners` keep working; new code names `rasfw.pipelines.runners`.
"""

from rasfw.pipelines.runners import *  # noqa: F403 - the old import path
