"""The Hydra callbacks rasfw registers (the `callback` kind): what `hydra.callbacks` in a config may name.

Kept apart from the modules they call, so that running one of those as a script (`python -m rasfw.app.report`)
does not register a second copy of the callback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rasfw.registry import register


@register("callback", "results")
class ResultsCallback(Callback):
    """Hydra callback: after the last job of a multirun, write the sweep's results (`rasfw.app.report.write_report`)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rasfw.app.report import write_report

        folder = Path(config.hydra.sweep.dir)
        written = write_report(folder)
        if written:
            print(f"wrote {folder / 'results.csv'}, results.md and {len(written) - 2} plot files", flush=True)
