
import pytest
import torch

from rasfw.embedded.data import sample_batch
from rasfw.embedded.eval import (
    AttributeClassifier,
    alignment_accuracy,
    fd,
    frechet_distance,
    object_update_share,
    psnr,
    sfd,
    ssim,
)


@pytest.fixture(scope="module")
def evaluator():
    torch.manual_seed(0)
    return AttributeClassifier().eval()


@pytest.fixture(scope="module")
def images():
    return (sample_batch(64, seed=11).images + 1) / 2


def test_frechet_distance_basics():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 8, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-3)  # mean shift only


def test_fd_and_sfd_identical_near_zero_perturbed_larger(evaluator, images):
    noisy = (images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert fd(images, images, evaluator) == pytest.approx(0.0, abs=1e-4)
    assert fd(images, noisy, evaluator) > fd(images, images, evaluator) + 1e-3
    assert sfd(images, images, evaluator) == pytest.approx(0.0, abs=1e-4)
    assert sfd(images, noisy, evaluator) > 1e-3


def test_psnr_ssim(images):
    assert psnr(images, images) is None  # infinite: JSON has no inf
    noisy_one = images.clone()
    noisy_one[0] += 0.1
    assert psnr(images, noisy_one) is None  # one identical pair makes the mean infinite
    assert ssim(images, images) == pytest.approx(1.0, abs=1e-9)
    noisy = (images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    assert 10 < psnr(images, noisy) < 40
    assert ssim(images, noisy) < 0.95


def test_alignment_accuracy_range(evaluator, images):
    batch = sample_batch(64, seed=11)
    acc = alignment_accuracy(images, batch.labels, evaluator)
    assert 0.0 <= acc <= 1.0


def test_object_update_share():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # the top-left token of a 2x2 grid with patch 2
    counts = torch.tensor([[[3.0, 1.0], [1.0, 1.0]]])
    out = object_update_share(counts, masks, patch=2)
    assert out["object_update_share"] == pytest.approx(0.5)
    assert out["object_area_share"] == pytest.approx(0.25)
    assert out["enrichment"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        object_update_share(counts, torch.zeros(1, 6, 6, dtype=torch.bool), patch=2)
