"""Every metric of one attribute's syntheses, per method, from `inference.metrics` (each usable alone there).

Per sample: attribute success (calibrated probability >= the classifier's confident level), dlib descriptor
distance to the origin (and ArcFace cosine with weights), L1 / PSNR / SSIM to the GT composite, background L1
to the origin outside the attribute region. Per method: FID and KID against the reference faces of that
attribute. Every per-sample metric gets a bootstrap interval of its mean, and SD-GAN's paired difference to the
InterfaceGAN basis gets one too (same samples, so the interval is of the difference, not of two means).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from inference.evaluation.config import EvaluateConfig
from inference.evaluation.sources import Reference, SynthesisRun, read_images, to_float
from inference.metrics import (
    FaceReference,
    Skipped,
    attribute_success,
    background_l1,
    bootstrap_ci,
    distribution_scores,
    l1,
    paired_difference_ci,
    psnr,
    ssim,
)

# What each per-sample metric means, and whether higher is better (None: neither).
METRICS: dict[str, tuple[str, bool | None]] = {
    "success": ("attribute success (calibrated p >= the classifier's confident level)", True),
    "probability": ("calibrated attribute probability", True),
    "dlib_distance": ("dlib descriptor distance to the origin (< 0.6: same person)", False),
    "arcface_cosine": ("ArcFace cosine to the origin", True),
    "l1_gt": ("L1 to the GT composite ([-1, 1] images)", False),
    "psnr_gt": ("PSNR to the GT composite (dB)", True),
    "ssim_gt": ("SSIM to the GT composite", True),
    "background_l1": ("L1 to the origin outside the attribute region", False),
}
GT_METRICS = ("l1_gt", "psnr_gt", "ssim_gt")  # not for template_paste: it *is* the GT
Log = Callable[[str], None]


@dataclass
class AttributeScores:
    attribute: str
    n: int
    per_sample: pd.DataFrame  # one row per (method, sample)
    summary: dict[str, dict[str, Any]]  # method -> metric -> CI dict or Skipped dict
    distribution: dict[str, dict[str, Any]]  # method -> FID/KID dict or Skipped dict
    differences: dict[str, dict[str, Any]]  # metric -> CI of sdgan - interfacegan
    strength: dict[str, dict[str, float]]  # method -> alpha -> mean calibrated probability
    strength_identity: dict[str, dict[str, float]]  # method -> alpha -> mean dlib distance ({} without dlib)
    notes: list[str] = field(default_factory=list)


def _ci(values: np.ndarray, config: EvaluateConfig) -> dict[str, Any]:
    b = config.bootstrap
    return bootstrap_ci(values, b.confidence, b.resamples, b.seed).to_dict()


class Scorers:
    """The models, loaded once for every attribute."""

    def __init__(self, config: EvaluateConfig, classifier: Any, device: torch.device) -> None:
        from inference.metrics import ArcFaceCosine, DlibIdentity, InceptionFeatures

        self.config, self.classifier, self.device = config, classifier, device
        self.dlib = DlibIdentity(config.identity.detector) if config.identity.dlib else None
        self.arcface = ArcFaceCosine(config.identity.arcface, device) if config.identity.arcface else None
        self.inception = InceptionFeatures(config.inception, device=device) if config.inception else None


def score_attribute(run: SynthesisRun, attribute: str, scorers: Scorers, reference: Reference,
                    log: Log = lambda line: None) -> AttributeScores:
    config = scorers.config
    rows = run.rows(attribute)
    if rows.empty:
        raise ValueError(f"the synthesis has no samples of {attribute} (it has {run.info.attributes})")
    origins = read_images(run.folder, rows["origin"].tolist())
    gt = read_images(run.folder, rows["template_paste"].tolist())
    region = read_images(run.folder, rows["region"].tolist()).float() / 255
    origin_f = to_float(origins)
    reference_faces = scorers.dlib.reference(origins.permute(0, 2, 3, 1).numpy()) if scorers.dlib else None
    frames, summary, distribution, values = [], {}, {}, {}
    for method in config.methods:
        images = read_images(run.folder, rows[method].tolist())
        edits = to_float(images)
        log(f"{attribute}: scoring {method} ({len(rows)} samples)")
        success = attribute_success(scorers.classifier, edits, attribute)
        metrics: dict[str, np.ndarray] = {"success": success.success.astype(np.float64),
                                          "probability": success.probabilities}
        if scorers.dlib is not None:
            metrics["dlib_distance"] = scorers.dlib.distances(reference_faces, images.permute(0, 2, 3, 1).numpy()
                                                              ).distance
        if scorers.arcface is not None:
            metrics["arcface_cosine"] = scorers.arcface(origin_f, edits).double().numpy()
        if method != "template_paste":
            gt_f = to_float(gt)
            metrics["l1_gt"] = l1(edits, gt_f).double().numpy()
            metrics["psnr_gt"] = psnr(edits, gt_f, (-1.0, 1.0)).double().numpy()
            metrics["ssim_gt"] = ssim(edits, gt_f, (-1.0, 1.0)).double().numpy()
        metrics["background_l1"] = background_l1(edits, origin_f, region).double().numpy()
        values[method] = metrics
        summary[method] = {name: _ci(v, config) for name, v in metrics.items()}
        summary[method]["success"].update(threshold=success.threshold, threshold_source=success.threshold_source,
                                          rate_at_half=success.rate_at_half)
        for name in METRICS:
            if name not in metrics:
                summary[method][name] = _skipped(name, method, config).to_dict()
        distribution[method] = _distribution(reference, attribute, edits, scorers, config)
        frames.append(pd.DataFrame({"attribute": attribute, "method": method, "index": rows["index"].to_numpy(),
                                    **{k: v for k, v in metrics.items()}}))
    differences = {}
    if "sdgan" in values and "interfacegan" in values:
        b = config.bootstrap
        for name in values["sdgan"]:
            if name in values["interfacegan"]:
                differences[name] = paired_difference_ci(values["sdgan"][name], values["interfacegan"][name],
                                                         b.confidence, b.resamples, b.seed).to_dict()
    notes = []
    if np.isinf(values.get("sdgan", {}).get("psnr_gt", np.zeros(1))).any():
        notes.append("some SD-GAN edits equal their GT exactly (PSNR infinite): left out of the PSNR mean")
    strength, strength_identity = _strength(run, attribute, scorers, rows, reference_faces)
    return AttributeScores(attribute, len(rows), pd.concat(frames, ignore_index=True), summary, distribution,
                           differences, strength, strength_identity, notes)


def _skipped(name: str, method: str, config: EvaluateConfig) -> Skipped:
    if name == "arcface_cosine":
        return Skipped("no ArcFace weights (identity.arcface): insightface arcface_torch IResNet weights file")
    if name == "dlib_distance":
        return Skipped("identity.dlib is off")
    return Skipped(f"not defined for {method}: its images are the GT composite")


def _distribution(reference: Reference, attribute: str, edits: torch.Tensor, scorers: Scorers,
                  config: EvaluateConfig) -> dict[str, Any]:
    if scorers.inception is None:
        return Skipped("no Inception network (inception: a TorchScript file such as NVlabs' "
                       "inception-2015-12-05.pt)").to_dict()
    real = reference.images.get(attribute)
    if real is None:
        return Skipped(reference.reason or f"no reference faces labelled {attribute}").to_dict()
    if len(real) < 2 or len(edits) < 2:
        return Skipped(f"FID needs at least 2 images on each side ({len(real)} real, {len(edits)} edits)").to_dict()
    scores = distribution_scores(to_float(real).split(config.batch_size), edits.split(config.batch_size),
                                 scorers.inception, seed=config.bootstrap.seed)
    return scores.to_dict()


def _strength(run: SynthesisRun, attribute: str, scorers: Scorers, rows: pd.DataFrame,
              reference_faces: FaceReference | None
              ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per (method, alpha) of the sweep: the mean calibrated probability of the attribute, and (with dlib on) the
    mean dlib distance to the sample's origin, whose landmarks and descriptor `reference_faces` (the origins of
    `rows`) already holds; the sweep is a few samples, so both are cheap."""
    sweep = run.strength[run.strength["attribute"] == attribute] if len(run.strength) else run.strength
    probability: dict[str, dict[str, float]] = {}
    identity: dict[str, dict[str, float]] = {}
    if sweep.empty:
        return probability, identity
    position = {int(index): i for i, index in enumerate(rows["index"])}
    for (method, alpha), group in sweep.groupby(["method", "alpha"], sort=True):
        group = group.sort_values("index")
        images = read_images(run.folder, group["path"].tolist())
        p = attribute_success(scorers.classifier, to_float(images), attribute).probabilities
        key = f"{float(alpha):g}"
        probability.setdefault(str(method), {})[key] = round(float(np.mean(p)), 6)
        if reference_faces is not None and all(int(i) in position for i in group["index"]):
            origins = reference_faces.subset([position[int(i)] for i in group["index"]])
            distance = scorers.dlib.distances(origins, images.permute(0, 2, 3, 1).numpy()).distance
            identity.setdefault(str(method), {})[key] = round(float(np.mean(distance)), 6)
    return probability, identity


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: None stands in."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


__all__ = ["GT_METRICS", "METRICS", "AttributeScores", "Scorers", "finite_or_none", "score_attribute"]
