"""A Hydra app that measures something and reports a table (`python -m rasfw.bench`), with its own config
in `conf/<name>.yaml`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rasfw.console import fail


def table_app(config_name: str, compute: Callable[[DictConfig], dict], render: Callable[[dict, DictConfig], str]) -> None:
    """Run a Hydra app that measures something and reports a table.

    `compute(cfg)` returns a JSON-serialisable dict; it is written with the config as
    `<config_name>.json`, and `render(result, cfg)` as `<config_name>.md`, in Hydra's output folder.
    A `ValueError` from `compute` is a usage error: one line, exit code 2.

    Args:
        config_name: the config file in `rasfw.conf`, and the stem of the files written.
        compute: measures; returns the result.
        render: the result as a table (markdown).
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base=None, config_path="pkg://rasfw.conf", config_name=config_name)
    def task(cfg: DictConfig) -> None:
        try:
            result = compute(cfg)
        except ValueError as exc:
            fail(exc)
        out = Path(HydraConfig.get().runtime.output_dir)
        result = {**result, "config": OmegaConf.to_container(cfg)}
        (out / f"{config_name}.json").write_text(json.dumps(result, indent=2) + "\n")
        table = render(result, cfg)
        (out / f"{config_name}.md").write_text(table)
        print(table)
        print(f"wrote {out / f'{config_name}.json'}")

    task()
