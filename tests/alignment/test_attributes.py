"""Attribute templates and compositing, checked on a real face (scikit-image's astronaut, dlib landmarks)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from alignment.attributes import (ATTRIBUTES, GLASSES_ANCHORS, MASK_ANCHORS, TEMPLATE_NAMES, Template, composite,
                                  make_template, random_template, shadow_radius)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def landmarks(astronaut: np.ndarray) -> np.ndarray:
    """68 dlib landmarks of the most confident face (the predictor file ships in face_recognition_models;
    its package is located, not imported, because its __init__ needs pkg_resources)."""
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    assert spec is not None and spec.submodule_search_locations
    predictor = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    rects, scores, _ = dlib.get_frontal_face_detector().run(astronaut, 1, 0)
    assert len(rects) > 0
    shape = dlib.shape_predictor(str(predictor))(astronaut, rects[int(np.argmax(scores))])
    points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    assert points.shape == (68, 2)
    return points


@pytest.fixture(scope="module")
def templates() -> dict[str, Template]:
    return {name: make_template(name) for name in TEMPLATE_NAMES}


def eye_centres(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return lm[36:42].mean(0), lm[42:48].mean(0)


def alpha_at(mask: np.ndarray, point: np.ndarray) -> float:
    """Bilinear sample, so sub-pixel landmark positions are honoured."""
    return float(cv2.getRectSubPix(mask, (1, 1), (float(point[0]), float(point[1])))[0, 0])


def centroid_and_axis(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Alpha-weighted centroid and principal-axis angle (degrees, mod 180)."""
    ys, xs = np.nonzero(mask)
    w = mask[ys, xs].astype(np.float64)
    c = np.array([np.average(xs, weights=w), np.average(ys, weights=w)])
    dx, dy = xs - c[0], ys - c[1]
    cxx, cyy, cxy = np.average(dx * dx, weights=w), np.average(dy * dy, weights=w), np.average(dx * dy, weights=w)
    return c, math.degrees(0.5 * math.atan2(2 * cxy, cxx - cyy)) % 180.0


# ---------------------------------------------------------------------------------------------- templates


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_template_is_rgba_with_content_and_anchors_inside(name: str, templates: dict[str, Template]) -> None:
    t = templates[name]
    assert t.name == name and t.attribute in ATTRIBUTES
    assert t.rgba.dtype == np.uint8 and t.rgba.ndim == 3 and t.rgba.shape[2] == 4 and t.rgba.shape[1] == 512
    alpha = t.rgba[..., 3]
    assert alpha.max() >= 240 and alpha.min() == 0  # (nearly) opaque parts and a transparent surround
    assert 0.03 < (alpha > 0).mean() < 0.9
    assert ((alpha > 0) & (alpha < 255)).any()  # antialiased edges
    expected = MASK_ANCHORS if t.attribute == "face_mask" else GLASSES_ANCHORS
    assert set(expected) <= set(t.anchors)
    h, w = alpha.shape
    for x, y in t.anchors.values():
        assert 0 <= x <= w - 1 and 0 <= y <= h - 1
    assert not t.rgba.flags.writeable


def test_lens_opacity_in_the_templates(templates: dict[str, Template]) -> None:
    for name, low, high in (("sunglasses", 0.85, 1.0), ("frame_glasses", 0.03, 0.2)):
        t = templates[name]
        for key in ("left_eye", "right_eye"):
            x, y = t.anchors[key]
            assert low <= t.rgba[round(y), round(x), 3] / 255.0 <= high, (name, key)


def test_mask_anchors_sit_on_the_drawn_mask(templates: dict[str, Template]) -> None:
    for name in ("surgical_mask", "cloth_mask"):
        t = templates[name]
        x, y = t.anchors["chin"]
        assert t.rgba[round(y), round(x), 3] > 200
        x, y = t.anchors["nose_bridge"]
        assert t.rgba[round(y) + 3, round(x), 3] > 200 and t.rgba[round(y) - 6, round(x), 3] == 0


def test_colour_seed_and_size_vary_the_drawing() -> None:
    base = make_template("cloth_mask", size=128)
    assert make_template("cloth_mask", size=128, seed=1).rgba.tobytes() != base.rgba.tobytes()  # pattern
    red = make_template("cloth_mask", size=128, color=(200, 30, 30))
    opaque = red.rgba[..., 3] > 250
    assert red.rgba[opaque, 0].mean() > red.rgba[opaque, 2].mean() + 60
    small = make_template("sunglasses", size=128)
    assert small.rgba.shape[1] == 128 and small.anchors["left_eye"][0] < small.anchors["right_eye"][0]
    with pytest.raises(ValueError):
        make_template("beard")
    with pytest.raises(ValueError):
        make_template("sunglasses", color=(0, 0, 300))
    with pytest.raises(ValueError):
        make_template("sunglasses", size=8)


def test_random_template_is_reproducible_and_matches_attribute() -> None:
    for attribute in ATTRIBUTES:
        a = random_template(attribute, np.random.default_rng(7), size=96)
        b = random_template(attribute, np.random.default_rng(7), size=96)
        assert a.attribute == attribute and a.name == b.name
        assert np.array_equal(a.rgba, b.rgba)
    names = {random_template("face_mask", np.random.default_rng(s), size=96).name for s in range(8)}
    assert names == {"surgical_mask", "cloth_mask"}
    with pytest.raises(ValueError):
        random_template("hat", np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- placement


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_composite_keeps_size_and_returns_a_unit_mask(name: str, astronaut: np.ndarray, landmarks: np.ndarray,
                                                     templates: dict[str, Template]) -> None:
    out, mask = composite(astronaut, landmarks, templates[name])
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (512, 512)
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0 and mask.max() > 0.9


@pytest.mark.parametrize("name", ["surgical_mask", "cloth_mask"])
def test_face_mask_covers_mouth_and_chin_not_eyes(name: str, astronaut: np.ndarray, landmarks: np.ndarray,
                                                  templates: dict[str, Template]) -> None:
    _, mask = composite(astronaut, landmarks, templates[name])
    for i in (48, 54, 51, 57, 30):
        assert alpha_at(mask, landmarks[i]) > 0.9, i
    assert alpha_at(mask, (landmarks[57] + landmarks[8]) / 2) > 0.9
    assert alpha_at(mask, landmarks[8]) > 0.5
    for point in (*eye_centres(landmarks), *landmarks[36:48], *landmarks[17:27]):
        assert alpha_at(mask, point) < 0.02


def test_sunglasses_cover_the_eyes_not_the_mouth(astronaut: np.ndarray, landmarks: np.ndarray,
                                                 templates: dict[str, Template]) -> None:
    _, mask = composite(astronaut, landmarks, templates["sunglasses"])
    for centre in eye_centres(landmarks):
        assert alpha_at(mask, centre) > 0.8
    for i in (*range(36, 48),):
        assert alpha_at(mask, landmarks[i]) > 0.5, i
    assert all(alpha_at(mask, p) == 0.0 for p in landmarks[48:68])
    assert alpha_at(mask, landmarks[8]) == 0.0


def test_frame_glasses_leave_the_eyes_visible_inside_a_rim(astronaut: np.ndarray, landmarks: np.ndarray,
                                                           templates: dict[str, Template]) -> None:
    _, mask = composite(astronaut, landmarks, templates["frame_glasses"])
    left, right = eye_centres(landmarks)
    iod = float(np.hypot(*(right - left)))
    for centre in (left, right):
        assert alpha_at(mask, centre) < 0.25
        for angle in np.linspace(0.0, 2 * math.pi, 16, endpoint=False):  # every ray meets the rim
            direction = np.array([math.cos(angle), math.sin(angle)])
            ray = [alpha_at(mask, centre + r * direction) for r in np.arange(0.0, 0.8 * iod, 0.5)]
            assert max(ray) > 0.5, math.degrees(angle)
    assert all(alpha_at(mask, p) == 0.0 for p in landmarks[48:68])


def test_placement_follows_a_rotation(astronaut: np.ndarray, landmarks: np.ndarray,
                                      templates: dict[str, Template]) -> None:
    for name in ("surgical_mask", "sunglasses"):
        _, mask = composite(astronaut, landmarks, templates[name], shadow=False)
        rot = cv2.getRotationMatrix2D((255.5, 255.5), 20.0, 1.0)
        image_r = cv2.warpAffine(astronaut, rot, (512, 512), flags=cv2.INTER_LINEAR)
        landmarks_r = np.c_[landmarks, np.ones(68)] @ rot.T
        _, mask_r = composite(image_r, landmarks_r, templates[name], shadow=False)
        expected = cv2.warpAffine(mask, rot, (512, 512), flags=cv2.INTER_LINEAR)
        inter, union = np.minimum(expected, mask_r).sum(), np.maximum(expected, mask_r).sum()
        assert inter / union > 0.9, name
        c, axis = centroid_and_axis(mask)
        c_r, axis_r = centroid_and_axis(mask_r)
        assert np.allclose(rot @ [*c, 1.0], c_r, atol=1.5), name
        turn = (axis - axis_r) % 180.0  # cv2's positive angle turns counter-clockwise on screen (y down)
        assert min(abs(turn - 20.0), abs(turn - 200.0)) < 3.0, (name, axis, axis_r)
        assert abs(mask_r.sum() / mask.sum() - 1.0) < 0.03


def test_placement_follows_a_scale(astronaut: np.ndarray, landmarks: np.ndarray,
                                   templates: dict[str, Template]) -> None:
    for name in ("cloth_mask", "frame_glasses"):
        _, mask = composite(astronaut, landmarks, templates[name], shadow=False)
        half = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
        _, mask_h = composite(half, (landmarks + 0.5) * 0.5 - 0.5, templates[name], shadow=False)
        assert mask_h.shape == (256, 256)
        assert abs(mask_h.sum() / mask.sum() - 0.25) < 0.25 * 0.08, name
        c, _ = centroid_and_axis(mask)
        c_h, _ = centroid_and_axis(mask_h)
        assert np.allclose((c + 0.5) * 0.5 - 0.5, c_h, atol=1.0)


def test_placement_follows_yaw(astronaut: np.ndarray, landmarks: np.ndarray,
                               templates: dict[str, Template]) -> None:
    """A face turned so its image-right side recedes: the mask's right half must shrink, not just shift."""
    turned = landmarks.copy()
    mid = landmarks[27, 0]
    right = turned[:, 0] > mid
    turned[right, 0] = mid + 0.6 * (turned[right, 0] - mid)
    _, mask = composite(astronaut, turned, templates["surgical_mask"], shadow=False)
    left_area = mask[:, : round(mid)].sum()
    right_area = mask[:, round(mid):].sum()
    assert right_area < 0.8 * left_area
    nose_column = np.nonzero(mask[:, round(turned[28, 0])] > 0.5)[0]  # anchors still land on their targets
    assert abs(nose_column.min() - turned[28, 1]) <= 2 and 0 <= nose_column.max() - turned[8, 1] <= 6
    assert abs(np.nonzero(mask[round(turned[14, 1])] > 0.5)[0].max() - turned[14, 0]) <= 3


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_pixels_beyond_attribute_and_shadow_are_untouched(name: str, astronaut: np.ndarray, landmarks: np.ndarray,
                                                          templates: dict[str, Template]) -> None:
    out, mask = composite(astronaut, landmarks, templates[name], shadow=True)
    changed = np.any(np.asarray(out) != astronaut, axis=2)
    outside = (mask <= 0.0).astype(np.uint8)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
    assert changed.any()
    assert not (changed & (distance > shadow_radius(landmarks))).any()
    shadowed = changed & (mask <= 0.0)  # the soft shadow darkens just outside the attribute
    assert shadowed.any()
    assert np.asarray(out)[shadowed].astype(int).sum() < astronaut[shadowed].astype(int).sum()
    plain, _ = composite(astronaut, landmarks, templates[name], shadow=False)
    assert not (np.any(np.asarray(plain) != astronaut, axis=2) & (mask <= 0.0)).any()


def test_bad_inputs_raise_value_error(astronaut: np.ndarray, landmarks: np.ndarray,
                                      templates: dict[str, Template]) -> None:
    t = templates["sunglasses"]
    nan = landmarks.copy()
    nan[10, 0] = np.nan
    inf = landmarks.copy()
    inf[40, 1] = np.inf
    for bad in (landmarks[:67], landmarks.T, landmarks[:, :1], nan, inf, np.zeros((68, 2)), "face"):
        with pytest.raises(ValueError):
            composite(astronaut, bad, t)
    for bad_image in (astronaut.astype(np.float32), astronaut[..., :2], np.zeros((4, 4, 4, 3), np.uint8), [1, 2]):
        with pytest.raises(ValueError):
            composite(bad_image, landmarks, t)
    with pytest.raises(ValueError):
        composite(astronaut, landmarks, "sunglasses")  # type: ignore[arg-type]


def test_input_forms_and_determinism(astronaut: np.ndarray, landmarks: np.ndarray,
                                     templates: dict[str, Template]) -> None:
    t = templates["surgical_mask"]
    out_a, mask_a = composite(astronaut, landmarks, t)
    out_b, mask_b = composite(Image.fromarray(astronaut), landmarks.astype(np.int64), t)
    assert np.array_equal(np.asarray(out_a), np.asarray(out_b)) and np.array_equal(mask_a, mask_b)
    again = make_template("surgical_mask")
    assert np.array_equal(again.rgba, t.rgba) and again.anchors == t.anchors
    grey, _ = composite(astronaut[..., 0], landmarks, t)
    assert grey.mode == "RGB" and grey.size == (512, 512)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert np.array_equal(np.asarray(composite(rgba, landmarks, t)[0]), np.asarray(out_a))


def test_random_templates_composite(astronaut: np.ndarray, landmarks: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    for attribute in ATTRIBUTES:
        t = random_template(attribute, rng, size=256)
        _, mask = composite(astronaut, landmarks, t)
        assert mask.max() > 0.9
        eye = max(alpha_at(mask, c) for c in eye_centres(landmarks))
        if attribute == "face_mask":
            assert eye < 0.02 and alpha_at(mask, landmarks[51]) > 0.9
        elif attribute == "sunglasses":
            assert eye > 0.8
