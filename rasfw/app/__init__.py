"""The applications built on the core: the command lines and everything only they use.

`cli` (`python -m rasfw`) with its settings, checks, steps, pictures and console; `bench`, `study`, `report`
and `stats` (each also `python -m rasfw.app.<name>` and an installed script, `rasfw-<name>`); `job`
(evaluation jobs), `callbacks` (the Hydra callbacks a config may name), `table_app`, `help` and `viz` (the
pictures). The core (`rasfw.sampler`, `rasfw.attach`, `rasfw.adapters`, ...) imports nothing from here; only
the registry loads `callbacks` when the `callback` kind (Hydra callbacks) is first looked up.
"""
