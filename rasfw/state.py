"""Per-run state of one pipeline with RAS applied. Created by `apply_ras`, reset every generation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ForwardPlan:
    """What one transformer call must do.

    Attributes:
        index: `(Bt, a)` active token indices per transformer-batch row, or `None` for a dense call.
        capture: dense call whose keys/values and outputs the following RAS step will reuse.
        kv_cache: at a RAS call, whether active queries also attend to cached keys/values of the
            inactive tokens (Eq. 2 of the RAS paper). Off: inactive tokens drop out of attention.
    """

    index: torch.Tensor | None = None
    capture: bool = False
    kv_cache: bool = True

    @property
    def dense(self) -> bool:
        return self.index is None


@dataclass
class RegionState:
    """Everything one generation needs; nothing here is shared between pipelines.

    Attributes:
        num_steps: steps of the current generation (from `scheduler.set_timesteps`).
        step: index of the current step.
        skips: planned number of cached (skipped) tokens per step; 0 means a dense step.
        active: `(B, a)` active tokens of the current step per image, `None` when dense.
        drop_count: `(B, N)` how often each patch has been cached (`D` of Eq. 1).
        update_count: `(B, N)` how often each patch was recomputed (for the heat map).
        kv: per-projection key/value caches `(Bt, N, D)`, keyed by the projection's name.
        output: `(Bt, N, F)` the transformer's last computed output per token.
        forward: the plan of the transformer call in progress.
        generator: random numbers for strategies that need them, seeded per generation.
    """

    num_steps: int = 0
    step: int = 0
    skips: list[int] | None = None
    active: torch.Tensor | None = None
    drop_count: torch.Tensor | None = None
    update_count: torch.Tensor | None = None
    kv: dict[str, torch.Tensor] = field(default_factory=dict)
    output: torch.Tensor | None = None
    forward: ForwardPlan = field(default_factory=ForwardPlan)
    generator: torch.Generator = field(default_factory=torch.Generator)
    grid_shape: tuple[int, int] | None = None

    def reset(self, num_steps: int, seed: int) -> None:
        """Forget the previous generation and prepare for one of `num_steps` steps."""
        self.num_steps = num_steps
        self.step = 0
        self.skips = None
        self.active = None
        self.drop_count = None
        self.update_count = None
        self.kv.clear()
        self.output = None
        self.forward = ForwardPlan()
        self.generator.manual_seed(seed)

    def release_caches(self) -> None:
        """Free the key/value and output caches (after the last step); statistics stay readable."""
        self.kv.clear()
        self.output = None
        self.forward = ForwardPlan()

    @property
    def active_tokens_per_step(self) -> list[int]:
        """Tokens recomputed per image at each planned step."""
        if self.skips is None or self.grid_shape is None:
            return []
        n = self.grid_shape[0] * self.grid_shape[1]
        return [n - s for s in self.skips]
