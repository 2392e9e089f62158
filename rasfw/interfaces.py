"""The five strategy interfaces of rasfw and the small value types they exchange."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from rasfw.backends.base import TokenBackend
    from rasfw.state import RegionState


@dataclass(frozen=True)
class TokenGrid:
    """How a model's latent maps onto its patch tokens.

    Tokens are numbered row-major over a `rows x cols` grid of patches. A token's values are the
    `patch * patch` latent pixels of its patch, each with `channels` channels.

    Attributes:
        rows: patches per column of the latent (latent height // patch).
        cols: patches per row of the latent (latent width // patch).
        patch: patch size in latent pixels.
        channels: latent channels.
        layout: "bchw" for a `(B, C, H, W)` latent (SD3, Lumina-Next) or "packed" for Flux-style
            packed latents `(B, N, C * patch * patch)` whose values are ordered (channel, py, px).
    """

    rows: int
    cols: int
    patch: int
    channels: int
    layout: str = "bchw"

    @property
    def num_tokens(self) -> int:
        return self.rows * self.cols

    def to_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """Latent -> `(B, N, patch * patch, channels)` tokens (a copy for "bchw")."""
        p, c = self.patch, self.channels
        if self.layout == "packed":
            b = latents.shape[0]
            return latents.reshape(b, self.num_tokens, c, p * p).transpose(-1, -2)  # (B, N, P, C)
        b = latents.shape[0]
        x = latents.reshape(b, c, self.rows, p, self.cols, p)  # (B, C, h, p, w, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, self.num_tokens, p * p, c)  # (B, N, P, C)

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_tokens`."""
        p, c = self.patch, self.channels
        b = tokens.shape[0]
        if self.layout == "packed":
            return tokens.transpose(-1, -2).reshape(b, self.num_tokens, c * p * p)  # (B, N, C*P)
        x = tokens.reshape(b, self.rows, self.cols, p, p, c)  # (B, h, w, p, p, C)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, self.rows * p, self.cols * p)  # (B, C, H, W)


class RegionMetric(ABC):
    """Ranks patches by how much the model is working on them (higher = more focus)."""

    @abstractmethod
    def score(
        self, tokens: torch.Tensor, grid: TokenGrid, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Score each patch.

        Args:
            tokens: `(B, N, P, C)` float32 model output (noise prediction) as tokens.
            grid: the token layout.
            generator: the run's random generator, for metrics that draw random numbers.

        Returns:
            `(B, N)` float32 scores.
        """


class RatioSchedule(ABC):
    """The share of image tokens recomputed at each step."""

    @abstractmethod
    def ratio(self, step: int, num_steps: int, num_tokens: int | None = None) -> float:
        """Share of tokens updated at `step` (0-based) of `num_steps`, in (0, 1]; 1 means dense.

        `num_tokens` is given for schedules defined in token counts (`reference_dynamic`).
        """


class StarvationPolicy(ABC):
    """Lifts the score of patches that were skipped often, or leaves scores alone."""

    @abstractmethod
    def adjust(self, score: torch.Tensor, drop_count: torch.Tensor) -> torch.Tensor:
        """Return adjusted `(B, N)` scores given `(B, N)` drop counts."""


class ResetSchedule(ABC):
    """Error-reset steps: steps forced dense in the middle of sampling."""

    @abstractmethod
    def is_dense(self, step: int, num_steps: int) -> bool:
        """Whether `step` of `num_steps` is a forced dense step."""

    def validate(self, num_steps: int) -> None:  # noqa: B027 - optional hook
        """Raise `ValueError` if the schedule does not fit `num_steps` steps."""


class ModelAdapter(ABC):
    """Declarative facts and hooks for one family of transformer classes."""

    @classmethod
    @abstractmethod
    def supports(cls, model: Any) -> bool:
        """Whether this adapter can drive `model` (matched on its class)."""

    @abstractmethod
    def install(self, model: torch.nn.Module, state: RegionState, backend: TokenBackend) -> None:
        """Attach gather/scatter hooks and K/V-caching projections to `model`."""

    @abstractmethod
    def remove(self, model: torch.nn.Module) -> None:
        """Undo `install`, restoring the original modules and forwards exactly."""

    @abstractmethod
    def grid(self, latents: torch.Tensor) -> TokenGrid:
        """The token grid of a latent as the scheduler sees it."""

    def call_grid(self, args: tuple, kwargs: dict[str, Any]) -> TokenGrid:
        """The token grid of a transformer call, from its arguments; read once per generation, before
        its first call (it may read tensor values, e.g. position ids: it is outside any graph)."""
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        return self.grid(hidden)

    def prepare(self, model: torch.nn.Module, plan: Any, args: tuple, kwargs: dict[str, Any]) -> None:  # noqa: B027
        """Allocate the buffers a call with `plan` (a `ForwardPlan` with caches) reads or writes.

        Runs before the call, outside any compiled or captured graph; buffers are kept while their
        shape stays the same, so every call of a shape sees the same addresses.
        """
