"""Evaluation metrics, each usable alone on tensors or arrays: pixels, distributions, identity, attribute, CIs.

- `pixels`: L1, PSNR, SSIM, L1 inside / outside a region (background preservation), per image.
- `distribution`: FID and KID on Inception features (the network from a local path; `Skipped` without one).
- `identity`: dlib descriptor distance (offline; detected or canonical FFHQ landmarks), ArcFace cosine.
- `attribute`: attribute success with the calibrated train-classifier scorer.
- `bootstrap`: percentile bootstrap intervals of a mean and of a paired difference.
"""

from inference.metrics.attribute import AttributeSuccess, attribute_success, calibrated_threshold, success_by_attribute
from inference.metrics.bootstrap import BootstrapCI, bootstrap_ci, paired_difference_ci
from inference.metrics.distribution import (
    DistributionScores,
    InceptionFeatures,
    KidResult,
    distribution_scores,
    fid_from_features,
    kid_from_features,
)
from inference.metrics.identity import (
    ArcFaceCosine,
    DlibDistances,
    DlibIdentity,
    FaceReference,
    arcface_cosine,
    arcface_identity,
)
from inference.metrics.pixels import background_l1, l1, masked_l1, psnr, region_l1, ssim
from inference.metrics.skipped import Skipped

__all__ = ["ArcFaceCosine", "AttributeSuccess", "BootstrapCI", "DistributionScores", "DlibDistances", "DlibIdentity",
           "FaceReference", "InceptionFeatures", "KidResult", "Skipped", "arcface_cosine", "arcface_identity",
           "attribute_success", "background_l1", "bootstrap_ci", "calibrated_threshold", "distribution_scores",
           "fid_from_features", "kid_from_features", "l1", "masked_l1", "paired_difference_ci", "psnr", "region_l1",
           "ssim", "success_by_attribute"]
