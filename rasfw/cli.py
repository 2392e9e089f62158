"""The old path of `rasfw.app.cli` (the Hydra application of `python -m rasfw`); it re-exports that module.

Scripts, tests and console scripts installed before the move (`rasfw = rasfw.cli:main`) keep working; new code
names `rasfw.app.cli`.
"""

from rasfw.app.cli import *  # noqa: F403 - the old import path
from rasfw.app.cli import main, run  # noqa: F401 - named: the star import leaves out what starts with `_`
