"""rasfw: Region-Adaptive Sampling for diffusion transformers, as composable plugins."""

from rasfw import backends, execution, strategies  # noqa: F401 - registers the built-in strategies, backends, executors
from rasfw.attach import apply_ras, ras_backend, ras_execution, ras_state, remove_ras
from rasfw.execution import Executor
from rasfw.interfaces import (
    InactiveFill,
    ModelAdapter,
    RatioSchedule,
    RegionMetric,
    ResetSchedule,
    StarvationPolicy,
    TokenGrid,
)
from rasfw.registry import REGISTRY, Registry, register
from rasfw.sampler import DenseSampler, RegionAdaptiveSampler
from rasfw.state import ForwardPlan, RegionState

__version__ = "0.1.0"

__all__ = [
    "REGISTRY",
    "DenseSampler",
    "Executor",
    "ForwardPlan",
    "InactiveFill",
    "ModelAdapter",
    "RatioSchedule",
    "RegionAdaptiveSampler",
    "RegionMetric",
    "RegionState",
    "Registry",
    "ResetSchedule",
    "StarvationPolicy",
    "TokenGrid",
    "apply_ras",
    "ras_backend",
    "ras_execution",
    "ras_state",
    "register",
    "remove_ras",
]
