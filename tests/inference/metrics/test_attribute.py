"""Attribute success with the calibrated scorer: known probabilities, the stored threshold, a checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.metrics.attribute import attribute_success, calibrated_threshold, success_by_attribute
from inference.metrics.bootstrap import bootstrap_ci
from training.classifier.model import ATTRIBUTES, build_classifier
from training.classifier.scorer import AttributeScorer

ARCH = {"resolution": 32, "num_attributes": 3, "width": 8, "max_width": 16, "depth": 1}


class BrightnessLogits(torch.nn.Module):
    """Logit of attribute i = (i + 1) x the image's mean value: probabilities known from the pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None] * torch.tensor([1.0, 2.0, 3.0])


def flat_images(values: list[float], size: int = 16) -> torch.Tensor:
    return torch.tensor(values)[:, None, None, None].expand(-1, 3, size, size).contiguous()


def scorer_with(temperature: float, meta: dict) -> AttributeScorer:
    scorer = AttributeScorer(BrightnessLogits(), ATTRIBUTES, 16, temperature)
    scorer.meta = meta
    return scorer


def test_success_rate_at_the_classifiers_threshold() -> None:
    scorer = scorer_with(0.5, {"config": {"label_check": {"threshold": 0.9}}})
    values = [-0.9, -0.2, 0.0, 0.3, 0.6, 0.9]
    images = flat_images(values)
    result = attribute_success(scorer, images, "sunglasses")  # logit 2v, calibrated p = sigmoid(4v)
    expected = 1 / (1 + np.exp(-4 * np.asarray(values)))
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-6)
    assert result.threshold == 0.9 and result.threshold_source == "classifier label-check threshold"
    assert result.success.tolist() == [False, False, False, False, True, True]  # sigmoid(2.4) = 0.917
    assert result.rate == pytest.approx(2 / 6) and result.n == 6
    assert result.rate_at_half == pytest.approx(4 / 6)  # p = 0.5 at v = 0 counts
    summary = result.to_dict()
    assert summary["rate"] == result.rate and summary["temperature"] == 0.5 and "probabilities" not in summary
    # the per-sample successes feed the bootstrap as they are
    assert bootstrap_ci(result.success.astype(float)).mean == pytest.approx(2 / 6)


def test_threshold_sources() -> None:
    images = flat_images([0.1, 0.4])
    bare = scorer_with(1.0, {})
    assert calibrated_threshold(bare) == (0.5, "default 0.5")
    assert attribute_success(bare, images, "face_mask").threshold_source == "default 0.5"
    given = attribute_success(bare, images, "frame_glasses", threshold=0.7)  # p = sigmoid(3v): 0.574, 0.769
    assert given.threshold_source == "given" and given.success.tolist() == [False, True]
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        attribute_success(bare, images, "face_mask", threshold=1.0)
    with pytest.raises(ValueError, match="not 'hat'"):
        attribute_success(bare, images, "hat")


def test_per_attribute_and_a_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    scorer = AttributeScorer(build_classifier(**ARCH), ATTRIBUTES, 32, temperature=1.7)
    scorer.arch = dict(ARCH)
    path = scorer.save(tmp_path / "scorer.pt", extra={"sdgan": {"config": {"label_check": {"threshold": 0.8}}}})
    loaded = AttributeScorer.load(path)
    assert calibrated_threshold(loaded) == (0.8, "classifier label-check threshold")
    edits = {a: torch.rand(3, 3, 64, 64) * 2 - 1 for a in ATTRIBUTES}
    results = success_by_attribute(loaded, edits)
    assert list(results) == list(ATTRIBUTES)
    for i, attribute in enumerate(ATTRIBUTES):
        expected = torch.sigmoid(loaded.logits(edits[attribute])[:, i] / 1.7).double().numpy()
        np.testing.assert_allclose(results[attribute].probabilities, expected, rtol=1e-6)
        assert results[attribute].rate == pytest.approx(float((expected >= 0.8).mean()))
    empty = attribute_success(loaded, torch.zeros(0, 3, 32, 32), "face_mask")
    assert empty.n == 0 and np.isnan(empty.rate)
