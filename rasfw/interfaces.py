"""The strategy interfaces of rasfw and the small value types they exchange."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from rasfw.backends.base import TokenBackend
    from rasfw.state import RegionState


LAYOUTS = ("bchw", "packed", "bcfhw")
"""Latent layouts a `TokenGrid` maps: images `(B, C, H, W)`, Flux-packed `(B, N, C * p * p)`, video `(B, C, F, H, W)`."""


@dataclass(frozen=True)
class TokenGrid:
    """How a model's latent maps onto its patch tokens.

    Tokens are numbered frame-major, then row-major, over a `frames x rows x cols` grid of patches (an
    image is the one-frame case). A token's values are the `patch_t * patch * patch` latent pixels of its
    patch, each with `channels` channels.

    Attributes:
        rows: patches per column of the latent (latent height // patch).
        cols: patches per row of the latent (latent width // patch).
        patch: spatial patch size in latent pixels (height and width).
        channels: latent channels.
        layout: "bchw" for a `(B, C, H, W)` latent (SD3, Lumina-Next), "packed" for Flux-style packed
            latents `(B, N, C * patch * patch)` whose values are ordered (channel, py, px), or "bcfhw" for
            a video latent `(B, C, F, H, W)` (Wan).
        frames: patches along time (latent frames // patch_t); 1 for an image.
        patch_t: temporal patch size in latent frames (Wan's `patch_size=(1, 2, 2)` has 1).
    """

    rows: int
    cols: int
    patch: int
    channels: int
    layout: str = "bchw"
    frames: int = 1
    patch_t: int = 1

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "patch", "channels", "frames", "patch_t"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TokenGrid.{name} must be an integer >= 1; got {value!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"TokenGrid.layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}")
        if self.layout != "bcfhw" and (self.frames, self.patch_t) != (1, 1):
            raise ValueError(f"TokenGrid: frames and patch_t other than 1 need layout 'bcfhw'; got {self.layout!r}")

    @property
    def num_tokens(self) -> int:
        return self.frames * self.rows * self.cols

    @property
    def shape(self) -> tuple[int, int, int]:
        """`(frames, rows, cols)`: token `i` sits at `numpy.unravel_index(i, shape)`."""
        return self.frames, self.rows, self.cols

    @property
    def patch_values(self) -> int:
        """Latent pixels per token (`P`)."""
        return self.patch_t * self.patch * self.patch

    def to_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """Latent -> `(B, N, P, channels)` tokens (a copy for "bchw" and "bcfhw")."""
        p, c, b = self.patch, self.channels, latents.shape[0]
        if self.layout == "packed":
            return latents.reshape(b, self.num_tokens, c, p * p).transpose(-1, -2)  # (B, N, P, C)
        if self.layout == "bcfhw":
            t = self.patch_t
            x = latents.reshape(b, c, self.frames, t, self.rows, p, self.cols, p)  # (B, C, f, t, h, p, w, p)
            return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, self.num_tokens, self.patch_values, c)
        x = latents.reshape(b, c, self.rows, p, self.cols, p)  # (B, C, h, p, w, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, self.num_tokens, p * p, c)  # (B, N, P, C)

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_tokens`."""
        p, c, b = self.patch, self.channels, tokens.shape[0]
        if self.layout == "packed":
            return tokens.transpose(-1, -2).reshape(b, self.num_tokens, c * p * p)  # (B, N, C*P)
        if self.layout == "bcfhw":
            t = self.patch_t
            x = tokens.reshape(b, self.frames, self.rows, self.cols, t, p, p, c)  # (B, f, h, w, t, p, p, C)
            x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, f, t, h, p, w, p)
            return x.reshape(b, c, self.frames * t, self.rows * p, self.cols * p)  # (B, C, F, H, W)
        x = tokens.reshape(b, self.rows, self.cols, p, p, c)  # (B, h, w, p, p, C)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, self.rows * p, self.cols * p)  # (B, C, H, W)


class RegionMetric(ABC):
    """Ranks patches by how much the model is working on them (higher = more focus).

    Attributes:
        uses_memory: `score` takes a `memory` keyword: a dict that lives for one generation of one
            pipeline (in its `RegionState`), empty at the first step, for metrics that compare steps.
    """

    uses_memory: ClassVar[bool] = False

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


class InactiveFill(ABC):
    """What the transformer returns at an inactive token of a RAS step.

    Vanilla RAS reuses the output a token got the last time it was computed (`reuse`). A fill with
    `order > 0` forecasts it from the `order + 1` most recent outputs the model computed for that token
    and the steps they were computed at (per-token Taylor extrapolation, `taylor`).

    A fill runs inside the transformer call, so it must be graph-safe: tensor arithmetic only, no host
    synchronisation and no Python branch on tensor values (it is traced by `torch.compile` and captured
    in CUDA graphs).

    Attributes:
        order: earlier computed outputs per token the forecast reads besides the last one; each costs
            one more `(Bt, N, F)` buffer per cache context, in the model's dtype, and the step indices
            of every kept output one `(Bt, N)` float32 buffer.
        forecasts: whether `forecast` is called at all; `False` only for `reuse`, whose RAS calls keep
            the plain path (the last output, no history, bit-exact with RAS without fills).
    """

    order: int = 0
    forecasts: ClassVar[bool] = True

    @abstractmethod
    def forecast(self, outputs: Sequence[torch.Tensor], steps: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
        """The forecast output of every token at step `now`.

        Args:
            outputs: `order + 1` tensors `(Bt, N, F)`: `outputs[0]` the last output computed per token,
                `outputs[j]` the one computed `j` computations of that token before.
            steps: `(order + 1, Bt, N)` float32 step indices those outputs were computed at; strictly
                decreasing along the first dimension (`steps[0]` is the latest).
            now: 0-d float32 tensor, the current step index (after every entry of `steps[0]`).

        Returns:
            A new `(Bt, N, F)` tensor (not one of `outputs`) in the dtype of `outputs[0]`; only the rows
            of inactive tokens are used.
        """


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

    refused_pipelines: ClassVar[tuple[tuple[str, str], ...]] = ()
    """`(pipeline class name, why)` of pipelines around a supported transformer that RAS cannot sample: `apply_ras`
    refuses them (and their subclasses) by name, before anything is changed."""

    @classmethod
    def check_pipeline(cls, pipe: Any) -> None:
        """Raise `ValueError` (one line) if `pipe` is one of `refused_pipelines`."""
        why = dict(cls.refused_pipelines)
        refused = next((k.__name__ for k in type(pipe).__mro__ if k.__name__ in why), None)
        if refused is not None:
            raise ValueError(f"apply_ras does not support {refused}: {why[refused]}")

    def check_removable(self, model: torch.nn.Module) -> None:  # noqa: B027 - optional hook
        """Raise `ValueError` (one line) if `remove` would put back objects over something replaced since
        `install` (another library's attention processor, say); `remove_ras` asks every adapter first."""

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

    def call_variant(self, args: tuple, kwargs: dict[str, Any]) -> str:
        """A name for a call that differs in kind from the step's other calls in its cache context (SD3's
        skip-layer guidance call skips blocks): it then gets caches of its own. "" for an ordinary call."""
        return ""

    def gather_inputs(self, args: tuple, kwargs: dict[str, Any], index: torch.Tensor) -> tuple[tuple, dict[str, Any]]:
        """The call's arguments at a RAS call with `(Bt, a)` active tokens `index`: per-token inputs the model
        adds to its image tokens (ControlNet residuals) kept at the active tokens. Unchanged by default."""
        return args, kwargs

    def follow_modules(self, model: torch.nn.Module) -> None:  # noqa: B027 - optional hook
        """Before each generation: move hooks to modules that replaced the hooked ones since `install`
        (a LoRA layer wrapping the output projection, say). Nothing by default."""
