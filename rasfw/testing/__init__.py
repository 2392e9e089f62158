"""Checks a plugin author runs against their own strategies and adapters, as the repository's tests do.

Each checker takes the plugin's class (or an instance) and raises `AssertionError` saying what broke;
call them from a test:

    from rasfw.testing import check_region_metric

    def test_my_metric():
        check_region_metric(MyMetric)

- `check_region_metric`, `check_ratio_schedule`, `check_starvation_policy`, `check_reset_schedule`,
  `check_inactive_fill`: the interface contract, parameter validation, determinism, and a tiny generation
  in a sampler;
- `check_model_adapter(adapter_cls, build_tiny_pipeline)`: exactness of an adapter on a tiny pipeline;
- `rasfw.testing.tiny`: a tiny SD3 pipeline, and wrappers of diffusers' SD3, Lumina-Next, Flux and Wan
  pipelines, in the calling convention the adapter checker uses.
"""

from rasfw.testing.adapters import check_model_adapter
from rasfw.testing.strategies import (
    check_inactive_fill,
    check_ratio_schedule,
    check_region_metric,
    check_reset_schedule,
    check_starvation_policy,
)

__all__ = [
    "check_inactive_fill",
    "check_model_adapter",
    "check_ratio_schedule",
    "check_region_metric",
    "check_reset_schedule",
    "check_starvation_policy",
]
