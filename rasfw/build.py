"""Objects from configs, through the registry only: a `_target_` names a registered class or nothing runs.

Hydra's `instantiate` calls whatever a `_target_` names, nested ones included, so a config value such as
`ratio.value={_target_: torch.load, ...}` would run code before any check. rasfw never hands a config to
`instantiate`: `build` resolves the node to plain data, refuses any `_target_` (or other instantiation key)
nested inside a value, looks the top-level `_target_` up among the classes registered for the group's kind
(built-in or plugin), and only then calls that class with the remaining keys.
"""

from __future__ import annotations

import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rasfw.checks import first_line, nearest_first
from rasfw.registry import REGISTRY

_INSTANTIATION_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def build(node: DictConfig | dict[str, Any], kind: str, setting: str, **kwargs: Any) -> Any:
    """Build the registered class a config node names.

    Args:
        node: the config node, e.g. `cfg.ratio` (`{_target_: ..., value: 0.5, warmup: 4}`).
        kind: the registry kind its `_target_` must be registered under ("ratio", "runner", ...).
        setting: the node's name in messages ("ratio", "model").
        **kwargs: extra constructor arguments supplied by the caller (already built objects).

    Raises:
        ValueError: a missing or unregistered `_target_`, an instantiation key nested in a value or
            other than `_target_` at the top, or settings the class refuses; one line naming the setting.
    """
    cls, target, data = _registered(node, kind, setting)
    _check_keys(cls, data, setting)
    try:
        return cls(**data, **kwargs)
    except (ValueError, FileNotFoundError):
        raise  # their messages already name the setting
    except TypeError as exc:
        raise ValueError(f"{setting}: {first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - whatever a constructor raises becomes one line naming the setting
        raise ValueError(f"{setting}: cannot build {target}: {type(exc).__name__}: {first_line(exc)}") from exc


def _check_keys(cls: type, data: dict[str, Any], setting: str) -> None:
    """A key the class does not take is one line naming it and the keys it does take, nearest spelling first."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in data:
        if key not in accepted:
            allowed = ", ".join(nearest_first(key, accepted)) or "no settings"
            raise ValueError(f"{setting}.{key}: unknown setting of {cls.__name__}; it takes: {allowed}")


def registered_name(node: DictConfig | dict[str, Any], kind: str, setting: str) -> tuple[str, dict[str, Any]]:
    """The registered name of the class a config node's `_target_` names, and the node's other settings.

    For groups whose class is built later, by name (`execution`: `apply_ras` builds one executor per transformer).
    The settings pass the same checks as `build`'s; the class checks them when it is built.

    Args:
        node: the config node, e.g. `cfg.execution` (`{_target_: ..., compile_backend: inductor}`).
        kind: the registry kind its `_target_` must be registered under.
        setting: the node's name in messages.

    Raises:
        ValueError: a missing or unregistered `_target_`, or an instantiation key anywhere else.
    """
    cls, _, data = _registered(node, kind, setting)
    _check_keys(cls, data, setting)
    return REGISTRY.name_of(kind, cls), data


def _registered(node: DictConfig | dict[str, Any], kind: str, setting: str) -> tuple[type, str, dict[str, Any]]:
    """The registered class a node's `_target_` names, that `_target_`, and the node's other settings,
    checked: no other instantiation key, no `_target_` nested in a value."""
    data = plain(node, setting)
    target = data.pop("_target_", None)
    if target is None:
        raise ValueError(f"{setting}._target_ is missing; it must name a registered {kind} class")
    for key in data:
        if key in _INSTANTIATION_KEYS:
            raise ValueError(f"{setting}.{key}: not supported; configs build only registered classes, by _target_")
    reject_nested_targets(data, setting)
    return REGISTRY.by_target(kind, target, f"{setting}._target_"), target, data


def plain(node: DictConfig | dict[str, Any], setting: str) -> dict[str, Any]:
    """`node` as plain Python data with interpolations resolved (nothing is instantiated)."""
    if isinstance(node, dict):
        return dict(node)
    if not OmegaConf.is_dict(node):
        raise ValueError(f"{setting} must be a config group option (a mapping); got {node!r}")
    return OmegaConf.to_container(node, resolve=True)


def reject_nested_targets(value: Any, path: str) -> None:
    """Raise `ValueError` naming the key if any mapping inside `value` carries an instantiation key."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _INSTANTIATION_KEYS:
                raise ValueError(f"{path}: a nested {key} is not allowed; configs build only registered classes")
            reject_nested_targets(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            reject_nested_targets(item, f"{path}[{i}]")

