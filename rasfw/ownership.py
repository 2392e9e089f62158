"""Which pipeline a RAS attachment belongs to, when its parts are shared or swapped.

diffusers pipelines share components: `OtherPipeline.from_pipe(pipe)` builds a sibling around the very same
transformer and scheduler objects, so the sibling would sample through RAS's hooks too. And users replace
parts after `apply_ras` (`pipe.scheduler = UniPCMultistepScheduler.from_config(...)`). The rules:

* RAS samples only the pipeline it was applied to. A generation is started by `scheduler.set_timesteps`;
  `calling_pipeline` looks up the call stack for the pipeline that called it. When another pipeline holding
  the same scheduler called it and the owner is nowhere up the stack, that generation passes through
  (`RegionState.passthrough`): the transformer and scheduler run exactly as without RAS.
* A scheduler swapped on the owner after `apply_ras` is followed: the next transformer call moves RAS's
  wrappers to the new scheduler (the old one gets its own methods back) and starts the generation from
  the new scheduler's timesteps.
* The end of each owner call (diffusers' `maybe_free_model_hooks`, which every pipeline calls last) frees
  the caches at once, also after an interrupted call (`pipe._interrupt`), and marks the generation over.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

_DEPTH = 32
"""Frames looked at above `set_timesteps` (a pipeline's `__call__` is a few frames up)."""


def owner_ref(pipe: Any) -> weakref.ref | None:
    """A weak reference to `pipe` (`None` for an object that takes none: ownership is then not checked)."""
    try:
        return weakref.ref(pipe)
    except TypeError:
        return None


def calling_pipeline(scheduler: Any, owner: Any) -> Any | None:
    """The object up the call stack that holds `scheduler` as `.scheduler` and called into it, unless the
    owner is on the stack (a wrapper around the owner, or the owner itself): `None` then, or when nothing
    holding the scheduler is found (a loop driven by hand)."""
    frame = sys._getframe(1)
    found = None
    for _ in range(_DEPTH):
        if frame is None:
            break
        candidate = frame.f_locals.get("self")
        if candidate is owner and owner is not None:
            return None
        if found is None and candidate is not None and candidate is not scheduler and _holds(candidate, scheduler):
            found = candidate
        frame = frame.f_back
    return found


def _holds(candidate: Any, scheduler: Any) -> bool:
    try:
        return vars(candidate).get("scheduler") is scheduler
    except TypeError:  # no __dict__
        return False
