"""A Hydra app that measures something and reports a table (`python -m rasfw.app.bench`): its own config in
`conf/<name>.yaml`, its own `--help`, and a log in its output folder that holds what the console showed."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rasfw.app.console import fail, show


def table_app(config_name: str, compute: Callable[[DictConfig], dict], render: Callable[[dict, DictConfig], str],
              argv: Sequence[str] | None = None, description: str = "") -> None:  # fmt: skip
    """Run a Hydra app that measures something and reports a table.

    `compute(cfg)` returns a JSON-serialisable dict; it is written with the config as
    `<config_name>.json`, and `render(result, cfg)` as `<config_name>.md`, in Hydra's output folder.
    A `ValueError` from `compute` is a usage error: one line, exit code 2. Lines shown with
    `rasfw.app.console.show` also go to the job's log (`<output folder>/<config_name>.log` with
    `hydra/job_logging: rasfw`). `--help` lists the groups and keys of `conf/<config_name>.yaml` only.

    Args:
        config_name: the config file in `rasfw.conf`, and the stem of the files written.
        compute: measures; returns the result.
        render: the result as a table (markdown).
        argv: the command line's arguments (default `sys.argv[1:]`).
        description: one line for `--help`: what the app does.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(app_help(config_name, description))
        return
    from rasfw.app.precheck import check_app_logging

    check_app_logging(config_name, [a for a in args if not a.startswith("-")])  # before Hydra configures logging
    sys.argv = [sys.argv[0], *args]

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
        show(table)
        show(f"wrote {out / f'{config_name}.json'}")

    task()


def app_help(config_name: str, description: str) -> str:
    """The `--help` text of the app of `conf/<config_name>.yaml`: the groups its defaults list picks from,
    with their options, and its keys, each with the comment beside it in the file.

    Args:
        config_name: the config file in `rasfw.conf`.
        description: one line: what the app does.
    """
    from hydra import compose, initialize_config_module

    from rasfw.app.help import key_comments, render_app_help

    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        cfg = compose(config_name, return_hydra_config=True)
    choices: dict[str, Any] = OmegaConf.to_container(cfg.hydra.runtime.choices)
    groups = [group for group in choices if not group.startswith("hydra/")]
    values = {key: value for key, value in OmegaConf.to_container(cfg).items() if key != "hydra" and key not in groups}
    comments = key_comments(resources.files("rasfw.conf").joinpath(f"{config_name}.yaml").read_text())
    settings = {key: comments.get(key, "") for key in values}
    command = f"python -m rasfw.app.{config_name}"
    return render_app_help(command, description, groups, settings, {**choices, **values})
