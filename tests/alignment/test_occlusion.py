"""Occlusion-aware alignment: composited masks and sunglasses must not move the aligned crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from alignment.attributes import composite, make_template
from alignment.detect import LandmarkPredictor, make_detector
from alignment.ffhq import ffhq_quad
from alignment.landmarks import five_from_68, fuse
from alignment.occlusion import GLASSES_THRESHOLD, glasses_cover

OUTPUT = 256


@pytest.fixture(scope="module")
def models():
    return make_detector("retinaface"), LandmarkPredictor()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def estimate(image: np.ndarray, models) -> tuple[np.ndarray, np.ndarray, object]:
    detector, predictor = models
    face = detector.detect(image)[0]
    l68 = predictor.predict(image, face.box)
    return face.landmarks5, l68, fuse(face.landmarks5, l68, face.score, image=image)


def crop_shift(reference_quad: np.ndarray, quad: np.ndarray) -> float:
    """Largest displacement, in output pixels, of the crop's corners against the reference crop."""
    square = np.array([[0, 0], [0, OUTPUT], [OUTPUT, OUTPUT], [OUTPUT, 0]], dtype=np.float32)
    to_output = cv2.getPerspectiveTransform(reference_quad.astype(np.float32), square)
    moved = cv2.perspectiveTransform(quad.reshape(1, 4, 2).astype(np.float32), to_output)[0]
    return float(np.abs(moved - square).max())


# Disagreement between the two landmark sources is not always a usable occlusion cue: under sunglasses
# both place the eyes on the lenses alike, so fuse also looks at the image for a rim or lens below the eyes
# (alignment.occlusion) and then blends the two eye estimates. Measured shifts (fused / dlib-68 only /
# detector only, output px at 256): surgical mask 4.1/4.1/7.8, cloth mask 16.9/42.5/21.4, sunglasses
# 5.7/17.2/11.2, frame glasses 5.5/8.4/5.3. Under the cloth mask both sources also misplace the visible
# eyes (0.25 IOD for dlib); that is the open part of issue 4.
NOT_YET = pytest.mark.xfail(strict=True, reason="occlusion fallback not accurate enough yet (issue 4)")


@pytest.mark.parametrize("template_name", [
    "surgical_mask",
    pytest.param("cloth_mask", marks=NOT_YET),
    "sunglasses",
    "frame_glasses",
])
def test_aligned_crop_stays_put_under_an_attribute(template_name: str, astronaut: np.ndarray, models) -> None:
    _, clean68, _ = estimate(astronaut, models)
    reference = ffhq_quad(five_from_68(clean68))
    covered, _ = composite(Image.fromarray(astronaut), clean68, make_template(template_name))
    det5, l68, fused = estimate(np.asarray(covered), models)
    shift = crop_shift(reference, ffhq_quad(fused.points5))
    assert shift <= 8.0, (template_name, shift, fused.sources)
    # the fused estimate is never worse than trusting dlib's 68 points alone
    assert shift <= crop_shift(reference, ffhq_quad(five_from_68(l68))) + 0.5
    assert 0 < fused.confidence <= 1


def test_confidence_and_sources_record_the_occlusion(astronaut: np.ndarray, models) -> None:
    _, clean68, clean = estimate(astronaut, models)
    covered, _ = composite(Image.fromarray(astronaut), clean68, make_template("cloth_mask"))
    _, _, fused = estimate(np.asarray(covered), models)
    assert "detector" in fused.sources.values()  # the sources disagreed and the detector was used
    record = fused.sources_json()
    assert set(record) == {"sources", "disagreement_iod", "occlusion"} and set(record["sources"]) == set(fused.sources)
    assert record["occlusion"]["glasses"] < GLASSES_THRESHOLD and "blend" not in fused.sources.values()
    assert fused.confidence < clean.confidence / 2
    assert clean.occlusion["glasses"] < GLASSES_THRESHOLD and set(clean.sources.values()) <= {"dlib68", "detector"}


@pytest.mark.parametrize("template_name", ["sunglasses", "frame_glasses"])
def test_glasses_are_seen_in_the_image(template_name: str, astronaut: np.ndarray, models) -> None:
    _, clean68, clean = estimate(astronaut, models)
    covered, _ = composite(Image.fromarray(astronaut), clean68, make_template(template_name))
    det5, l68, fused = estimate(np.asarray(covered), models)
    assert fused.occlusion["glasses"] >= GLASSES_THRESHOLD
    assert fused.sources["left_eye"] == fused.sources["right_eye"] == "blend"
    np.testing.assert_allclose(fused.points5[:2], (five_from_68(l68)[:2] + det5[:2]) / 2)
    assert fused.sources_json()["sources"] == fused.sources
    assert fused.confidence < clean.confidence * 0.75
    # without the image only disagreement is used: no blend
    assert "blend" not in fuse(det5, l68).sources.values() and not fuse(det5, l68).occlusion


def test_glasses_cover_is_zero_for_degenerate_eyes() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    assert glasses_cover(image, np.array([10.0, 10.0]), np.array([11.0, 10.0])) == 0.0
    assert glasses_cover(image, np.array([-500.0, -500.0]), np.array([-400.0, -500.0])) == 0.0
