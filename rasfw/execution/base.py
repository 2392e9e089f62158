"""The executor interface and how one is chosen by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch


class Executor(ABC):
    """Runs a transformer's forward for one call; one instance per `apply_ras`.

    Attributes:
        name: the name it is selected by (`execution=<name>`).
        keeps_buffers: the state's buffers must outlive a generation (captured graphs hold their addresses).
        keys: the distinct call shape keys run so far.
        graphs: graphs built so far (0 for eager).
    """

    name: str = "abstract"
    keeps_buffers: bool = False

    def __init__(self) -> None:
        self.keys: set[tuple] = set()
        self.graphs = 0

    def check(self, device: torch.device) -> None:  # noqa: B027 - optional hook
        """Raise `ValueError` if this executor cannot run a model on `device`."""

    @abstractmethod
    def run(self, forward: Callable[..., Any], key: tuple, args: tuple, kwargs: dict[str, Any]) -> Any:
        """Run `forward(*args, **kwargs)`, a call whose shape key is `key`.

        The key names everything that decides the call's graph: the plan (dense, capture or RAS with its
        active count and cache context) and the shapes, dtypes and non-tensor values of the arguments.
        """

    def release(self) -> None:  # noqa: B027 - optional hook
        """Drop what was built (graphs, static buffers); called by `remove_ras`."""

    def describe(self) -> dict[str, Any]:
        """What the summary and the benchmark report about this executor."""
        return {"execution": self.name, "graphs": self.graphs, "call_shapes": len(self.keys)}


def build_executor(execution: str | Executor | None, **options: Any) -> Executor:
    """An executor from a name ("eager", "compile", "cudagraph", or a plugin's) or an instance.

    Raises:
        ValueError: unknown name (the message lists the registered ones) or bad options.
    """
    from rasfw.registry import REGISTRY

    if execution is None:
        execution = "eager"
    if isinstance(execution, Executor):
        if options:
            raise ValueError("execution options apply to a name, not to an Executor instance")
        return execution
    if not isinstance(execution, str):
        raise TypeError(f"execution must be a name or an Executor; got {type(execution).__name__}")
    try:
        cls = REGISTRY.get("execution", execution)
    except ValueError as exc:
        raise ValueError(f"execution: {exc}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"execution={execution}: {exc}") from None


def call_key(plan_key: tuple, args: tuple, kwargs: dict[str, Any]) -> tuple:
    """`plan_key` plus the shape, dtype and device of every tensor argument and the value of every other one."""
    from torch.utils._pytree import tree_flatten

    leaves, spec = tree_flatten((args, kwargs))
    return (plan_key, str(spec), *(_describe(leaf) for leaf in leaves))


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, str(value.device))
    try:
        hash(value)
    except TypeError:
        return ("value", repr(value))
    return ("value", value)
