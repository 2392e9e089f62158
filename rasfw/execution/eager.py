"""`execution=eager`: the call runs as it is (the default; bit-exact)."""

from __future__ import annotations

from rasfw.execution.base import Executor
from rasfw.registry import register


@register("execution", "eager")
class EagerExecution(Executor):
    """Runs each call eagerly; ratio 1 is bit-for-bit the unmodified pipeline."""

    name = "eager"

    def run(self, forward, key, args, kwargs):
        self.keys.add(key)
        return forward(*args, **kwargs)
