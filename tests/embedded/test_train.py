import json
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from rasfw.embedded.train import draw_loss_curve, train

TINY_MODEL = {
    "transformer": {"num_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2, "caption_projection_dim": 32},
    "text_encoder": {"dim": 16, "pooled_dim": 16, "heads": 2},
}
CONF = Path(__file__).resolve().parents[2] / "conf"


def test_a_few_steps_lower_the_loss(tmp_path):
    torch.manual_seed(0)
    cfg = {
        "steps": 30,
        "batch_size": 8,
        "lr": 2e-3,
        "warmup": 1,
        "threads": 1,
        "out": str(tmp_path),
        "log_every": 100,
        "model": TINY_MODEL,
        "seed": 0,
    }
    import rasfw.embedded.train as train_module

    losses = []
    real = train_module.rectified_flow_loss

    def spy(*args, **kwargs):
        loss = real(*args, **kwargs)
        losses.append(loss.item())
        return loss

    train_module.rectified_flow_loss = spy
    threads = torch.get_num_threads()
    try:
        record = train(cfg)
    finally:
        train_module.rectified_flow_loss = real
        torch.set_num_threads(threads)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert record["steps"] == 30
    for name in ("mini_sd3.safetensors", "training_record.json", "loss_curve.png"):
        assert (tmp_path / name).is_file()
    saved = json.loads((tmp_path / "training_record.json").read_text())
    assert saved["seed"] == 0 and saved["torch"] == torch.__version__


def test_hydra_config_composes_with_overrides(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["steps=1", "batch_size=2", f"out={tmp_path}", "threads=1"])
    assert cfg.steps == 1 and cfg.out == str(tmp_path)
    from rasfw.embedded.train import _config

    assert _config(cfg)["batch_size"] == 2


def test_loss_curve_png(tmp_path):
    from PIL import Image

    draw_loss_curve([1.0, 0.8, 0.7, 0.65], tmp_path / "c.png")
    assert Image.open(tmp_path / "c.png").size == (640, 400)


def test_continue_from_saved_weights(tmp_path):
    from rasfw.embedded.models import load_pipeline
    from rasfw.embedded.models.pipeline import DEFAULT_CONFIG, build_pipeline, save_pipeline
    from rasfw.embedded.train import _model_config

    config = _model_config(TINY_MODEL)
    pipe = build_pipeline(config, seed=5)
    start = save_pipeline(tmp_path / "start.safetensors", pipe.transformer, pipe.text_encoder, config)
    threads = torch.get_num_threads()
    try:
        record = train({"steps": 2, "batch_size": 4, "threads": 1, "out": str(tmp_path / "next"), "init": str(start)})
    finally:
        torch.set_num_threads(threads)
    assert record["model_config"] == config != DEFAULT_CONFIG
    assert load_pipeline(str(tmp_path / "next" / "mini_sd3.safetensors")).transformer.config.num_layers == 1


def test_object_weight_map_covers_the_object_and_its_edge_ring():
    from rasfw.embedded.train import object_weight_map

    masks = torch.zeros(2, 6, 6, dtype=torch.bool)
    masks[0, 2:4, 2:4] = True
    w = object_weight_map(masks, 5.0)
    assert w.shape == (2, 1, 6, 6)
    assert torch.all(w[1] == 1.0)  # no object, plain loss
    assert torch.all(w[0, 0, 1:5, 1:5] == 5.0) and w[0, 0, 0, 0] == 1.0 and w[0, 0, 5, 5] == 1.0
    assert torch.equal(object_weight_map(masks, 1.0), torch.ones(2, 1, 6, 6))


def test_weighted_loss_is_a_weighted_mean_of_the_plain_loss():
    from rasfw.embedded.models.pipeline import build_pipeline
    from rasfw.embedded.train import _model_config, rectified_flow_loss

    pipe = build_pipeline(_model_config(TINY_MODEL), seed=0)
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    prompts = ["a small red circle at the top left", ""]

    def loss(weight):
        return rectified_flow_loss(
            pipe.transformer, pipe.text_encoder, x0, prompts, torch.Generator().manual_seed(1), weight
        )

    plain = loss(None)
    torch.testing.assert_close(loss(torch.full((2, 1, 32, 32), 3.0)), plain)  # uniform weights change nothing
    left = torch.zeros(2, 1, 32, 32)
    left[..., :16] = 1.0
    right = 1.0 - left
    # The two halves' weighted means average back to the plain mean (equal areas).
    torch.testing.assert_close((loss(left) + loss(right)) / 2, plain)
    assert not torch.isclose(loss(left), loss(right))


def test_stop_minutes_ends_the_run_early_and_saves(tmp_path):
    threads = torch.get_num_threads()
    try:
        cfg = {"steps": 50, "batch_size": 2, "threads": 1, "out": str(tmp_path), "model": TINY_MODEL, "stop_minutes": 0}
        record = train(cfg)
    finally:
        torch.set_num_threads(threads)
    assert record["steps"] == 1 and record["steps_planned"] == 50
    assert json.loads((tmp_path / "training_record.json").read_text())["status"] == "final"


def test_defaults_have_one_home_the_train_config():
    """train.py reads its defaults from conf/train.yaml: changing the file changes them."""
    from omegaconf import OmegaConf

    from rasfw.embedded.train import _config, defaults

    shipped = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml"))
    shipped.pop("hydra")
    assert defaults() == shipped and _config({}) == shipped
    assert _config({"lr": 1e-3})["lr"] == 1e-3
