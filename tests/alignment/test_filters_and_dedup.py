from __future__ import annotations

import dataclasses
import importlib.util
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from alignment.dedup import FaceDescriber, hamming, identity_clusters, near_duplicate_groups, perceptual_hash
from alignment.detect import LandmarkPredictor, make_detector
from alignment.filters import FaceQuality, FilterRules, estimate_pose, judge, measure

FRONTAL = np.array([[100, 100], [160, 100], [130, 139], [108, 160], [152, 160]], dtype=float)


def rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    centre = points.mean(0)
    return (points - centre) @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]).T + centre


@pytest.fixture(scope="module")
def astronaut_face() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[40:200, 150:300])


def test_pose_from_five_points() -> None:
    yaw, pitch, roll = estimate_pose(FRONTAL)
    assert abs(yaw) < 3 and abs(pitch) < 5 and abs(roll) < 1e-6
    assert estimate_pose(rotate(FRONTAL, 30))[2] == pytest.approx(30, abs=1e-6)
    turned = FRONTAL.copy()
    turned[2, 0] += 25
    assert estimate_pose(turned)[0] > 20
    nodding = FRONTAL.copy()
    nodding[2, 1] += 20
    assert abs(estimate_pose(nodding)[1]) > 20


def test_a_clear_face_passes_and_each_rule_names_its_failure(astronaut_face: np.ndarray) -> None:
    rules = FilterRules()
    good = measure(astronaut_face, FRONTAL, det_score=0.99, align_confidence=0.8, padded_fraction=0.0)
    assert judge(good, rules) is None
    blurred = measure(cv2.GaussianBlur(astronaut_face, (0, 0), 6), FRONTAL, 0.99, 0.8, 0.0)
    assert judge(blurred, rules) == "blurry"
    grey = np.repeat(cv2.cvtColor(astronaut_face, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert judge(measure(grey, FRONTAL, 0.99, 0.8, 0.0), rules) == "grayscale"
    assert judge(measure(astronaut_face, FRONTAL / 4, 0.99, 0.8, 0.0), rules) == "too_small"
    assert judge(measure(astronaut_face, rotate(FRONTAL, 60), 0.99, 0.8, 0.0), rules) == "pose_roll"
    variants = {
        "low_det_score": {"det_score": 0.5},
        "low_align_confidence": {"align_confidence": 0.1},
        "pose_yaw": {"yaw": 70.0},
        "pose_pitch": {"pitch": -50.0},
        "too_much_padding": {"padded_fraction": 0.6},
    }
    for reason, change in variants.items():
        assert judge(dataclasses.replace(good, **change), rules) == reason
    assert set(good.to_dict()) == {f.name for f in dataclasses.fields(FaceQuality)}


def test_flipped_recompressed_and_resized_copies_are_near_duplicates(astronaut_face: np.ndarray) -> None:
    original = Image.fromarray(astronaut_face)
    buffer = io.BytesIO()
    original.save(buffer, "JPEG", quality=35)
    copies = [original.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.open(buffer),
              original.resize((75, 80)).resize(original.size)]
    reference = perceptual_hash(original)
    for copy in copies:
        assert hamming(perceptual_hash(copy), reference) <= 6
    folder = Path(importlib.util.find_spec("insightface").submodule_search_locations[0]) / "data" / "images"
    other = perceptual_hash(Image.open(folder / "Tom_Hanks_54745.png").convert("RGB"))
    assert hamming(other, reference) > 10
    hashes = [reference, *map(perceptual_hash, copies), other]
    groups = near_duplicate_groups(hashes, max_distance=6)
    assert groups == [0, 0, 0, 0, 1]


def test_band_search_finds_exactly_the_pairs_within_distance() -> None:
    rng = np.random.default_rng(0)
    base = [int(rng.integers(0, 2**63)) for _ in range(30)]
    hashes = [f"{v:016x}" for v in base]
    hashes.append(f"{base[0] ^ 0b1011:016x}")  # distance 3 from the first
    hashes.append(f"{base[1] ^ ((1 << 40) - 1):016x}")  # distance 40 from the second
    groups = near_duplicate_groups(hashes, max_distance=4)
    brute = [[hamming(a, b) <= 4 for b in hashes] for a in hashes]
    for i in range(len(hashes)):
        for j in range(len(hashes)):
            if brute[i][j]:
                assert groups[i] == groups[j]
    assert groups[30] == groups[0] and groups[31] != groups[1]


def test_identity_clusters_keep_a_person_together_and_people_apart() -> None:
    from skimage import data

    folder = Path(importlib.util.find_spec("insightface").submodule_search_locations[0]) / "data" / "images"
    group = np.asarray(Image.open(folder / "t1.jpg").convert("RGB"))
    astronaut = data.astronaut()
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    detector, predictor, describer = make_detector("retinaface"), LandmarkPredictor(), FaceDescriber()
    descriptors = []
    for image in (group, astronaut, mirrored):
        for face in detector.detect(image):
            descriptors.append(describer.describe(image, face.box, predictor.predict(image, face.box)))
    labels = identity_clusters(descriptors)
    assert len(descriptors) == 8 and descriptors[0].shape == (128,)
    assert labels[6] == labels[7]  # the astronaut and her mirror image
    assert len(set(labels[:6])) == 6 and labels[6] not in labels[:6]
