"""FFHQ alignment against golden outputs of the real recipe (see tests/fixtures/ffhq/README.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignment.ffhq import Alignment, align, align_face, ffhq_quad, recreate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ffhq"
EXACT = 4096  # FFHQ's transform_size


def psnr(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    assert x.shape == y.shape
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def astronaut_image() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def tom_hanks_image() -> Image.Image:
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("insightface's test photo is not installed")
    path = Path(spec.submodule_search_locations[0]) / "data" / "images" / "Tom_Hanks_54745.png"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return Image.open(path).convert("RGB")


def astronaut_x3() -> tuple[Image.Image, np.ndarray]:
    """The upscaled astronaut that makes the recipe shrink (as in the fixture README)."""
    small = astronaut_image()
    big = small.resize((small.width * 3, small.height * 3), Image.Resampling.LANCZOS)
    return big, np.load(FIXTURES / "astronaut_landmarks.npy") * 3 + 1


CASES = {
    "astronaut": (astronaut_image, "astronaut_landmarks.npy", "astronaut_ref256.png", 256),
    "tom_hanks": (tom_hanks_image, "tom_hanks_landmarks.npy", "tom_hanks_ref256.png", 256),
}


def load_case(name: str) -> tuple[Image.Image, np.ndarray, Image.Image, int]:
    if name == "astronaut_x3":
        image, landmarks = astronaut_x3()
        return image, landmarks, Image.open(FIXTURES / "astronaut_x3_ref128.png"), 128
    loader, lm_file, ref_file, size = CASES[name]
    return loader(), np.load(FIXTURES / lm_file), Image.open(FIXTURES / ref_file), size


@pytest.fixture(scope="module")
def exact_results() -> dict[str, Alignment]:
    """Each exact-path alignment computed once (a 4096 px warp costs ~0.5 s)."""
    return {}


def exact(name: str, cache: dict[str, Alignment]) -> Alignment:
    if name not in cache:
        image, landmarks, _, size = load_case(name)
        cache[name] = align(image, landmarks, size, transform_size=EXACT)
    return cache[name]


def to_output(alignment: Alignment, points: np.ndarray) -> np.ndarray:
    """Source pixel coordinates -> output pixel coordinates through the inverse of `transform`."""
    inv = np.linalg.inv(alignment.transform)
    pts = np.c_[np.asarray(points, dtype=np.float64), np.ones(len(points))] @ inv.T
    return pts[:, :2] / pts[:, 2:]


def canonical_eyes(eye_left: np.ndarray, eye_right: np.ndarray, mouth_avg: np.ndarray, size: int) -> np.ndarray:
    """Where the recipe puts the eye centres, in output pixel indices, derived from its quad formula.

    The quad is centred on c = eye_avg + 0.1 eye_to_mouth with half side s along x_hat / y_hat, so a point p
    lands at size/2 + size/(2 s) * ((p - c) . x_hat, (p - c) . y_hat) in continuous output coordinates.
    """
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth_avg - eye_avg
    direction = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])  # eye_to_eye - rot90(eye_to_mouth)
    x_hat = direction / np.linalg.norm(direction)
    y_hat = np.array([-x_hat[1], x_hat[0]])
    s = max(2.0 * np.linalg.norm(eye_to_eye), 1.8 * np.linalg.norm(eye_to_mouth))
    c = eye_avg + 0.1 * eye_to_mouth
    rel = np.stack([eye_left, eye_right]) - c
    return size / 2 + size / (2 * s) * np.c_[rel @ x_hat, rel @ y_hat] - 0.5


# ----------------------------------------------------------------------------------------------------------
# Against the golden reference


@pytest.mark.parametrize("name", ["astronaut", "tom_hanks", "astronaut_x3"])
def test_exact_path_matches_reference(name: str, exact_results: dict[str, Alignment]) -> None:
    _, _, reference, size = load_case(name)
    result = exact(name, exact_results)
    assert result.image.size == (size, size) and result.image.mode == "RGB"
    assert psnr(result.image, reference.convert("RGB")) >= 40.0


@pytest.mark.parametrize("name", ["astronaut", "tom_hanks", "astronaut_x3"])
def test_fast_path_matches_reference(name: str) -> None:
    image, landmarks, reference, size = load_case(name)
    result = align(image, landmarks, size)  # transform_size=None: the fast path
    assert result.image.size == (size, size) and result.image.mode == "RGB"
    assert psnr(result.image, reference.convert("RGB")) >= 35.0


def test_align_face_defaults_to_exact_recipe(exact_results: dict[str, Alignment]) -> None:
    image, landmarks, _, _ = load_case("astronaut")
    crop = align_face(image, landmarks)
    assert np.array_equal(np.asarray(crop), np.asarray(exact("astronaut", exact_results).image))


# ----------------------------------------------------------------------------------------------------------
# Geometry


def blob_face(size: int = 400) -> tuple[Image.Image, np.ndarray]:
    """A grey canvas with dark Gaussian dots on the eyes of an upright synthetic 5-point face."""
    points = np.array([[160.0, 180.0], [240.0, 180.0], [200.0, 225.0], [170.0, 270.0], [230.0, 270.0]])
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    canvas = np.full((size, size), 200.0)
    for ex, ey in points[:2]:
        canvas -= 150.0 * np.exp(-((xx - ex) ** 2 + (yy - ey) ** 2) / (2 * 3.0**2))
    return Image.fromarray(np.uint8(np.rint(canvas))).convert("RGB"), points


def dot_centroid(image: Image.Image, near: np.ndarray, radius: int = 8) -> np.ndarray:
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    x0, y0 = round(near[0]) - radius, round(near[1]) - radius
    window = grey[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1]
    weight = np.clip(np.median(grey) - window, 0, None)
    yy, xx = np.mgrid[:window.shape[0], :window.shape[1]]
    return np.array([(weight * xx).sum() / weight.sum() + x0, (weight * yy).sum() / weight.sum() + y0])


@pytest.mark.parametrize("transform_size", [EXACT, None])
def test_upright_face_eyes_land_at_canonical_positions(transform_size: int | None) -> None:
    image, points = blob_face()
    size = 256
    result = align(image, points, size, transform_size=transform_size)
    # Upright: eye_to_eye = (e, 0), eye_to_mouth = (0, d), half side s = max(2e, 1.8d); the eyes sit at
    # x = size (1/2 -+ e / (4 s)), y = size (1/2 - 0.05 d / s) in continuous output coordinates.
    e, d = 80.0, 90.0
    s = max(2 * e, 1.8 * d)
    expected = np.array([[size * (0.5 - e / (4 * s)), size * (0.5 - 0.05 * d / s)],
                         [size * (0.5 + e / (4 * s)), size * (0.5 - 0.05 * d / s)]]) - 0.5
    assert np.allclose(expected, canonical_eyes(points[0], points[1], points[3:].mean(0), size))
    assert np.allclose(to_output(result, points[:2]), expected, atol=1e-6)
    # ... and the pixels agree with `transform`: the dark dots are found where it says.
    for centre in expected:
        assert np.allclose(dot_centroid(result.image, centre), centre, atol=0.3)


@pytest.mark.parametrize("name", ["astronaut", "tom_hanks"])
def test_real_eyes_map_to_canonical_positions(name: str) -> None:
    image, landmarks, _, size = load_case(name)
    result = align(image, landmarks, size)
    eyes = np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0)])
    expected = canonical_eyes(eyes[0], eyes[1], (landmarks[48] + landmarks[54]) / 2, size)
    assert np.allclose(to_output(result, eyes), expected, atol=1e-6)


@pytest.mark.parametrize("transform_size", [EXACT, None])
def test_transform_maps_output_corners_to_quad(transform_size: int | None,
                                               exact_results: dict[str, Alignment]) -> None:
    image, landmarks, _, size = load_case("astronaut")
    result = exact("astronaut", exact_results) if transform_size else align(image, landmarks, size)
    edge = size - 0.5  # outer corners of the corner pixels, in pixel-index coordinates
    corners = np.array([[-0.5, -0.5], [-0.5, edge], [edge, edge], [edge, -0.5]])
    mapped = np.c_[corners, np.ones(4)] @ result.transform.T
    assert np.allclose(mapped[:, 2], 1.0)
    assert np.allclose(mapped[:, :2], result.quad, atol=1e-9)
    assert np.allclose(result.quad, ffhq_quad(landmarks))


def test_transform_with_shrink_stays_within_half_a_source_pixel(exact_results: dict[str, Alignment]) -> None:
    """The recipe shrinks by an integer and ignores the half-pixel offset; `transform` tells the truth."""
    result = exact("astronaut_x3", exact_results)  # shrink = 2: offset (2 - 1) / 2 source px
    edge = 128 - 0.5
    corners = np.array([[-0.5, -0.5], [-0.5, edge], [edge, edge], [edge, -0.5]])
    mapped = (np.c_[corners, np.ones(4)] @ result.transform.T)[:, :2]
    assert np.abs(mapped - result.quad).max() <= 0.51


def test_recreate_matches_align_at_another_resolution() -> None:
    image, landmarks, _, _ = load_case("astronaut")
    saved = align(image, landmarks, 256)
    again = recreate(image, saved.quad, 128)
    direct = align(image, landmarks, 128)
    assert again.size == (128, 128)
    assert np.array_equal(np.asarray(again), np.asarray(direct.image))
    # The 128 px crop is the 256 px crop at half the resolution.
    halved = saved.image.resize((128, 128), Image.Resampling.LANCZOS)
    assert psnr(again, halved) >= 30.0


def test_recreate_rejects_a_non_square_quad() -> None:
    with pytest.raises(ValueError, match="parallelogram"):
        recreate(astronaut_image(), np.array([[0.0, 0], [0, 100], [120, 100], [100, 0]]), 64)


# ----------------------------------------------------------------------------------------------------------
# 5-point input


def test_five_points_with_68_point_means_give_the_same_quad() -> None:
    lm = np.load(FIXTURES / "astronaut_landmarks.npy")
    five = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    assert np.allclose(ffhq_quad(five), ffhq_quad(lm))


@pytest.mark.parametrize("name", ["astronaut", "tom_hanks"])
def test_five_point_detector_crop_is_close_to_68_point_crop(name: str) -> None:
    image, lm, _, size = load_case(name)
    # A detector's eye point is a pupil, not the 6-point mean: take the middle of the eye corners.
    five = np.stack([(lm[36] + lm[39]) / 2, (lm[42] + lm[45]) / 2, lm[30], lm[48], lm[54]])
    from68 = align(image, lm, size)
    from5 = align(image, five, size)
    assert psnr(from5.image, from68.image) > 20.0
    eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
    assert np.abs(to_output(from5, eyes) - to_output(from68, eyes)).max() < 4.0


# ----------------------------------------------------------------------------------------------------------
# Padding


def test_padded_fraction_is_zero_for_a_centred_face(exact_results: dict[str, Alignment]) -> None:
    image, landmarks, _, size = load_case("astronaut")
    assert exact("astronaut", exact_results).padded_fraction < 0.01
    assert align(image, landmarks, size).padded_fraction < 0.01


def test_face_at_the_border_is_padded_and_counted() -> None:
    image, landmarks, _, _ = load_case("astronaut")
    left = 200  # cuts through the face: the crop runs off the image's left edge
    cropped = image.crop((left, 0, image.width, image.height))
    shifted = landmarks - [left, 0]
    fast = align(cropped, shifted, 256)
    exact_ = align(cropped, shifted, 256, transform_size=EXACT)
    assert 0.2 < fast.padded_fraction < 0.6
    assert fast.padded_fraction == pytest.approx(exact_.padded_fraction)
    assert psnr(fast.image, exact_.image) >= 35.0
    # The padded band is filled (reflect, blur, median), not black; without padding it is black.
    band = np.asarray(fast.image)[:, :40].astype(np.float64)
    assert band.mean() > 60
    bare = align(cropped, shifted, 256, enable_padding=False)
    assert np.asarray(bare.image)[:, :40].mean() < 5
    assert bare.padded_fraction == pytest.approx(fast.padded_fraction)


# ----------------------------------------------------------------------------------------------------------
# Input validation


@pytest.mark.parametrize("bad", [np.zeros((3, 2)), np.zeros((68, 3)), np.zeros(136), np.zeros((5, 2, 1)),
                                 np.array([["a", "b"]] * 5)])
def test_bad_landmark_shapes_raise(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="landmarks"):
        align(astronaut_image(), bad)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_landmarks_raise(value: float) -> None:
    lm = np.load(FIXTURES / "astronaut_landmarks.npy")
    lm[40, 1] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        ffhq_quad(lm)
    with pytest.raises(ValueError):
        align_face(astronaut_image(), lm)


def test_degenerate_landmarks_raise() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        ffhq_quad(np.ones((5, 2)))


@pytest.mark.parametrize("transform_size", [EXACT, None])
def test_face_outside_the_image_raises(transform_size: int | None) -> None:
    lm = np.load(FIXTURES / "astronaut_landmarks.npy") + [700, 0]
    with pytest.raises(ValueError, match="outside the image"):
        align(astronaut_image(), lm, 64, transform_size=transform_size)


def test_transform_size_below_output_size_raises() -> None:
    lm = np.load(FIXTURES / "astronaut_landmarks.npy")
    with pytest.raises(ValueError, match="transform_size"):
        align(astronaut_image(), lm, 256, transform_size=128)


def test_non_rgb_input_is_converted() -> None:
    image, landmarks, _, _ = load_case("astronaut")
    rgba = align(image.convert("RGBA"), landmarks, 64)
    grey = align(image.convert("L"), landmarks, 64)
    assert rgba.image.mode == grey.image.mode == "RGB"
    assert np.array_equal(np.asarray(rgba.image), np.asarray(align(image, landmarks, 64).image))
    assert rgba.transform.shape == (3, 3) and rgba.quad.shape == (4, 2)
