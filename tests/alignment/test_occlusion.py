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
    return face.landmarks5, l68, fuse(face.landmarks5, l68, face.score)


def crop_shift(reference_quad: np.ndarray, quad: np.ndarray) -> float:
    """Largest displacement, in output pixels, of the crop's corners against the reference crop."""
    square = np.array([[0, 0], [0, OUTPUT], [OUTPUT, OUTPUT], [OUTPUT, 0]], dtype=np.float32)
    to_output = cv2.getPerspectiveTransform(reference_quad.astype(np.float32), square)
    moved = cv2.perspectiveTransform(quad.reshape(1, 4, 2).astype(np.float32), to_output)[0]
    return float(np.abs(moved - square).max())


# Disagreement between the two landmark sources is not always a usable occlusion cue: under sunglasses
# both place the eyes on the lenses alike. Measured shifts (fused / dlib-68 only / detector only, output
# px at 256): surgical mask 4.1/4.1/7.8, cloth mask 16.9/42.5/21.4, sunglasses 17.2/17.2/11.2, frame
# glasses 8.4/8.4/5.3. An image-based occlusion cue is the open part of issue 4.
NOT_YET = pytest.mark.xfail(strict=True, reason="occlusion fallback not accurate enough yet (issue 4)")


@pytest.mark.parametrize("template_name", [
    "surgical_mask",
    pytest.param("cloth_mask", marks=NOT_YET),
    pytest.param("sunglasses", marks=NOT_YET),
    pytest.param("frame_glasses", marks=NOT_YET),
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
    assert set(record) == {"sources", "disagreement_iod"} and set(record["sources"]) == set(fused.sources)
    assert fused.confidence < clean.confidence / 2
