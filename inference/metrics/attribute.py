"""Attribute success: the share of edits that the project's calibrated classifier sees wearing the attribute.

The classifier is train-classifier's `AttributeScorer` (`AttributeScorer.load(path)`), whose probabilities are
sigmoid(logit / T) with the temperature T fitted on held-out faces. An edit succeeds when its calibrated
probability for the target attribute reaches the classifier's own "confident" level: the label-check threshold
stored with its training config (0.9 by default), the level at which train-classifier trusts a prediction over a
query label. Checkpoints without it (or a caller's choice) fall back to a given threshold; the result says which
was used. The rate at p >= 0.5 (the decision boundary, where the temperature changes nothing) comes along, so
a report can show both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.classifier.scorer import AttributeScorer

__all__ = ["DEFAULT_THRESHOLD", "AttributeSuccess", "attribute_success", "calibrated_threshold",
           "success_by_attribute"]

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class AttributeSuccess:
    attribute: str
    rate: float  # share of samples with probability >= threshold
    rate_at_half: float  # share with probability >= 0.5
    threshold: float
    threshold_source: str  # "classifier label-check threshold" | "given" | "default 0.5"
    temperature: float
    probabilities: np.ndarray  # [N] calibrated probability of the attribute, per sample
    success: np.ndarray  # [N] bool, per sample (feed it to bootstrap_ci as floats)

    @property
    def n(self) -> int:
        return int(self.success.size)

    def to_dict(self) -> dict[str, Any]:
        """The summary (no per-sample arrays) for metrics.json."""
        return {"attribute": self.attribute, "rate": self.rate, "rate_at_half": self.rate_at_half, "n": self.n,
                "threshold": self.threshold, "threshold_source": self.threshold_source,
                "temperature": self.temperature}


def calibrated_threshold(scorer: AttributeScorer) -> tuple[float, str]:
    """The classifier's confident level on calibrated probabilities, from its checkpoint (else 0.5)."""
    config = scorer.meta.get("config") if isinstance(scorer.meta, Mapping) else None
    label_check = config.get("label_check") if isinstance(config, Mapping) else None
    value = label_check.get("threshold") if isinstance(label_check, Mapping) else None
    if isinstance(value, (int, float)) and 0 < float(value) < 1:
        return float(value), "classifier label-check threshold"
    return DEFAULT_THRESHOLD, "default 0.5"


def attribute_success(scorer: AttributeScorer, images: torch.Tensor, attribute: str,
                      threshold: float | None = None) -> AttributeSuccess:
    """Success of edits [N, 3, H, W] in [-1, 1] (any size) for one attribute; `threshold` overrides the stored one."""
    if attribute not in scorer.attributes:
        raise ValueError(f"the classifier scores {list(scorer.attributes)}, not {attribute!r}")
    if threshold is None:
        level, source = calibrated_threshold(scorer)
    elif 0 < threshold < 1:
        level, source = float(threshold), "given"
    else:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    probabilities = scorer.probabilities(images, calibrated=True)[:, scorer.attributes.index(attribute)]
    p = probabilities.to(torch.float64).numpy()
    success = p >= level
    nan = float("nan")
    return AttributeSuccess(attribute=attribute, rate=float(success.mean()) if len(p) else nan,
                            rate_at_half=float((p >= 0.5).mean()) if len(p) else nan,
                            threshold=level, threshold_source=source, temperature=scorer.temperature,
                            probabilities=p, success=success)


def success_by_attribute(scorer: AttributeScorer, edits: Mapping[str, torch.Tensor],
                         threshold: float | None = None) -> dict[str, AttributeSuccess]:
    """`attribute_success` for each attribute's edits ({attribute: images})."""
    return {attribute: attribute_success(scorer, images, attribute, threshold) for attribute, images in edits.items()}
