"""Quality metrics for the embedded model: an attribute classifier and the distances built on it."""

from rasfw.embedded.eval.classifier import AttributeClassifier, load_evaluator, train_classifier
from rasfw.embedded.eval.metrics import (
    alignment_accuracy,
    attribute_accuracy,
    attribute_hits,
    fd,
    frechet_distance,
    object_update_share,
    psnr,
    sfd,
    ssim,
    ssim_per_image,
)

__all__ = [
    "AttributeClassifier",
    "alignment_accuracy",
    "attribute_accuracy",
    "attribute_hits",
    "fd",
    "frechet_distance",
    "load_evaluator",
    "object_update_share",
    "psnr",
    "sfd",
    "ssim",
    "ssim_per_image",
    "train_classifier",
]
