"""AttributeScorer: checkpoint round trip, any-size input, calibration, refusing other kinds of files."""

from __future__ import annotations

import pytest
import torch

from training.classifier.model import ATTRIBUTES, build_classifier
from training.classifier.scorer import AttributeScorer
from training.common.checkpoint import CheckpointError

ARCH = {"resolution": 32, "num_attributes": 3, "width": 8, "max_width": 16, "depth": 1}


def tiny_scorer(temperature: float = 1.0) -> AttributeScorer:
    torch.manual_seed(0)
    scorer = AttributeScorer(build_classifier(**ARCH), ATTRIBUTES, 32, temperature)
    scorer.arch = dict(ARCH)
    return scorer


def test_round_trip_through_a_file(tmp_path):
    scorer = tiny_scorer(temperature=2.0)
    path = scorer.save(tmp_path / "cls.pt", extra={"sdgan": {"step": 3}})
    loaded = AttributeScorer.load(path)
    assert loaded.attributes == ATTRIBUTES and loaded.resolution == 32 and loaded.temperature == 2.0
    assert loaded.device == torch.device("cpu") and loaded.meta == {"step": 3}
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.logits(images), scorer.logits(images))
    out = loaded.logits(images)
    assert out.shape == (5, 3) and out.dtype == torch.float32 and not out.requires_grad


def test_any_resolution_and_batching():
    scorer = tiny_scorer()
    scorer.batch_size = 2
    big = torch.rand(3, 3, 128, 128) * 2 - 1
    small = torch.nn.functional.interpolate(big, size=(32, 32), mode="area")
    assert torch.allclose(scorer.logits(big), scorer.logits(small), atol=1e-5)
    assert scorer.logits(torch.rand(2, 3, 16, 16)).shape == (2, 3)
    assert scorer.logits(torch.zeros(0, 3, 32, 32)).shape == (0, 3)


def test_calibration_divides_logits_by_the_temperature():
    scorer = tiny_scorer(temperature=3.0)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    logits = scorer.logits(images)
    assert torch.allclose(scorer.probabilities(images), torch.sigmoid(logits / 3.0))
    assert torch.allclose(scorer.probabilities(images, calibrated=False), torch.sigmoid(logits))


def test_wrong_kind_of_file_names_its_keys(tmp_path):
    path = tmp_path / "g.pt"
    torch.save({"g": {}, "d": {}, "g_ema": {}}, path)
    with pytest.raises(CheckpointError, match=r"not an attribute classifier.*'g_ema'"):
        AttributeScorer.load(path)
    with pytest.raises(FileNotFoundError):
        AttributeScorer.load(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        AttributeScorer.load(garbage)
    broken = tiny_scorer().to_checkpoint()
    broken["arch"] = {**ARCH, "width": 16}
    torch.save(broken, tmp_path / "misfit.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        AttributeScorer.load(tmp_path / "misfit.pt")
