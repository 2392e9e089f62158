"""The embedded testbeds: each a procedural data set, the model trained on it and the evaluator that scores it.

- ``shapes`` (the default): 32x32 images, one flat-coloured shape on a soft background, 256 tokens
  (`rasfw.embedded.data`).
- ``patterns``: 64x64 images, one finely patterned shape (2-pixel stripes, 4-pixel checks or plain) on a
  smooth background, 1024 tokens (`rasfw.embedded.patterns`): regions of unequal difficulty.

`model=default` and `model=patterns` run them from the CLI.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType

__all__ = ["Testbed", "TESTBEDS", "get_testbed"]

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Testbed:
    """One embedded testbed.

    Attributes:
        name: its name (`data=` of the training script, `testbed` of `rasfw.pipelines.runners.MiniRunner`).
        data: the module that draws its images and prompts (`ATTRIBUTES`, `IMAGE_SIZE`, `render`,
            `sample_batch`, `parse_prompt`, `prompt_set`, `vocabulary_words`).
        weights: the shipped model weights.
        evaluator_weights: the shipped attribute classifier.
    """

    name: str
    data: str
    weights: Path
    evaluator_weights: Path

    def module(self) -> ModuleType:
        """The data module, imported."""
        return importlib.import_module(self.data)

    @property
    def image_size(self) -> int:
        return int(self.module().IMAGE_SIZE)


TESTBEDS = MappingProxyType(
    {
        "shapes": Testbed(
            "shapes",
            "rasfw.embedded.data",
            _HERE / "models" / "weights" / "mini_sd3.safetensors",
            _HERE / "eval" / "weights" / "attribute_cnn.safetensors",
        ),
        "patterns": Testbed(
            "patterns",
            "rasfw.embedded.patterns",
            _HERE / "models" / "weights" / "patterns_sd3.safetensors",
            _HERE / "eval" / "weights" / "patterns_cnn.safetensors",
        ),
    }
)


def get_testbed(name: str, setting: str = "testbed") -> Testbed:
    """The testbed called `name`; any other name is a one-line `ValueError` naming `setting`."""
    if name not in TESTBEDS:
        raise ValueError(f"{setting} must be one of {', '.join(TESTBEDS)}; got {name!r}")
    return TESTBEDS[name]
