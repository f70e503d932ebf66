"""Occlusion-aware alignment: composited masks and sunglasses must not move the aligned crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from alignment.attributes import composite, make_template
from alignment.detect import LandmarkPredictor, make_detector
from alignment.ffhq import ffhq_quad
from alignment.landmarks import COVERED_CONFIDENCE, five_from_68, fuse
from alignment.occlusion import GLASSES_THRESHOLD, MASK_THRESHOLD, fill_skin, glasses_cover, mask_cover

OUTPUT = 256


@pytest.fixture(scope="module")
def models():
    return make_detector("retinaface"), LandmarkPredictor()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def estimate(image: np.ndarray, models) -> tuple[np.ndarray, np.ndarray, object]:
    """As the align stage runs it: the detector's 5 points, dlib's 68, and fuse with the image and predictor."""
    detector, predictor = models
    face = detector.detect(image)[0]
    l68 = predictor.predict(image, face.box)
    repredict = lambda other: predictor.predict(other, face.box)  # noqa: E731
    return face.landmarks5, l68, fuse(face.landmarks5, l68, face.score, image=image, repredict=repredict)


def crop_shift(reference_quad: np.ndarray, quad: np.ndarray) -> float:
    """Largest displacement, in output pixels, of the crop's corners against the reference crop."""
    square = np.array([[0, 0], [0, OUTPUT], [OUTPUT, OUTPUT], [OUTPUT, 0]], dtype=np.float32)
    to_output = cv2.getPerspectiveTransform(reference_quad.astype(np.float32), square)
    moved = cv2.perspectiveTransform(quad.reshape(1, 4, 2).astype(np.float32), to_output)[0]
    return float(np.abs(moved - square).max())


# Disagreement between the two landmark sources is not always a usable occlusion cue: under sunglasses
# both place the eyes on the lenses alike, so fuse also looks at the image for a rim or lens below the eyes
# (alignment.occlusion) and then blends the two eye estimates; under a face mask dlib's whole shape is
# pulled, eyes included, so fuse finds the mask by its colour, paints it skin-coloured and takes dlib's
# eyes from a second prediction. Measured shifts (fused / dlib-68 only / detector only, output px at 256):
# surgical mask 1.2/4.1/7.8, cloth mask 6.5/42.5/21.4, sunglasses 5.7/17.2/11.2, frame glasses 5.5/8.4/5.3.
@pytest.mark.parametrize("template_name", ["surgical_mask", "cloth_mask", "sunglasses", "frame_glasses"])
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
    det5, l68, fused = estimate(np.asarray(covered), models)
    assert "detector" in fused.sources.values()  # the sources disagreed and the detector was used
    assert fused.sources["left_eye"] == fused.sources["right_eye"] == "inpainted"  # the mask was painted over
    record = fused.sources_json()
    assert set(record) == {"sources", "disagreement_iod", "occlusion"} and set(record["sources"]) == set(fused.sources)
    assert record["occlusion"]["glasses"] < GLASSES_THRESHOLD and "blend" not in fused.sources.values()
    assert record["occlusion"]["mask"] >= MASK_THRESHOLD and record["sources"]["left_eye"] == "inpainted"
    assert fused.confidence < clean.confidence / 2
    assert clean.occlusion["glasses"] < GLASSES_THRESHOLD and set(clean.sources.values()) <= {"dlib68", "detector"}
    assert clean.occlusion["mask"] < MASK_THRESHOLD
    # without a predictor to run again the mask is still seen (and costs confidence), the eyes are not redone
    plain = fuse(det5, l68, 1.0, image=np.asarray(covered))
    assert plain.occlusion["mask"] >= MASK_THRESHOLD and "inpainted" not in plain.sources.values()
    assert plain.confidence == pytest.approx(fuse(det5, l68, 1.0).confidence * COVERED_CONFIDENCE)
    # the re-prediction is given the image with the mask painted over, and only then
    seen: list[np.ndarray] = []
    fuse(det5, l68, 1.0, image=np.asarray(covered), repredict=lambda image: seen.append(image) or l68)
    assert len(seen) == 1 and not np.array_equal(seen[0], np.asarray(covered))
    fuse(det5, l68, 1.0, image=astronaut, repredict=lambda image: seen.append(image) or l68)
    assert len(seen) == 1


@pytest.fixture(scope="module")
def photo_faces(models) -> list[tuple[str, Image.Image, np.ndarray]]:
    """Every face of the offline demo photos (astronaut, t1's six, Tom Hanks) with its clean 68 points."""
    from alignment.demo_corpus import source_photos

    detector, predictor = models
    faces = []
    for name, photo, _ in source_photos():
        rgb = np.asarray(photo)
        faces += [(f"{name}#{i}", photo, predictor.predict(rgb, d.box)) for i, d in enumerate(detector.detect(rgb))]
    assert len(faces) == 8
    return faces


def test_masks_are_seen_in_the_image_and_nothing_else_is(photo_faces) -> None:
    for name, photo, clean68 in photo_faces:
        eyes = five_from_68(clean68)[:2]
        score, region = mask_cover(np.asarray(photo), *eyes)
        assert score < MASK_THRESHOLD and not region.any(), (name, "clean", score)
        for template_name in ("surgical_mask", "cloth_mask", "sunglasses", "frame_glasses"):
            covered, alpha = composite(photo, clean68, make_template(template_name))
            score, region = mask_cover(np.asarray(covered), *eyes)
            if template_name.endswith("_mask") and name != "tom_hanks_54745#0":  # a greyscale photo: no hue
                truth = alpha > 0.5
                overlap = (region & truth).sum() / (region | truth).sum()
                assert score >= MASK_THRESHOLD and overlap > 0.4, (name, template_name, score, overlap)
            else:
                assert score < MASK_THRESHOLD and not region.any(), (name, template_name, score)


def test_fill_skin_paints_only_the_region_and_mask_cover_degenerates_to_zero(astronaut: np.ndarray) -> None:
    region = np.zeros(astronaut.shape[:2], bool)
    region[150:200, 150:220] = True
    left, right = np.array([160.0, 100.0]), np.array([210.0, 100.0])
    filled = fill_skin(astronaut, region, left, right)
    assert filled.shape == astronaut.shape and filled.dtype == np.uint8
    assert np.array_equal(filled[:140], astronaut[:140]) and np.array_equal(filled[:, :140], astronaut[:, :140])
    inside = filled[160:190, 160:210].reshape(-1, 3)
    assert np.ptp(inside, axis=0).max() <= 1  # one flat colour
    assert np.array_equal(fill_skin(astronaut, np.zeros_like(region), left, right), astronaut)
    assert mask_cover(astronaut, left, np.array([162.0, 100.0]))[0] == 0.0  # eyes too close
    grey = np.repeat(astronaut.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    score, found = mask_cover(grey, left, right)  # no skin hue to compare with
    assert score == 0.0 and not found.any()


@pytest.mark.parametrize("template_name", ["sunglasses", "frame_glasses"])
def test_glasses_are_seen_in_the_image(template_name: str, astronaut: np.ndarray, models) -> None:
    _, clean68, clean = estimate(astronaut, models)
    covered, _ = composite(Image.fromarray(astronaut), clean68, make_template(template_name))
    det5, l68, fused = estimate(np.asarray(covered), models)
    assert fused.occlusion["glasses"] >= GLASSES_THRESHOLD
    assert fused.sources["left_eye"] == fused.sources["right_eye"] == "blend"
    np.testing.assert_allclose(fused.points5[:2], (five_from_68(l68)[:2] + det5[:2]) / 2)
    assert fused.sources_json()["sources"] == fused.sources
    assert fused.confidence < clean.confidence
    assert fused.confidence == pytest.approx(fuse(det5, l68, 1.0).confidence * COVERED_CONFIDENCE, rel=0.05)
    # without the image only disagreement is used: no blend
    assert "blend" not in fuse(det5, l68).sources.values() and not fuse(det5, l68).occlusion


def test_glasses_cover_is_zero_for_degenerate_eyes() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    assert glasses_cover(image, np.array([10.0, 10.0]), np.array([11.0, 10.0])) == 0.0
    assert glasses_cover(image, np.array([-500.0, -500.0]), np.array([-400.0, -500.0])) == 0.0
