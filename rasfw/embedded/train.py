"""Train the embedded default model on procedural data: ``python -m rasfw.embedded.train steps=2000 threads=2``.

Rectified flow as SD3 trains it: ``x_t = (1 - t) x0 + t noise``, the target velocity is ``noise - x0``,
``t`` is logit-normal (mean 0, std 1) and the transformer sees ``timestep = 1000 t``, the scale of
``FlowMatchEulerDiscreteScheduler``'s timesteps. Prompts are dropped to "" with probability
``caption_dropout`` so classifier-free guidance works. AdamW, an EMA of the weights (the EMA is what ships),
data drawn on the fly from ``rasfw.embedded.data``. ``object_weight`` > 1 weights the loss towards object pixels (the
data's masks), where the shapes are decided; 1 is SD3's plain loss. Checkpoints are written every
``checkpoint_minutes``, and training stops early, saving, when ``max_minutes`` is spent. The learning-rate
schedule spans ``steps`` or ``max_minutes``, whichever ends first; ``stop_minutes`` ends a run sooner without
changing that schedule (a stage cut short).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from rasfw.embedded.models.pipeline import (
    DEFAULT_CONFIG,
    DEFAULT_WEIGHTS,
    MiniPipeline,
    build_pipeline,
    load_pipeline,
    save_pipeline,
)
from rasfw.embedded.testbeds import get_testbed

__all__ = ["train", "rectified_flow_loss", "object_weight_map", "draw_loss_curve"]

_ENV_KEYS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")

def defaults() -> dict:
    """The training settings and their defaults, from their one home: ``conf/train.yaml`` (``rasfw.conf``)."""
    from importlib import resources

    from omegaconf import OmegaConf

    cfg = OmegaConf.create(resources.files("rasfw.conf").joinpath("train.yaml").read_text())
    cfg.pop("hydra", None)
    return OmegaConf.to_container(cfg)


def rectified_flow_loss(
    transformer: nn.Module,
    text_encoder: nn.Module,
    x0: torch.Tensor,
    prompts: list[str],
    generator: torch.Generator,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity ``noise - x0``.

    ``weight`` (broadcastable to ``x0``) makes it a weighted mean, normalised by the weights' mean so the
    scale stays that of the plain loss.
    """
    b = x0.shape[0]
    t = torch.sigmoid(torch.randn(b, generator=generator))
    noise = torch.randn(x0.shape, generator=generator)
    tt = t.view(b, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * noise
    ctx, pooled = text_encoder(prompts)
    pred = transformer(
        hidden_states=xt, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t * 1000, return_dict=False
    )[0]
    err = (pred.float() - (noise - x0)) ** 2
    if weight is None:
        return err.mean()
    weight = weight.expand_as(err)
    return (err * weight).sum() / weight.sum()


def object_weight_map(masks: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Per-pixel loss weights (B, 1, H, W): ``object_weight`` on the object and the one-pixel ring around it
    (so both sides of every edge count), 1 elsewhere."""
    ring = torch.nn.functional.max_pool2d(masks[:, None].float(), kernel_size=3, stride=1, padding=1)
    return 1.0 + (float(object_weight) - 1.0) * ring


def _config(cfg) -> dict:
    """Accept a dict or an OmegaConf config; fill defaults."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    out = defaults()
    unknown = set(cfg) - set(out) - {"hydra"}
    if unknown:
        raise KeyError(f"unknown training settings: {sorted(unknown)}; known: {sorted(out)}")
    out.update({k: v for k, v in cfg.items() if k in out})
    return out


def _model_config(overrides: dict, base: dict | None = None) -> dict:
    config = copy.deepcopy(DEFAULT_CONFIG if base is None else base)
    for key, value in (overrides or {}).items():
        for part in ("transformer", "text_encoder", "scheduler"):
            if isinstance(value, dict) and key == part:
                config[part].update(value)
                break
        else:
            raise KeyError(f"model overrides must be grouped as transformer/text_encoder/scheduler, got {key!r}")
    te = config["text_encoder"]
    config["transformer"]["joint_attention_dim"] = te["dim"]
    config["transformer"]["pooled_projection_dim"] = te["pooled_dim"]
    return config


def transfer_weights(source: MiniPipeline, target: MiniPipeline) -> list[str]:
    """Copy `source`'s weights into `target` wherever they fit; returns the names left as initialised.

    Tensors of the same name and shape are copied. Word embeddings are copied word by word (a word only
    `target`'s vocabulary has keeps its fresh row) and position embeddings row by row, so a model can go on
    training with a larger vocabulary or longer prompts. The transformer's sine-cosine position table is
    rebuilt for `target`'s size, not copied.
    """
    fresh = []
    for name in ("transformer", "text_encoder"):
        src, dst = getattr(source, name).state_dict(), getattr(target, name).state_dict()
        for key, value in dst.items():
            if key in src and src[key].shape == value.shape and key != "pos_embed.pos_embed":
                value.copy_(src[key])
            elif name == "text_encoder" and key == "token.weight":
                words = source.text_encoder.vocab.index
                for row, word in enumerate(target.text_encoder.vocab.words):
                    if word in words:
                        value[row] = src[key][words[word]]
                    else:
                        fresh.append(f"{name}.{key}[{word}]")
            elif name == "text_encoder" and key == "position" and src[key].shape[1:] == value.shape[1:]:
                rows = min(len(value), len(src[key]))
                value[:rows] = src[key][:rows]
            elif key != "pos_embed.pos_embed":
                fresh.append(f"{name}.{key}")
    return fresh


def draw_loss_curve(losses: list[float], path: str | Path, title: str = "training loss") -> None:
    """A plain line plot (step vs loss, raw and smoothed) drawn with PIL."""
    from PIL import Image, ImageDraw

    w, h, left, right, top, bottom = 640, 400, 60, 20, 30, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    n = len(losses)
    if n == 0:
        img.save(path)
        return
    smooth, acc = [], 0.0
    for i, v in enumerate(losses, start=1):
        acc = 0.95 * acc + 0.05 * v
        smooth.append(acc / (1 - 0.95**i))  # bias-corrected, so the curve starts at the first loss
    lo, hi = min(losses), max(losses)
    lo, hi = (lo - 1e-3, hi + 1e-3) if hi - lo < 1e-6 else (lo, hi)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (w - left - right) * (i / max(n - 1, 1))
        y = top + (h - top - bottom) * (1 - (v - lo) / (hi - lo))
        return x, y

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        _, y = xy(0, v)
        d.line([left - 4, y, left, y], fill="black")
        d.text((4, y - 6), f"{v:.3f}", fill="black")
    for k in range(5):
        i = round((n - 1) * k / 4)
        x, _ = xy(i, lo)
        d.line([x, h - bottom, x, h - bottom + 4], fill="black")
        d.text((x - 10, h - bottom + 8), str(i + 1), fill="black")
    d.text((left, 8), f"{title} (grey: per step, blue: smoothed)", fill="black")
    d.text((w // 2 - 15, h - 16), "step", fill="black")
    d.line([xy(i, v) for i, v in enumerate(losses)], fill=(180, 180, 180), width=1)
    d.line([xy(i, v) for i, v in enumerate(smooth)], fill=(30, 80, 200), width=2)
    img.save(path)


def train(cfg) -> dict:
    """Run training as configured; returns the training record (also written beside the weights)."""
    cfg = _config(cfg)
    torch.set_num_threads(int(cfg["threads"]))
    out = Path(cfg["out"]) if cfg["out"] else DEFAULT_WEIGHTS.parent
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / DEFAULT_WEIGHTS.name
    bed = get_testbed(cfg["data"], "data")
    data = bed.module()
    base = None
    if cfg["init"]:
        # Continue from saved weights: the architecture comes from the file, with the `model` overrides and
        # the data's vocabulary on top; what no longer fits starts afresh. Optimizer state starts afresh.
        source = load_pipeline(str(cfg["init"]))
        base = source.config
    config = _model_config(cfg["model"], base)
    words = data.vocabulary_words()
    if words != config["text_encoder"].get("words", _default_words()):
        config["text_encoder"]["words"] = words
    pipe = build_pipeline(config, seed=cfg["seed"])
    if cfg["init"]:
        fresh = transfer_weights(source, pipe)
        print(f"[train] from {cfg['init']}; initialised afresh: {fresh or 'nothing'}", flush=True)
    transformer, text_encoder = pipe.transformer.train(), pipe.text_encoder.train()
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    n_params = sum(p.numel() for p in params)
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.99))
    data_gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    noise_gen = torch.Generator().manual_seed(cfg["seed"] + 2)
    drop_gen = torch.Generator().manual_seed(cfg["seed"] + 3)
    max_seconds = None if cfg["max_minutes"] is None else 60.0 * float(cfg["max_minutes"])
    stop_seconds = None if cfg["stop_minutes"] is None else 60.0 * float(cfg["stop_minutes"])
    weighted = cfg["object_weight"] != 1.0
    print(f"[train] {n_params / 1e6:.2f} M parameters; config {json.dumps(config)}", flush=True)
    print(f"[train] settings {json.dumps({k: v for k, v in cfg.items() if k != 'model'})}", flush=True)

    def save(tag: str) -> None:
        live = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, ema, strict=True):
                p.copy_(e)
        record = _record(cfg, config, step, losses, time.time() - start, n_params, tag)
        save_pipeline(weights_path, transformer, text_encoder, config, extra={"training": record})
        (out / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
        draw_loss_curve(losses, out / "loss_curve.png")
        with torch.no_grad():
            for p, v in zip(params, live, strict=True):
                p.copy_(v)
        print(f"[train] saved {tag} weights at step {step} to {weights_path}", flush=True)

    losses: list[float] = []
    start = last_ckpt = time.time()
    step = 0
    for step in range(1, int(cfg["steps"]) + 1):
        elapsed = time.time() - start
        progress = max(step / cfg["steps"], elapsed / max_seconds if max_seconds else 0.0)
        warm = min(1.0, step / max(cfg["warmup"], 1))
        cosine = cfg["min_lr_ratio"] + (1 - cfg["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * min(progress, 1)))
        for group in opt.param_groups:
            group["lr"] = cfg["lr"] * warm * cosine

        batch = data.sample_batch(cfg["batch_size"], generator=data_gen, two_object_prob=cfg["two_object_prob"])
        drop = torch.rand(len(batch), generator=drop_gen) < cfg["caption_dropout"]
        prompts = ["" if d else p for p, d in zip(batch.prompts, drop.tolist(), strict=True)]
        weight = object_weight_map(batch.masks, cfg["object_weight"]) if weighted else None
        loss = rectified_flow_loss(transformer, text_encoder, batch.images, prompts, noise_gen, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        opt.step()
        decay = min(cfg["ema_decay"], (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        losses.append(loss.item())

        if step % cfg["log_every"] == 0 or step == 1:
            now = time.time() - start
            recent = sum(losses[-cfg["log_every"] :]) / len(losses[-cfg["log_every"] :])
            print(
                f"[train] step {step} loss {recent:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{now / step:.2f} s/step elapsed {now / 60:.1f} min",
                flush=True,
            )
        if time.time() - last_ckpt > 60.0 * cfg["checkpoint_minutes"]:
            save("checkpoint")
            last_ckpt = time.time()
        if max_seconds is not None and time.time() - start > max_seconds:
            print(f"[train] time budget of {cfg['max_minutes']} min spent at step {step}", flush=True)
            break
        if stop_seconds is not None and time.time() - start > stop_seconds:
            print(f"[train] stopping after {cfg['stop_minutes']} min at step {step}", flush=True)
            break
    save("final")
    return _record(cfg, config, step, losses, time.time() - start, n_params, "final")


def _record(cfg: dict, config: dict, step: int, losses: list[float], seconds: float, n_params: int, tag: str) -> dict:
    tail = losses[-50:]
    return {
        "command": " ".join([Path(sys.executable).name, "-m", "rasfw.embedded.train", *sys.argv[1:]]),
        "status": tag,
        "seed": cfg["seed"],
        "steps": step,
        "steps_planned": cfg["steps"],
        "batch_size": cfg["batch_size"],
        "wall_time_s": round(seconds, 1),
        "seconds_per_step": round(seconds / max(step, 1), 3),
        "final_loss": round(sum(tail) / max(len(tail), 1), 5),
        "first_loss": round(losses[0], 5) if losses else None,
        "parameters": n_params,
        "settings": {k: v for k, v in cfg.items() if k not in ("model",)},
        "model_config": config,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "environment": {k: os.environ[k] for k in _ENV_KEYS if k in os.environ},
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def _default_words() -> list[str]:
    from rasfw.embedded.data import vocabulary_words

    return vocabulary_words()


def main() -> None:
    import hydra

    # In a checkout the configs sit in conf/ at the top; an installed package carries them as rasfw.conf.
    repo_conf = Path(__file__).resolve().parents[2] / "conf"
    config_path = str(repo_conf) if (repo_conf / "train.yaml").is_file() else "pkg://rasfw.conf"

    @hydra.main(version_base="1.3", config_path=config_path, config_name="train")
    def _entry(cfg) -> None:
        train(cfg)

    _entry()


if __name__ == "__main__":
    main()
