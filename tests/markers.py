"""Markers for features that depend on the installed library versions."""

from __future__ import annotations

import diffusers
import diffusers.hooks
import pytest

# The step caches need a diffusers with TaylorSeer and First Block Cache on SD3-style blocks (0.36 and later);
# on older ones (the oldest supported, 0.35, run by .ci/oldest) `cache=` fails with one line, which
# tests/unit/test_caches.py checks on every version.
needs_step_caches = pytest.mark.skipif(
    not hasattr(diffusers.hooks, "TaylorSeerCacheConfig"),
    reason=f"diffusers {diffusers.__version__} predates the step caches; cache= is a one-line error there",
)
