import torch

from rasfw.embedded.data import ATTRIBUTES, COLOUR_RGB, COLOURS, POSITIONS, make_prompt, prompt_set, sample_batch


def test_same_seed_same_batch_and_different_seed_differs():
    a, b, c = sample_batch(32, seed=7), sample_batch(32, seed=7), sample_batch(32, seed=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and a.prompts == b.prompts
    assert not torch.equal(a.images, c.images)


def test_no_global_rng_state_is_used():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    sample_batch(8, seed=1)
    assert torch.equal(torch.rand(1), before)


def test_shapes_ranges_and_prompts():
    batch = sample_batch(64, seed=0)
    assert batch.images.shape == (64, 3, 32, 32) and batch.images.dtype == torch.float32
    assert batch.images.min() >= -1 and batch.images.max() <= 1
    assert batch.masks.shape == (64, 32, 32) and batch.masks.dtype == torch.bool
    i = 0
    labels = {k: int(v[i]) for k, v in batch.labels.items()}
    assert batch.prompts[i] == make_prompt(labels)
    assert make_prompt({"shape": 0, "colour": 0, "size": 0, "position": 0}) == "a small red circle at the top left"
    # The background is structured, not flat.
    assert (batch.images * ~batch.masks[:, None]).flatten(2).std(-1).mean() > 0.02


def test_masks_match_prompts():
    batch = sample_batch(256, seed=3)
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    area = batch.masks.flatten(1).sum(1).float()
    assert (area > 0).all()
    cy = (batch.masks * ys).flatten(1).sum(1) / area
    cx = (batch.masks * xs).flatten(1).sum(1) / area
    row, col = (cy // (32 / 3)).long(), (cx // (32 / 3)).long()
    assert torch.equal(3 * row + col, batch.labels["position"])
    small, large = area[batch.labels["size"] == 0], area[batch.labels["size"] == 1]
    assert small.max() < large.min()
    images = (batch.images + 1) / 2
    for i in range(len(batch)):
        inner = batch.masks[i]
        mean = images[i][:, inner].mean(1)
        target = torch.tensor(COLOUR_RGB[COLOURS[batch.labels["colour"][i]]])
        dists = torch.stack([(mean - torch.tensor(COLOUR_RGB[c])).norm() for c in COLOURS])
        assert (mean - target).norm() < 0.3
        assert int(dists.argmin()) == int(batch.labels["colour"][i])


def test_two_objects():
    batch = sample_batch(64, seed=5, two_object_prob=1.0)
    assert all(" and " in p for p in batch.prompts)
    assert (batch.labels2["position"] != batch.labels["position"]).all()


def test_prompt_set_is_fixed_and_balanced():
    total = 3 * 6 * 2 * 9
    prompts, labels = prompt_set(n=total, seed=1)
    assert prompts == prompt_set(n=total, seed=1)[0]
    assert len(set(prompts)) == total  # every combination once
    for name, values in ATTRIBUTES.items():
        counts = torch.bincount(labels[name], minlength=len(values))
        assert counts.min() == counts.max() == total // len(values)
    assert set(POSITIONS) == set(ATTRIBUTES["position"])
