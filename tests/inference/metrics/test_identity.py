"""Identity metrics on real FFHQ-aligned faces (tests/fixtures/ffhq): dlib's descriptor distance with detected or
canonical landmarks, and ArcFace cosine from an arcface_torch state dict (a tiny random IResNet) or any embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.metrics.identity import (
    DLIB_SAME_PERSON,
    ArcFaceCosine,
    DlibIdentity,
    arcface_cosine,
    arcface_identity,
)
from inference.metrics.skipped import Skipped
from training.fusion.identity import IResNet, IResNetShape

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ffhq"


def face(name: str, size: int = 256) -> np.ndarray:
    image = Image.open(FIXTURES / f"{name}_ref256.png").convert("RGB")
    return np.asarray(image if size == 256 else image.resize((size, size), Image.LANCZOS))


def noisy(image: np.ndarray, seed: int, amount: float = 6.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, amount, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def dlib_identity() -> DlibIdentity:
    return DlibIdentity(detector="dlib-hog")


def test_same_face_zero_other_face_far(dlib_identity: DlibIdentity) -> None:
    astronaut, hanks = face("astronaut"), face("tom_hanks")
    result = dlib_identity.distances([astronaut, astronaut, astronaut], [astronaut, noisy(astronaut, 0), hanks])
    same, slightly_changed, other = result.distance
    assert same == 0.0
    assert slightly_changed < 0.25 < DLIB_SAME_PERSON < other
    assert result.origin_detected.all() and result.edit_detected.all() and result.landmarks_from == "origin"
    summary = result.to_dict()
    assert summary["origin_detected"] == 3 and summary["same_person_rate"] == pytest.approx(2 / 3)
    # float images in [-1, 1] give the same numbers as their uint8 pixels
    as_float = torch.from_numpy(np.stack([astronaut, hanks])).permute(0, 3, 1, 2).float() / 127.5 - 1
    from_float = dlib_identity.distances(as_float[:1], as_float[1:])
    assert from_float.distance[0] == pytest.approx(other, abs=1e-6)


def test_undetectable_faces_use_the_canonical_ffhq_landmarks(dlib_identity: DlibIdentity) -> None:
    """32 px is below what the detector finds: the faces are still compared, placed by FFHQ's canonical layout."""
    small = [face("astronaut", 32), face("tom_hanks", 32)]
    result = dlib_identity.distances(small, [small[0], small[1]])
    assert not result.origin_detected.any() and result.to_dict()["origin_detected"] == 0
    assert result.distance.tolist() == [0.0, 0.0]
    across = dlib_identity.distances(small[:1], small[1:])
    assert across.distance[0] > 0.1
    descriptors, detected = dlib_identity.descriptors(small)
    assert descriptors.shape == (2, 128) and not detected.any()
    assert np.linalg.norm(descriptors[0] - descriptors[1]) == pytest.approx(across.distance[0], rel=1e-6)


def test_landmarks_for_each_side(dlib_identity: DlibIdentity) -> None:
    """landmarks_from='each' fits the edit on its own: an edit without a face falls back to the canonical ones."""
    big = face("astronaut")
    blank = np.full_like(big, 128)  # no face to find
    result = dlib_identity.distances([big, big], [noisy(big, 1), blank], landmarks_from="each")
    assert result.origin_detected.tolist() == [True, True] and result.edit_detected.tolist() == [True, False]
    reference = dlib_identity.reference([big, big])  # computed once, compared with several methods' edits
    shared = dlib_identity.distances(reference, [noisy(big, 1), blank])
    assert shared.edit_detected.tolist() == [True, True]  # the origin's landmarks, and its detection, carry over
    assert dlib_identity.distances(reference, [big, big]).distance.tolist() == [0.0, 0.0]
    assert shared.distance[0] < 0.25 and result.distance[0] < 0.25
    with pytest.raises(ValueError, match="landmarks_from"):
        dlib_identity.distances([big], [big], landmarks_from="edit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1 origins but 2 edits"):
        dlib_identity.distances([big], [big, big])


def write_tiny_arcface(path: Path) -> Path:
    """A random IResNet saved as arcface_torch saves its backbones (a bare state dict)."""
    torch.manual_seed(0)
    net = IResNet(IResNetShape(stem=8, stages=((8, 1), (16, 1), (16, 1), (32, 1)), features=16))
    torch.save(net.state_dict(), path)
    return path


def test_arcface_cosine_from_a_weights_path(tmp_path: Path) -> None:
    faces = torch.from_numpy(np.stack([face("astronaut", 128), face("tom_hanks", 128)])).permute(0, 3, 1, 2)
    scorer = ArcFaceCosine(write_tiny_arcface(tmp_path / "backbone.pth"), batch_size=1)
    same = scorer(faces, faces)  # uint8 NCHW is accepted and mapped to [-1, 1]
    torch.testing.assert_close(same, torch.ones(2, dtype=torch.float64))
    floats = faces.float() / 127.5 - 1
    crossed = arcface_identity(floats, floats.flip(0), str(tmp_path / "backbone.pth"))
    assert crossed.shape == (2,) and float(crossed[0]) < 1 - 1e-4
    assert float(crossed[0]) == pytest.approx(float(crossed[1]))  # cosine is symmetric
    skipped = arcface_identity(floats, floats, None)
    assert isinstance(skipped, Skipped) and "no ArcFace weights" in skipped.reason
    with pytest.raises(FileNotFoundError):
        arcface_identity(floats, floats, tmp_path / "missing.pth")


def test_any_embedder_is_a_recogniser() -> None:
    """The protocol is a callable images -> embeddings; the cosine is of the re-normalised embeddings."""
    def embed(images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(images, 2).flatten(1) + 2.0

    a = torch.rand(5, 3, 8, 8) * 2 - 1
    b = torch.rand(5, 3, 8, 8) * 2 - 1
    expected = torch.nn.functional.cosine_similarity(embed(a), embed(b)).double()
    torch.testing.assert_close(arcface_cosine(embed, a, b, batch_size=2), expected)
    with pytest.raises(ValueError, match="differ in shape"):
        arcface_cosine(embed, a, b[:4])
