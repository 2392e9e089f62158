"""Named registries of strategies, and discovery of plugins through entry points.

The registry maps names to classes and nothing else: it holds no run state. It is append-only: a
duplicate name raises, so two packages cannot silently replace each other's strategies.

Plugins are distributions that declare an entry point in the group ``rasfw.plugins``. The entry point
names a callable taking no argument; importing its module registers the plugin's strategies (with
``@register``) and calling it returns the plugin's Hydra config search path (for example
``"pkg://my_plugin.conf"``) or ``None``. Plugins are loaded lazily: when an unknown name is looked up,
or when the CLI starts.

A strategy needs no config file to be usable by name: once the plugins are loaded, the process-wide
registry gives every registered strategy that has no `<kind>/<name>.yaml` in rasfw's or a plugin's config
folder a config built from its constructor's defaults (`metric=<name>` builds it as `Class()` would).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any, TypeVar

ENTRY_POINT_GROUP = "rasfw.plugins"
CONFIG_PATH = "pkg://rasfw.conf"
"""rasfw's own config folder, as a Hydra search path."""


@dataclass(frozen=True)
class Kind:
    """One kind of registered class.

    Attributes:
        interface: `"module:Class"` every class of the kind must subclass (checked at registration).
        lazy: module that registers the built-ins, imported when the kind is first looked up (heavy
            imports such as diffusers wait until then); None: registered when `rasfw` is imported.
        strategy: a strategy of the sampler, with a config group of the same name (`metric=<name>`).
    """

    interface: str
    lazy: str | None = None
    strategy: bool = False


KINDS: dict[str, Kind] = {
    "metric": Kind("rasfw.interfaces:RegionMetric", strategy=True),
    "ratio": Kind("rasfw.interfaces:RatioSchedule", strategy=True),
    "starvation": Kind("rasfw.interfaces:StarvationPolicy", strategy=True),
    "reset": Kind("rasfw.interfaces:ResetSchedule", strategy=True),
    "fill": Kind("rasfw.interfaces:InactiveFill", strategy=True),
    "adapter": Kind("rasfw.interfaces:ModelAdapter", lazy="rasfw.adapters"),
    "backend": Kind("rasfw.backends.base:TokenBackend"),
    "execution": Kind("rasfw.execution.base:Executor", lazy="rasfw.execution"),
    "sampler": Kind("rasfw.sampler:RegionAdaptiveSampler", lazy="rasfw.sampler"),
    "runner": Kind("rasfw.pipelines.runners:PipelineRunner", lazy="rasfw.pipelines.runners_diffusers"),
    "cache": Kind("rasfw.step_caches:StepCache", lazy="rasfw.step_caches"),
    "callback": Kind("hydra.experimental.callback:Callback", lazy="rasfw.app.callbacks"),
}
"""Every kind the registry knows: the one list of kinds (the CLI's groups and the checks derive from it)."""

STRATEGY_KINDS: tuple[str, ...] = tuple(name for name, kind in KINDS.items() if kind.strategy)
"""The sampler's strategy kinds, in the order the sampler takes them: metric, ratio, starvation, reset, fill."""

T = TypeVar("T")


class Registry:
    """One name -> class table per strategy kind, with lazy plugin discovery.

    Args:
        kinds: the kinds it files classes under.
        entry_point_group: the entry-point group its plugins are found in.
        default_configs: when the plugins are loaded, file a config in Hydra's `ConfigStore` for every strategy
            registered without a config file (see `default_configs`); only the process-wide `REGISTRY` does,
            as the store is process-wide too.
    """

    def __init__(
        self, kinds: Iterable[str] = tuple(KINDS), entry_point_group: str = ENTRY_POINT_GROUP, default_configs: bool = False
    ) -> None:
        self._tables: dict[str, dict[str, type]] = {kind: {} for kind in kinds}
        self._entry_point_group = entry_point_group
        self._plugins_loaded = False
        self._search_paths: list[str] = []
        self._default_configs = default_configs

    def register(self, kind: str, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator that files the class under `kind`/`name`.

        Args:
            kind: one of the registry's kinds ("metric", "ratio", ...).
            name: the name users select it by, e.g. in ``metric=<name>``.
        """
        table = self._table(kind)

        def decorate(cls: type[T]) -> type[T]:
            if name in table and table[name] is not cls:
                raise ValueError(f"{kind} '{name}' is already registered by {_qualname(table[name])}")
            _check_implements(kind, cls)
            table[name] = cls
            return cls

        return decorate

    def get(self, kind: str, name: str) -> type:
        """Return the class registered as `kind`/`name`; the error lists the known names."""
        table = self._table(kind)
        if name not in table:
            self._load_lazy(kind)
            self.load_plugins()
        if name not in table:
            raise ValueError(f"unknown {kind} '{name}'; available: {', '.join(sorted(table)) or 'none'}")
        return table[name]

    def names(self, kind: str) -> list[str]:
        """Sorted names registered for `kind`, plugins included."""
        self._load_lazy(kind)
        self.load_plugins()
        return sorted(self._table(kind))

    def items(self, kind: str) -> list[tuple[str, type]]:
        """`(name, class)` pairs registered for `kind`, plugins included, sorted by name."""
        self._load_lazy(kind)
        self.load_plugins()
        return sorted(self._table(kind).items())

    def name_of(self, kind: str, cls: type) -> str:
        """The name `cls` is registered under for `kind` (its class name if it is not registered)."""
        return next((name for name, known in self.items(kind) if known is cls), cls.__name__)

    def build(self, kind: str, name: str, **params: Any) -> Any:
        """Instantiate the strategy `kind`/`name` with `params`."""
        return self.get(kind, name)(**params)

    def by_target(self, kind: str, target: Any, setting: str | None = None) -> type:
        """The class registered for `kind` whose import path (`module.QualName`) is `target`.

        This is the gate every config passes: a `_target_` names a registered class or nothing is built.

        Raises:
            ValueError: `target` is not the path of a class registered for `kind` (the message lists them).
        """
        setting = setting or f"{kind}._target_"
        for _, cls in self.items(kind):
            if target == _qualname(cls):
                return cls
        known = ", ".join(sorted(_qualname(cls) for _, cls in self.items(kind))) or "none"
        raise ValueError(f"{setting}: {target!r} is not a registered {kind} class; registered: {known}")

    def load_plugins(self) -> list[str]:
        """Import every ``rasfw.plugins`` entry point once; return their config search paths."""
        if not self._plugins_loaded:
            self._plugins_loaded = True
            for entry_point in metadata.entry_points(group=self._entry_point_group):
                setup = entry_point.load()
                path = setup() if callable(setup) else None
                if path:
                    self._search_paths.append(str(path))
            if self._default_configs:
                _store(self.default_configs())
        return list(self._search_paths)

    def default_configs(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Configs for the registered strategies that ship none: `{(kind, name): {"_target_": ..., **defaults}}`.

        A strategy has a config when `<kind>/<name>.yaml` is in rasfw's config folder or in a loaded plugin's.
        The config holds the constructor's parameters that have plain defaults (numbers, strings, booleans,
        None, lists of those), so `metric=<name> metric.<parameter>=<value>` works as with a YAML file.
        """
        folders = [_folder(path) for path in (CONFIG_PATH, *self.load_plugins())]
        return {
            (kind, name): {"_target_": _qualname(cls), **_plain_defaults(cls)}
            for kind in STRATEGY_KINDS if kind in self._tables
            for name, cls in self.items(kind)
            if not any(folder is not None and (folder / kind / f"{name}.yaml").is_file() for folder in folders)
        }  # fmt: skip

    def _load_lazy(self, kind: str) -> None:
        module = KINDS[kind].lazy if kind in KINDS else None
        if module is not None and self._entry_point_group == ENTRY_POINT_GROUP:
            importlib.import_module(module)

    def _table(self, kind: str) -> dict[str, type]:
        if kind not in self._tables:
            raise ValueError(f"unknown strategy kind '{kind}'; available: {', '.join(self._tables)}")
        return self._tables[kind]


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _folder(search_path: str) -> Any:
    """The folder a Hydra search path (`pkg://package.conf`, `file://folder` or a folder) names; None if none."""
    scheme, _, rest = search_path.rpartition("://")
    if scheme == "pkg":
        try:
            return resources.files(rest)
        except (ModuleNotFoundError, TypeError):
            return None
    return Path(rest)


_PLAIN = (bool, int, float, str, type(None))


def _plain_defaults(cls: type) -> dict[str, Any]:
    """The constructor parameters of `cls` whose defaults a config can hold, with those defaults."""
    defaults = {}
    for name, parameter in inspect.signature(cls).parameters.items():
        value = parameter.default
        if isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value):
            defaults[name] = list(value)
        elif isinstance(value, _PLAIN):  # a parameter without a default holds `Parameter.empty`, a class
            defaults[name] = value
    return defaults


def _store(configs: dict[tuple[str, str], dict[str, Any]]) -> None:
    """File `configs` in Hydra's `ConfigStore` as options of their kinds' groups (`metric=<name>`)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for (kind, name), node in configs.items():
        store.store(group=kind, name=name, node=node, provider="rasfw: a registered strategy without a config file")


def _check_implements(kind: str, cls: type) -> None:
    """Validate at registration that `cls` implements the interface of `kind`."""
    path = KINDS[kind].interface if kind in KINDS else None
    if path is not None:
        module, name = path.split(":")
        expected = cls if cls.__name__ == name and cls.__module__ == module else getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and issubclass(cls, expected)):
            raise TypeError(f"{kind} {cls!r} must subclass {expected.__name__}")
    abstract = getattr(cls, "__abstractmethods__", ())
    if abstract:
        raise TypeError(f"{kind} {_qualname(cls)} leaves abstract methods unimplemented: {', '.join(sorted(abstract))}")


REGISTRY = Registry(default_configs=True)
"""The process-wide name -> class table. Append-only; it holds classes, never run state."""

register = REGISTRY.register
