"""The second embedded testbed: 64x64 patterned objects on smooth backgrounds, its model and evaluator."""

import pytest
import torch

from rasfw.embedded import patterns
from rasfw.embedded.eval import AttributeClassifier, load_evaluator, train_classifier
from rasfw.embedded.models.pipeline import build_pipeline, load_pipeline
from rasfw.embedded.testbeds import TESTBEDS, get_testbed
from rasfw.embedded.train import transfer_weights


def _fine_detail(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute Laplacian per pixel, (B, H-2, W-2): how much an image changes over two pixels."""
    x = images.mean(1)
    return (4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]).abs()


def test_same_seed_same_batch_prompts_parse_back_and_sizes():
    a, b = patterns.sample_batch(12, seed=3), patterns.sample_batch(12, seed=3)
    assert torch.equal(a.images, b.images) and a.prompts == b.prompts
    assert not torch.equal(a.images, patterns.sample_batch(12, seed=4).images)
    assert a.images.shape == (12, 3, 64, 64) and a.masks.shape == (12, 64, 64)
    assert a.images.min() >= -1 and a.images.max() <= 1
    for i, prompt in enumerate(a.prompts):
        assert patterns.parse_prompt(prompt) == {k: int(v[i]) for k, v in a.labels.items()}
        assert set(prompt.split()) <= set(patterns.vocabulary_words())
        assert a.masks[i].any()


def test_patterned_objects_carry_fine_detail_the_background_does_not():
    # What makes the testbed discriminating: regions of unequal difficulty.
    batch = patterns.sample_batch(96, seed=5)
    detail = _fine_detail(batch.images)  # (B, 62, 62)
    inside = torch.nn.functional.max_pool2d(
        (~batch.masks[:, None]).float(), kernel_size=5, stride=1, padding=2
    )[:, 0, 1:-1, 1:-1] == 0  # object pixels at least two pixels from the edge
    background = torch.nn.functional.max_pool2d(
        batch.masks[:, None].float(), kernel_size=5, stride=1, padding=2
    )[:, 0, 1:-1, 1:-1] == 0
    patterned = batch.labels["pattern"] > 0
    obj = torch.stack([detail[i][inside[i]].mean() for i in range(len(batch)) if patterned[i] and inside[i].any()])
    plain = torch.stack([detail[i][inside[i]].mean() for i in range(len(batch)) if not patterned[i] and inside[i].any()])
    bg = detail[background].mean()
    assert obj.mean() > 10 * bg, (obj.mean(), bg)
    assert plain.mean() < 3 * bg, (plain.mean(), bg)


def test_prompt_set_is_fixed_balanced_and_in_the_grammar():
    prompts, labels = patterns.prompt_set(54, seed=1)
    assert (prompts, labels["pattern"].tolist()) == (patterns.prompt_set(54, seed=1)[0], labels["pattern"].tolist())
    for name, values in patterns.ATTRIBUTES.items():
        counts = torch.bincount(labels[name], minlength=len(values))
        assert counts.min() >= 1, (name, counts)
    assert all(patterns.parse_prompt(p) is not None for p in prompts)
    assert patterns.parse_prompt("a small red circle at the top left") is None  # the first testbed's grammar


def test_an_unknown_testbed_is_one_line_naming_the_setting():
    with pytest.raises(ValueError, match=r"^model.testbed must be one of shapes, patterns; got 'stripes'$"):
        get_testbed("stripes", "model.testbed")
    assert set(TESTBEDS) == {"shapes", "patterns"}


def test_the_classifier_reads_64x64_and_saves_its_attributes_and_size(tmp_path):
    model = AttributeClassifier(width=8, attributes=patterns.ATTRIBUTES, image_size=64)
    x = torch.rand(3, 3, 64, 64)
    assert model.features(x).shape == (3, 128) and model.spatial_features(x).shape == (3, 256)
    assert set(model.predict(x)) == set(patterns.ATTRIBUTES)
    out = tmp_path / "cnn.safetensors"
    record = train_classifier(steps=2, batch_size=4, width=8, data="patterns", out=out, log_every=1)
    assert set(record["heldout_accuracy"]) == {*patterns.ATTRIBUTES, "all"}
    loaded = load_evaluator(out)
    assert loaded.image_size == 64 and loaded.attributes == {k: tuple(v) for k, v in patterns.ATTRIBUTES.items()}
    assert (tmp_path / "patterns_classifier_record.json").is_file()


def test_the_first_testbeds_classifier_still_loads_as_it_was():
    ev = load_evaluator()
    assert ev.image_size == 32 and ev.stages == 3 and list(ev.attributes) == ["shape", "colour", "size", "position"]


def test_weights_transfer_to_a_larger_image_and_vocabulary():
    source = load_pipeline()  # the shipped 32x32 model
    config = {
        "transformer": {**source.config["transformer"], "sample_size": 64},
        "text_encoder": {**source.config["text_encoder"], "max_length": 10, "words": patterns.vocabulary_words()},
        "scheduler": source.config["scheduler"],
    }
    target = build_pipeline(config, seed=1)
    fresh = transfer_weights(source, target)
    assert fresh == [f"text_encoder.token.weight[{w}]" for w in patterns.PATTERNS]
    src, dst = source.transformer.state_dict(), target.transformer.state_dict()
    assert all(torch.equal(src[k], dst[k]) for k in dst if k != "pos_embed.pos_embed")
    s_te, t_te = source.text_encoder, target.text_encoder
    for word in ("red", "circle", "left"):
        assert torch.equal(t_te.token.weight[t_te.vocab.index[word]], s_te.token.weight[s_te.vocab.index[word]])
    assert torch.equal(t_te.position[:8], s_te.position)


def test_the_shipped_patterns_model_runs_from_the_cli_and_is_scored(tmp_path):
    from rasfw.app.cli import main

    out = tmp_path / "run"
    main([
        "model=patterns", "steps=4", "ratio.warmup=2", "reset.steps=[]", "eval.prompts=2", "eval.batch=2",
        "timing.repeats=0", "progress=false", "hydra/job_logging=none", "hydra/hydra_logging=none", f"hydra.run.dir={out}",
    ])  # fmt: skip
    summary = __import__("json").loads((out / "summary.json").read_text())
    assert summary["weights"].endswith("patterns_sd3.safetensors")
    assert summary["evaluated_images"] == 2 and 0 <= summary["pattern_accuracy"] <= 1
    assert summary["flops_ratio"] < 1 and summary["psnr_vs_dense"] > 0
