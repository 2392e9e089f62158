"""The main command's config checks before Hydra runs any job: compose once, so a composition error, an
unknown key or option, a Hydra callback or launcher setting that would run arbitrary code, an unwritable
output folder or a bad sweep job is one line and exit code 2 before anything starts."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from rasfw import _compat
from rasfw.app.console import fail
from rasfw.app.files import refuse_if_held
from rasfw.app.settings import UsageError, build_method, check_settings
from rasfw.checks import first_line, nearest_first
from rasfw.registry import REGISTRY

MAX_CHECKED_JOBS = 512  # sweeps larger than this are checked on their first jobs, the rest job by job

_CHECKED_HYDRA = (
    "hydra.callbacks", "hydra.launcher", "hydra/launcher", "hydra.sweeper", "hydra/sweeper",
    "hydra.job_logging", "hydra/job_logging", "hydra.hydra_logging", "hydra/hydra_logging",
)  # fmt: skip
"""Hydra settings composed by the precheck: they name classes Hydra instantiates (the logging configs go to
`logging.config.dictConfig`, which builds any class or factory they name and opens any file)."""

_LOG_HANDLERS = MappingProxyType({
    "logging.StreamHandler": frozenset({"class", "formatter", "level", "filters", "stream"}),
    "logging.FileHandler": frozenset({"class", "formatter", "level", "filters", "filename", "mode", "encoding", "delay", "errors"}),
    "logging.NullHandler": frozenset({"class", "level", "filters"}),
})  # fmt: skip
_LOG_SECTIONS = frozenset({"version", "formatters", "filters", "handlers", "loggers", "root", "disable_existing_loggers", "incremental"})
_LOG_FORMATTER_KEYS = frozenset({"format", "datefmt", "style", "validate", "class"})
_LOG_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
_RUN_FOLDERS = ("${hydra.runtime.output_dir}/", "${hydra:runtime.output_dir}/", "${hydra.run.dir}/", "${hydra.sweep.dir}/")


def precheck(overrides: list[str]) -> None:
    """Compose once before Hydra runs, so composition errors become one line and exit code 2.

    Sweep overrides (`-m ratio.value=0.25,0.5`) are left out of this composition (each job checks its own
    values); everything else, the experiment and plugin files they select included, is composed and
    passes the same gates as a run: unknown keys and options, and Hydra callbacks only of registered
    classes (Hydra would run whatever their `_target_` names).

    Args:
        overrides: the command line's overrides (flags left out).
    """
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and value:
            _check_writable(key.lstrip("+"), value)
    parsed = _parse(overrides)
    kept = [
        o.input_line for o in parsed
        if not o.is_sweep_override() and (not o.key_or_group.startswith(("hydra.", "hydra/"))
                                          or o.key_or_group == "hydra.searchpath"
                                          or o.key_or_group.startswith(_CHECKED_HYDRA))
    ]  # fmt: skip
    cfg = _compose(kept)
    _check_callbacks(cfg.hydra.get("callbacks") or {})
    try:
        check_logging(cfg.hydra)
    except ValueError as exc:
        fail(UsageError(str(exc)))
    _check_plugins(cfg)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    sweeps += _config_sweeps(cfg, {o.get_key_element() for o in sweeps})
    if sweeps:
        _check_sweep(kept, sweeps)


def _parse(overrides: list[str]) -> list:
    """Hydra's parsed overrides; a malformed one is one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return _parser().parse_overrides(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        _composition_failed(exc)


def _compose(kept: list[str]) -> DictConfig:
    """The main config with the `kept` overrides and Hydra's own settings."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module="rasfw.conf", version_base=None):
            return compose("config", overrides=kept, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        _composition_failed(exc)


def _composition_failed(exc: Exception) -> NoReturn:
    """One line for a failed composition: the unknown option with the available ones, or the unknown key."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException):
        group, _, option = (exc.missing_cfg_file or "").rpartition("/")
        hint = "; Hydra plugins come with pip install \"rasfw[launchers]\"" if group.startswith("hydra/") else ""
        if exc.options is not None and group:
            fail(UsageError(f"{group}: unknown option '{option}'; available: {', '.join(exc.options)}{hint}"))
        fail(UsageError(first_line(exc) + hint))
    cause = exc.__cause__ or exc
    key = getattr(cause, "full_key", None)
    if key:
        fail(UsageError(_unknown_setting(str(key), getattr(cause, "parent_node", None))))
    fail(UsageError(first_line(exc)))


def _unknown_setting(key: str, parent: Any) -> str:
    """One line for a key the config does not have: the keys its node has, nearest spelling first, and the
    options of its group that have it (`fill.order` is a setting of `fill=taylor`, not of `fill=reuse`)."""
    where, _, leaf = key.rpartition(".")
    keys = [str(k) for k in parent.keys() if str(k) not in ("_target_", "hydra")] if isinstance(parent, DictConfig) else []
    others = _options_with(where, leaf) if where else []
    elsewhere = f"{where}=" + "|".join(others) if others else ""
    nested = [f"{k}.{leaf}" for k in keys if leaf in _child_keys(parent, k)]
    if nested:
        return f"{key}: unknown setting; did you mean {' or '.join(nested)}?"
    if keys:
        also = f"; {elsewhere} takes it (choose it first)" if others else ""
        return f"{key}: unknown setting; {where or 'the config'} has: {', '.join(nearest_first(leaf, keys))}{also}"
    if others:
        return f"{key}: not a setting of the chosen {where}, which takes none; {elsewhere} takes it (choose it first)"
    return f"{key}: unknown setting; {where} takes no settings" if where else f"{key}: unknown setting"


def _child_keys(node: DictConfig, key: str) -> list[str]:
    """The keys of `node[key]` when it is a mapping (a value that does not resolve has none)."""
    try:
        child = node[key]
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve yet
        return []
    return [str(k) for k in child.keys()] if isinstance(child, DictConfig) else []


def _options_with(group: str, key: str) -> list[str]:
    """The options of config group `group` (its files in `rasfw.conf`) that set `key`."""
    from importlib import resources

    try:
        folder = resources.files("rasfw.conf").joinpath(*group.split("."))
        files = sorted(f for f in folder.iterdir() if f.name.endswith(".yaml"))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, OSError):
        return []
    found = []
    for f in files:
        try:
            data = OmegaConf.create(f.read_text())
        except Exception:  # noqa: BLE001 - a file that is not a plain mapping has nothing to offer here
            continue
        if isinstance(data, DictConfig) and key in data:
            found.append(f.name.removesuffix(".yaml"))
    return found


def _check_callbacks(callbacks: DictConfig) -> None:
    """Hydra instantiates every `hydra.callbacks` entry; allow only classes registered as callbacks."""
    from rasfw.build import plain, reject_nested_targets

    for name, node in callbacks.items():
        setting = f"hydra.callbacks.{name}"
        try:
            data = plain(node, setting)
            reject_nested_targets({k: v for k, v in data.items() if k != "_target_"}, setting)
            REGISTRY.by_target("callback", data.get("_target_"), f"{setting}._target_")
        except ValueError as exc:
            fail(UsageError(f"{first_line(exc)} (Hydra callbacks run code: only registered callback classes are allowed)"))


def check_logging(hydra: DictConfig) -> None:
    """Refuse a logging config (`hydra.job_logging`, `hydra.hydra_logging`) that could do more than log: only
    the handler classes of `_LOG_HANDLERS` with their own settings, `logging.Formatter`, filters by logger name,
    streams to stdout or stderr, and log files inside the run folder. `logging.config.dictConfig` would otherwise
    build any class or `()` factory a shared YAML names, and open (or truncate) any file.

    Raises:
        ValueError: one line naming the setting and what is allowed.
    """
    for section in ("job_logging", "hydra_logging"):
        node = hydra.get(section)
        if node:
            _check_log_config(OmegaConf.to_container(node, resolve=False), f"hydra.{section}")


def _check_log_config(data: Any, setting: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{setting} must be a logging config (a mapping); got {type(data).__name__}")
    _refuse_factories_and_references(data, setting)
    for key in data:
        if key not in _LOG_SECTIONS:
            raise ValueError(f"{setting}.{key}: unknown logging setting; allowed: {', '.join(sorted(_LOG_SECTIONS))}")
    for name, handler in (data.get("handlers") or {}).items():
        where = f"{setting}.handlers.{name}"
        cls = handler.get("class") if isinstance(handler, dict) else None
        if cls not in _LOG_HANDLERS:
            raise ValueError(f"{where}.class: {cls!r} is not allowed; log handlers may be {', '.join(_LOG_HANDLERS)}")
        unknown = sorted(set(handler) - _LOG_HANDLERS[cls])
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: not a setting of {cls}; allowed: {', '.join(sorted(_LOG_HANDLERS[cls]))}")
        if cls == "logging.FileHandler":
            _check_log_file(str(handler.get("filename", "")), f"{where}.filename")
    for name, formatter in (data.get("formatters") or {}).items():
        where = f"{setting}.formatters.{name}"
        if not isinstance(formatter, dict) or formatter.get("class", "logging.Formatter") != "logging.Formatter":
            raise ValueError(f"{where}: only logging.Formatter formatters are allowed")
        unknown = sorted(set(formatter) - _LOG_FORMATTER_KEYS)
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: not a formatter setting; allowed: {', '.join(sorted(_LOG_FORMATTER_KEYS))}")
    for name, flt in (data.get("filters") or {}).items():
        if not isinstance(flt, dict) or set(flt) - {"name"}:
            raise ValueError(f"{setting}.filters.{name}: a log filter may only name a logger ('name: ...')")


def _refuse_factories_and_references(data: Any, setting: str) -> None:
    """No `()` factory anywhere, and no `ext://` reference but the standard streams."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "()":
                raise ValueError(f"{setting}.(): logging factories run code; name an allowed class ({', '.join(_LOG_HANDLERS)})")
            _refuse_factories_and_references(value, f"{setting}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _refuse_factories_and_references(value, f"{setting}[{i}]")
    elif isinstance(data, str) and data.startswith("ext://") and data not in _LOG_STREAMS:
        raise ValueError(f"{setting}: {data!r} is not allowed; a log stream may be {' or '.join(_LOG_STREAMS)}")


def _check_log_file(filename: str, setting: str) -> None:
    """A log file lies inside the run folder: a path under one of `_RUN_FOLDERS`, without `..`."""
    inside = filename.startswith(_RUN_FOLDERS) and ".." not in Path(filename).parts
    if not inside:
        raise ValueError(
            f"{setting}: log files must lie inside the run folder ({_RUN_FOLDERS[0]}<name>.log); got {filename!r}"
        )


def check_app_logging(config_name: str, args: list[str]) -> None:
    """`check_logging` for a table app (`python -m rasfw.app.bench`): its config composed with the command line's
    overrides, sweeps left out; a composition error is left to Hydra, which reports it as before."""
    from hydra import compose, initialize_config_module

    try:
        overrides = [o.input_line for o in _parser().parse_overrides(args) if not o.is_sweep_override()]
        with initialize_config_module(config_module="rasfw.conf", version_base=None):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    except Exception:  # noqa: BLE001 - Hydra's own run reports it
        return
    try:
        check_logging(cfg.hydra)
    except ValueError as exc:
        fail(UsageError(str(exc)))


def _check_plugins(cfg: DictConfig) -> None:
    """Hydra builds the launcher and the sweeper only from installed Hydra plugins, but builds any `_target_`
    nested in their settings: refuse those."""
    from rasfw.build import reject_nested_targets

    for name in ("launcher", "sweeper"):
        node = cfg.hydra.get(name)
        if node is not None:
            data = OmegaConf.to_container(node, resolve=False)
            try:
                reject_nested_targets({k: v for k, v in data.items() if k != "_target_"}, f"hydra.{name}")
            except ValueError as exc:
                fail(UsageError(str(exc)))


def _config_sweeps(cfg: DictConfig, given: set[str]) -> list:
    """The sweep an experiment file declares (`hydra.sweeper.params`), less the keys the command line sweeps."""
    params = cfg.hydra.get("sweeper", {}).get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items() if key not in given]
    try:
        return [o for o in _parser().parse_overrides(lines) if o.is_sweep_override()] if lines else []
    except Exception as exc:  # noqa: BLE001 - a malformed sweep in a config file: one line
        fail(UsageError(f"hydra.sweeper.params: {first_line(exc)}"))


def _parser() -> Any:
    """Hydra's override parser with a config loader, so sweeps over groups (`glob(*)`) list their options
    as Hydra's sweeper does."""
    return _compat.hydra_overrides_parser("rasfw.conf")


def _check_sweep(kept: list[str], sweeps: list) -> None:
    """Validate every job of a sweep before the first one starts: compose it, check its settings and
    build its sampler (no model is loaded). One line names the bad setting and the job's overrides."""
    from hydra import compose, initialize_config_module

    choices = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] for o in sweeps]
    with initialize_config_module(config_module="rasfw.conf", version_base=None):
        for job in itertools.islice(itertools.product(*choices), MAX_CHECKED_JOBS):
            try:
                cfg = compose("config", overrides=[*kept, *job])
                build_method(cfg, check_settings(cfg))
            except Exception as exc:  # noqa: BLE001 - a bad setting or a composition error: one line either way
                fail(UsageError(f"{first_line(exc)} (in the sweep job {' '.join(job)})"))


def _check_writable(setting: str, folder: str) -> None:
    """Hydra creates the output folder before the job starts; make sure it can, so a bad one is one line."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe = Path(folder) / f".rasfw-write-check-{os.getpid()}"  # per process: torchrun ranks check at once
        probe.touch()
        probe.unlink(missing_ok=True)
    except OSError as exc:
        fail(UsageError(f"{setting}: cannot write to '{folder}': {exc.strerror or type(exc).__name__}"))
    if setting == "hydra.run.dir" and os.environ.get("RANK", "0") == "0":  # before Hydra writes .hydra/ there
        try:
            refuse_if_held(folder, setting)
        except ValueError as exc:
            fail(UsageError(str(exc)))
