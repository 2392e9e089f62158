"""A small CNN that reads a testbed's procedural attributes (shape, colour, size, position, ...) back from an image.

It plays the role Inception plays for FID: its penultimate features feed ``fd`` and an intermediate spatial
feature map feeds ``sfd``; its heads, one per attribute, give ``alignment_accuracy``. Each testbed
(`rasfw.embedded.testbeds`) ships its own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from rasfw.embedded.testbeds import get_testbed

__all__ = ["AttributeClassifier", "DEFAULT_CLASSIFIER_WEIGHTS", "load_evaluator", "train_classifier"]

DEFAULT_CLASSIFIER_WEIGHTS = get_testbed("shapes").evaluator_weights


class AttributeClassifier(nn.Module):
    """Conv stages down to 4x4 (32x32 -> 16 -> 8 -> 4: three; 64x64: four), a 128-d feature, one linear head
    per attribute.

    Input images are float (B, 3, H, W) in [0, 1]; other sizes are resized to ``image_size``.

    Args:
        width: channels of the first stage (the others have twice as many).
        attributes: attribute name -> its values (None: the first testbed's shape, colour, size, position).
        image_size: the side the classifier reads, a power of two from 8.
    """

    feature_dim = 128
    spatial_channels = 16

    def __init__(self, width: int = 32, attributes: dict[str, tuple[str, ...]] | None = None, image_size: int = 32):
        super().__init__()
        if attributes is None:
            attributes = get_testbed("shapes").module().ATTRIBUTES
        self.attributes = {name: tuple(values) for name, values in attributes.items()}
        self.image_size = int(image_size)
        channels = [3, width] + [2 * width] * (self.image_size.bit_length() - 4)
        stages = [
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        ]
        # Named stage1, stage2, ... as the shipped weights name them; the spatial map is stage2's output.
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"stage{i}", stage)
        self.stages = len(stages)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, self.feature_dim), nn.ReLU())
        self.heads = nn.ModuleDict(
            {name: nn.Linear(self.feature_dim, len(v)) for name, v in self.attributes.items()}
        )

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(next(self.parameters()).device, torch.float32)
        side = self.image_size
        if images.shape[-2:] != (side, side):
            images = F.interpolate(images, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        return images * 2 - 1

    def trunk(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(spatial map after stage 2 (B, 2w, side/4, side/4), penultimate feature (B, 128))."""
        s2 = self.stage2(self.stage1(self._prepare(images)))
        x = s2
        for i in range(3, self.stages + 1):
            x = getattr(self, f"stage{i}")(x)
        return s2, self.fc(x)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        _, feat = self.trunk(images)
        return {name: head(feat) for name, head in self.heads.items()}

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Penultimate features (B, 128), the FID analogue's embedding."""
        return torch.cat([self.trunk(images[i : i + batch_size])[1] for i in range(0, len(images), batch_size)])

    @torch.no_grad()
    def spatial_features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The first 16 channels of the stage-2 map pooled to 4x4, flattened (B, 256): the sFID analogue."""
        out = []
        for i in range(0, len(images), batch_size):
            s2, _ = self.trunk(images[i : i + batch_size])
            out.append(F.adaptive_avg_pool2d(s2[:, : self.spatial_channels], 4).flatten(1))
        return torch.cat(out)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Predicted attribute indices, each long (B,)."""
        preds: dict[str, list[torch.Tensor]] = {name: [] for name in self.attributes}
        for i in range(0, len(images), batch_size):
            for name, logits in self(images[i : i + batch_size]).items():
                preds[name].append(logits.argmax(-1).cpu())
        return {name: torch.cat(v) for name, v in preds.items()}


def load_evaluator(weights: str | Path | None = None, device: str = "cpu") -> AttributeClassifier:
    """A saved classifier in eval mode (None: the first testbed's, ``eval/weights/attribute_cnn.safetensors``).

    The file's metadata carries the architecture (width, attributes, image size); files written before the
    attributes and size were recorded are the first testbed's.
    """
    path = Path(weights) if weights is not None else DEFAULT_CLASSIFIER_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"evaluator weights not found: {path} (train them: python -m rasfw.embedded.eval.train_classifier)"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    config = json.loads(meta.get("config", "{}"))
    model = AttributeClassifier(
        width=int(config.get("width", 32)), attributes=config.get("attributes"), image_size=config.get("image_size", 32)
    )
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()


def _accuracy(model: AttributeClassifier, data, n: int, seed: int) -> dict[str, float]:
    batch = data.sample_batch(n, seed)
    preds = model.predict((batch.images + 1) / 2)
    names = list(model.attributes)
    acc = {name: float((preds[name] == batch.labels[name]).float().mean()) for name in names}
    acc["all"] = float(torch.stack([preds[k] == batch.labels[k] for k in names]).all(0).float().mean())
    return acc


def train_classifier(
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 100,
    threads: int = 1,
    out: str | Path | None = None,
    width: int = 32,
    log_every: int = 100,
    data: str = "shapes",
) -> dict:
    """Train on fresh procedural batches of the testbed `data`, then measure held-out accuracy on 2,000
    unseen samples. `out` None writes the testbed's shipped file."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    bed = get_testbed(data, "data")
    module = bed.module()
    model = AttributeClassifier(width=width, attributes=module.ATTRIBUTES, image_size=module.IMAGE_SIZE)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(1, steps + 1):
        batch = module.sample_batch(batch_size, generator=gen)
        logits = model((batch.images + 1) / 2)
        loss = sum(F.cross_entropy(logits[k], batch.labels[k]) for k in model.attributes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0:
            print(f"[classifier] step {step} loss {loss.item():.4f} {time.time() - start:.0f} s", flush=True)
    model.eval()
    acc = _accuracy(model, module, 2000, seed=987654)
    record = {
        "data": bed.name,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "threads": threads,
        "width": width,
        "wall_time_s": round(time.time() - start, 1),
        "heldout_samples": 2000,
        "heldout_seed": 987654,
        "heldout_accuracy": acc,
        "torch": torch.__version__,
    }
    path = Path(out) if out is not None else bed.evaluator_weights
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    config = {"width": width, "attributes": model.attributes, "image_size": model.image_size}
    save_file(state, str(path), metadata={"config": json.dumps(config), "record": json.dumps(record)})
    record_name = "classifier_record.json" if bed.name == "shapes" else f"{bed.name}_classifier_record.json"
    path.with_name(record_name).write_text(json.dumps(record, indent=2) + "\n")
    print(f"[classifier] held-out accuracy {json.dumps(acc)}", flush=True)
    return record
