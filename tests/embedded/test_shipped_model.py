"""The shipped weights draw what the prompt asks for, as judged by the shipped evaluator."""

import pytest
import torch

from rasfw.embedded.data import make_prompt, prompt_set
from rasfw.embedded.eval import attribute_accuracy, load_evaluator
from rasfw.embedded.models import load_pipeline
from rasfw.embedded.models.pipeline import DEFAULT_WEIGHTS

pytestmark = pytest.mark.slow  # end to end: the shipped model draws 24 images, the evaluator scores them


@pytest.fixture(scope="module")
def drawn():
    pipe = load_pipeline()
    assert pipe.weights_source == str(DEFAULT_WEIGHTS), "the package must ship trained weights"
    prompts, labels = prompt_set(24, seed=7)
    images = pipe(prompts, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt", progress=False).images
    return images, labels, prompts


def test_prompt_set_is_what_the_labels_say(drawn):
    _, labels, prompts = drawn
    assert prompts == [make_prompt({k: int(v[i]) for k, v in labels.items()}) for i in range(len(prompts))]


def test_shipped_model_matches_its_prompts(drawn):
    images, labels, _ = drawn
    acc = attribute_accuracy(images, labels, load_evaluator())
    # Colour and position are learned early and reliably; shape is the hard attribute. The full figures on
    # 200 prompts are in docs/models/embedded.md (python -m rasfw.app.study).
    assert acc["colour"] >= 0.95 and acc["position"] >= 0.95, acc
    assert acc["size"] >= 0.85, acc
    assert acc["shape"] >= 0.7, acc  # chance is 1/3; 0.92 here, 0.875 on the 200-prompt set
