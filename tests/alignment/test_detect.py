"""Detectors and landmarks on the real faces available offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignment.detect import DETECTORS, Detection, LandmarkPredictor, as_rgb_array, make_detector
from alignment.landmarks import five_from_68, fuse, inter_ocular
from alignment.models import ModelNotFoundError


def insightface_image(name: str) -> np.ndarray:
    folder = Path(importlib.util.find_spec("insightface").submodule_search_locations[0]) / "data" / "images"
    return np.asarray(Image.open(folder / name).convert("RGB"))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def retinaface():
    return make_detector("retinaface")


def iou(a: tuple, b: tuple) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize(("image", "count"), [("astronaut", 1), ("t1.jpg", 6), ("Tom_Hanks_54745.png", 1)])
def test_retinaface_counts_and_landmark_sanity(image: str, count: int, astronaut: np.ndarray, retinaface) -> None:
    rgb = astronaut if image == "astronaut" else insightface_image(image)
    faces = retinaface.detect(rgb)
    assert len(faces) == count
    for face in faces:
        x0, y0, x1, y1 = face.box
        points = face.landmarks5
        assert face.score > 0.8 and points.shape == (5, 2)
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # image-left first
        assert max(points[0, 1], points[1, 1]) < min(points[3, 1], points[4, 1])  # eyes above the mouth
        margin = 0.1 * (x1 - x0)
        assert (points[:, 0] > x0 - margin).all() and (points[:, 0] < x1 + margin).all()
        assert (points[:, 1] > y0 - margin).all() and (points[:, 1] < y1 + margin).all()


def test_dlib_detectors_agree_with_retinaface(astronaut: np.ndarray, retinaface) -> None:
    reference = retinaface.detect(astronaut)[0].box
    hog = make_detector("dlib-hog").detect(astronaut)
    assert hog and iou(hog[0].box, reference) > 0.4 and hog[0].landmarks5 is None
    small = np.asarray(Image.fromarray(astronaut).resize((256, 256)))  # the CNN is slow on CPU
    cnn = make_detector("dlib-cnn").detect(small)
    assert cnn and iou(tuple(v * 2 for v in cnn[0].box), reference) > 0.4


def test_scrfd_without_a_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="needs model_dir"):
        make_detector("scrfd")
    with pytest.raises(ModelNotFoundError, match="no SCRFD model"):
        make_detector("scrfd", model_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("mtcnn")
    assert DETECTORS == ("retinaface", "dlib-hog", "dlib-cnn", "scrfd")


def test_68_landmarks_agree_with_the_detector_on_a_clear_face(astronaut: np.ndarray, retinaface) -> None:
    face = retinaface.detect(astronaut)[0]
    l68 = LandmarkPredictor().predict(astronaut, face.box)
    assert l68.shape == (68, 2)
    assert l68[36:48, 1].mean() < l68[48:68, 1].mean()  # eyes above the mouth
    fused = fuse(face.landmarks5, l68, face.score)
    assert set(fused.sources.values()) == {"dlib68"}  # nothing occluded: FFHQ's own definition wins
    assert fused.confidence > 0.4
    np.testing.assert_allclose(fused.points5, five_from_68(l68))


def test_fusion_falls_back_to_the_detector_where_sources_disagree() -> None:
    detector = np.array([[100, 100], [160, 100], [130, 130], [108, 160], [152, 160]], dtype=float)
    l68 = np.zeros((68, 2))
    l68[36:42], l68[42:48], l68[30], l68[48], l68[54] = (100, 100), (160, 100), (130, 131), (108, 160), (152, 160)
    agree = fuse(detector, l68, 0.99)
    l68[48], l68[54] = (100, 190), (170, 185)  # a mask: dlib's mouth corners drift
    occluded = fuse(detector, l68, 0.99)
    assert occluded.sources["mouth_left"] == occluded.sources["mouth_right"] == "detector"
    assert occluded.sources["left_eye"] == "dlib68"
    np.testing.assert_allclose(occluded.points5[3:], detector[3:])
    assert occluded.confidence < agree.confidence
    assert occluded.disagreement["mouth_left"] > 0.3
    assert inter_ocular(detector) == 60


def test_bad_inputs_are_value_errors() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        as_rgb_array(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="68, 2"):
        five_from_68(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="need the detector"):
        fuse(None, None)
    assert isinstance(Detection((0, 0, 10, 20), 1.0).size, float)
