"""The applications built on the core: the command lines and everything only they use.

`cli` (`python -m rasfw`) with its settings, checks, steps, pictures and console; `bench`, `study`, `report`
and `stats` (each also `python -m rasfw.<name>`); `job` (evaluation jobs), `synthetic` (the bench's
pipelines), `table_app`, `help` and `viz` (the pictures). The core (`rasfw.sampler`, `rasfw.hooks`,
`rasfw.adapters`, ...) imports nothing from here; only the registry loads `report` when the `callback` kind
(Hydra callbacks) is first looked up.
"""
