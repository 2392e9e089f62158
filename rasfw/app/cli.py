"""`python -m rasfw`: the Hydra application. A thin `@hydra.main` around `run(cfg)`.

The command line only: plugins loaded, the config checked before any job (`rasfw.app.precheck`), `--help`,
and the run's outcome as one line (an error) or the summary and the files written. The run itself is
`rasfw.app.run_steps`; the settings and their checks are `rasfw.app.settings`; the pictures `rasfw.app.pictures`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rasfw import _compat
from rasfw.app import job
from rasfw.app.console import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, fail, show
from rasfw.app.files import run_lock
from rasfw.app.pictures import PICTURES
from rasfw.app.precheck import precheck
from rasfw.app.run_steps import run

# Still importable from here, where scripts and plugins import them (they live in rasfw.app.settings, rasfw.app.table_app).
from rasfw.app.settings import (  # noqa: F401, I001
    GROUPS,
    SETTINGS,
    STRATEGY_GROUPS,
    UsageError,
    backend_name,
    build_method,
    build_sampler,
    check_settings,
)
from rasfw.app.table_app import table_app  # noqa: F401
from rasfw.checks import first_line
from rasfw.registry import REGISTRY


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI with `argv` (default: `sys.argv[1:]`); bad settings exit with code 2.

    Args:
        argv: the command line's arguments (overrides and Hydra's flags).

    Example: `main(["ratio.value=0.25", "prompts=[a red circle]"])` writes the run into `outputs/<date>/<time>/`.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.lower() in ("verbose=true", "verbose=1") for a in args):
        _quiet_libraries()
    try:
        search_paths = REGISTRY.load_plugins()
    except Exception as exc:  # a broken plugin must not hide behind a traceback
        fail(UsageError(f"plugin failed to load: {first_line(exc)}"))
    args = _multirun_first(args)
    overrides, help_only = _overrides(args)
    if search_paths:
        _add_search_paths(args, overrides, search_paths)
        overrides, _ = _overrides(args)
    if help_only and any(a in ("-h", "--help") for a in args):
        print(_help(search_paths))
        return
    if not help_only:
        precheck(overrides)
    sys.argv = [sys.argv[0], *args]
    with _terminate_as_interrupt():
        _hydra_entry()


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a scheduler stopping the job) ends the run as Ctrl-C does: caches freed, finished files kept, a
    sweep's results written from the jobs that finished."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _hydra_entry() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base=None, config_path="pkg://rasfw.conf", config_name="config")
    def task(cfg: DictConfig) -> None:
        output_dir = HydraConfig.get().runtime.output_dir
        sweep = _sweep_folder()
        if sweep is not None and job.finished(Path(output_dir), cfg):
            show(f"{output_dir}: finished earlier with the same settings (its summary.json is complete); skipped")
            return  # the sweep's results are rebuilt from every job's summary at its end
        held = run_lock(output_dir) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()  # torchrun: rank 0
        try:
            with held:  # a second run given the same folder at once is refused
                summary = run(cfg, output_dir)
        except (ValueError, TypeError, FileNotFoundError) as exc:
            fail(exc)
        except KeyboardInterrupt:
            print(f"error: interrupted; {_finished(output_dir)}", file=sys.stderr)
            if sweep is not None:  # what the finished jobs measured; rerunning the sweep skips them
                _report_finished(sweep)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - no bare traceback from the CLI, whatever went wrong
            if os.environ.get("RASFW_DEBUG"):
                raise
            print(f"error: {type(exc).__name__}: {first_line(exc)} (RASFW_DEBUG=1 shows the traceback; "
                  f"{_finished(output_dir)})", file=sys.stderr)  # fmt: skip
            sys.exit(EXIT_FAILURE)
        if summary is None:  # a torchrun rank other than 0: rank 0 reports
            return
        _report_outcome(summary, Path(output_dir), HydraConfig.get().job.name)

    task()


def _finished(output_dir: str) -> str:
    """What a run that stopped early left: its files are whole (`rasfw.app.files`), and without `summary.json`
    the job is incomplete."""
    folder = Path(output_dir)
    done = sorted(p.name for p in (folder.iterdir() if folder.is_dir() else ()) if p.is_file() and not p.name.startswith(".")
                  and p.suffix != ".log")  # fmt: skip
    if not done:
        return f"nothing was written to {output_dir}"
    return f"{output_dir} holds {len(done)} finished file(s) ({', '.join(done[:4])}{', ...' if len(done) > 4 else ''}), no summary.json"


def _sweep_folder() -> Path | None:
    """The sweep folder of the multirun in progress, or None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    return Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None


def _report_finished(sweep: Path) -> None:
    from rasfw.app.report import write_report

    try:
        written = write_report(sweep)
    except Exception:  # noqa: BLE001 - an interrupted run still ends in one line
        return
    if written:
        print(f"wrote {sweep / 'results.csv'} and results.md from the finished jobs; rerun the sweep to finish it "
              "(finished jobs are skipped)", file=sys.stderr)  # fmt: skip


def _report_outcome(summary: dict, output_dir: Path, job_name: str) -> None:
    """The summary's headline figures and every file the run wrote, on the console and in the log."""
    keys = ("execution", "graphs", "speedup", "speedup_note", "flops_ratio", "max_abs_diff_vs_dense", "psnr_vs_dense")
    shown = {k: summary[k] for k in keys}
    show(f"summary: {json.dumps(shown)}")
    files = [*summary.get("images", []), *summary.get("videos", []), *(summary[k] for k in PICTURES if k in summary)]
    written = [*files, "summary.json", *([summary["eval_features"]] if summary.get("eval_features") else []),
               f"{job_name}.log"]  # fmt: skip
    written = [name for name in written if (output_dir / name).exists()]
    show(f"wrote {len(written)} files to {output_dir}:\n" + "\n".join(f"  {name}" for name in written))


def _help(search_paths: list[str]) -> str:
    """`--help`: every group's options, plugins' included, and every key explained (rasfw.app.help)."""
    from hydra import compose, initialize_config_module

    from rasfw.app.help import render_help

    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        cfg = compose("config", return_hydra_config=True)
    plain = OmegaConf.to_container(cfg)
    defaults = {**OmegaConf.to_container(cfg.hydra.runtime.choices), **{k: plain.get(k) for k in SETTINGS}}
    return render_help(GROUPS, SETTINGS, defaults, search_paths)


def _quiet_libraries() -> None:
    """Keep diffusers', transformers' and the hub's warnings (missing optional packages, hub retries) off
    the console, so an error is the one line it should be; `verbose=true` lets them through. Set through
    their environment variables, before they are imported, and only where the user has not set them."""
    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    for logger in ("diffusers", "transformers", "huggingface_hub"):  # already imported (in-process callers)
        logging.getLogger(logger).setLevel(logging.ERROR)


def _add_search_paths(args: list[str], overrides: list[str], paths: list[str]) -> None:
    """Add the plugins' config folders to `hydra.searchpath`: into the user's own override if there is one
    (a second one would replace it), else next to the user's overrides (Hydra reads them as one run of
    positional arguments, so an override after a flag would be refused)."""
    for i, arg in enumerate(args):
        if arg.startswith("hydra.searchpath="):
            existing = arg.split("=", 1)[1].strip().strip("[]")
            args[i] = f"hydra.searchpath=[{','.join([p for p in existing.split(',') if p] + paths)}]"
            return
    at = args.index(overrides[0]) if overrides else len(args)
    args.insert(at, f"hydra.searchpath=[{','.join(paths)}]")


def _multirun_first(args: list[str]) -> list[str]:
    """`-m` / `--multirun` written after some overrides (`steps=8 -m ratio.value=0.25,0.5`) moved in front of them,
    where Hydra's parser expects its flags: the command means the same either way."""
    flags = [a for a in args if a in ("-m", "--multirun")]
    if not flags or args.index(flags[0]) == 0:
        return args
    return [flags[0], *(a for a in args if a not in ("-m", "--multirun"))]


def _overrides(args: list[str]) -> tuple[list[str], bool]:
    """The overrides among `args` (Hydra's own argument parser splits them from flags), and whether
    `args` only ask for help (`--help`, `--hydra-help`), which needs no check."""
    try:
        parsed = _compat.hydra_args_parser().parse_args(args)
    except SystemExit:  # argparse printed its own one-line usage error
        sys.exit(EXIT_USAGE)
    return list(parsed.overrides), bool(parsed.help or parsed.hydra_help)
