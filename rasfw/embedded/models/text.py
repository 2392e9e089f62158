"""A word-level prompt vocabulary and a small learned text encoder for the embedded model."""

from __future__ import annotations

import torch
from torch import nn

from rasfw.embedded.data import vocabulary_words

__all__ = ["PAD", "UNK", "Vocabulary", "TextEncoder"]

PAD = "<pad>"
UNK = "<unk>"


class Vocabulary:
    """Maps prompts to fixed-length id tensors. Id 0 is padding, id 1 an unknown word."""

    def __init__(self, words: list[str] | None = None, max_length: int = 8):
        self.words = [PAD, UNK] + list(vocabulary_words() if words is None else words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Long (B, max_length); longer prompts are cut, the empty prompt is all padding."""
        ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens = [self.index.get(w, 1) for w in prompt.lower().split()][: self.max_length]
            if tokens:
                ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids


class TextEncoder(nn.Module):
    """Learned word and position embeddings, one transformer layer, and a pooled projection.

    ``forward(prompts)`` returns ``(encoder_hidden_states (B, L, dim), pooled_projections (B, pooled_dim))``.
    The empty prompt "" is the unconditional prompt used for classifier-free guidance. ``words`` is the
    vocabulary (None: the first testbed's, ``rasfw.embedded.data.vocabulary_words()``); a model's config
    carries it, so a saved model rebuilds its own.
    """

    def __init__(
        self,
        dim: int = 64,
        pooled_dim: int = 64,
        max_length: int = 8,
        layers: int = 1,
        heads: int = 4,
        words: list[str] | None = None,
    ):
        super().__init__()
        self.vocab = Vocabulary(words, max_length=max_length)
        self.token = nn.Embedding(len(self.vocab), dim)
        self.position = nn.Parameter(torch.zeros(max_length, dim))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers > 0 else None
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Sequential(nn.Linear(dim, pooled_dim), nn.SiLU(), nn.Linear(pooled_dim, pooled_dim))

    @property
    def device(self) -> torch.device:
        return self.token.weight.device

    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.vocab.encode(prompts).to(self.device)
        x = self.token(ids) + self.position
        if self.layers is not None:
            x = self.layers(x)
        x = self.norm(x)
        keep = (ids != 0).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1)
        return x, self.pool(pooled)
