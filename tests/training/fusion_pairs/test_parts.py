"""The pieces of fusion-pairs on their own: FFHQ canonical landmarks and the detector check, template PNG anchors,
placement, the member-shard writer, and the config's copies of other packages' names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_catalog.shards import read_stats, stats_path, write_member_shard
from data_catalog.tar_reader import group_samples, iter_members
from training.fusion_pairs.landmarks import CANONICAL, DETECTED, LandmarkFinder, ffhq_landmarks, plausible
from training.fusion_pairs.templates import TemplateError, glasses_anchors, mask_anchors, png_template


# ---------------------------------------------------------------------------------------------- landmarks
def test_ffhq_canonical_landmarks_sit_where_ffhq_puts_eyes_and_mouth() -> None:
    lm = ffhq_landmarks(1024) + 0.5  # pixel edges, to compare with FFHQ's layout
    np.testing.assert_allclose(lm[36:42].mean(0), [384, 484], atol=2)
    np.testing.assert_allclose(lm[42:48].mean(0), [640, 484], atol=2)
    np.testing.assert_allclose(lm[[48, 54]].mean(0), [512, 763], atol=2)
    np.testing.assert_allclose(ffhq_landmarks(32), (ffhq_landmarks(1024) + 0.5) / 32 - 0.5, atol=1e-4)
    assert ffhq_landmarks(32).dtype == np.float32


def test_plausible_refuses_faces_away_from_the_ffhq_position() -> None:
    canonical = ffhq_landmarks(256)
    assert plausible(canonical + 5, canonical, 0.5)
    assert not plausible(canonical + [60, 0], canonical, 0.5)  # about one eye distance to the side
    assert not plausible(np.full((68, 2), np.nan), canonical, 0.5)


@pytest.fixture(scope="module")
def aligned_face() -> np.ndarray:
    """scikit-image's astronaut, FFHQ-aligned at 256 px by the alignment package: what a generator draws."""
    import skimage.data

    from alignment.detect import LandmarkPredictor, make_detector
    from alignment.ffhq import align

    photo = skimage.data.astronaut()
    box = make_detector("retinaface").detect(photo)[0].box
    return np.asarray(align(Image.fromarray(photo), LandmarkPredictor().predict(photo, box), 256).image)


def test_an_aligned_face_is_detected_and_a_misplaced_one_falls_back(aligned_face: np.ndarray) -> None:
    finder = LandmarkFinder("retinaface", 256)
    found = finder.find(aligned_face)
    assert found.source == DETECTED and found.landmarks.dtype == np.float32
    assert np.abs(found.landmarks - ffhq_landmarks(256)).mean() < 8  # the canonical positions are a fair stand-in
    shifted = np.roll(aligned_face, 100, axis=1)  # the face is found, but not where an aligned face is
    fallback = finder.find(shifted)
    assert fallback.source == CANONICAL
    np.testing.assert_array_equal(fallback.landmarks, ffhq_landmarks(256))
    none = LandmarkFinder("none", 256)
    assert none.find(aligned_face).source == CANONICAL and none.version == "none"
    with pytest.raises(ValueError, match="expected a 256 px image"):
        finder.find(aligned_face[:128])


# ---------------------------------------------------------------------------------------------- templates
@pytest.mark.parametrize("name", ["surgical_mask", "cloth_mask", "sunglasses", "frame_glasses"])
def test_anchors_read_off_the_alpha_match_the_drawn_ones(name: str) -> None:
    from alignment.attributes import make_template

    template = make_template(name, 512)
    alpha = np.asarray(template.rgba[..., 3])
    found = mask_anchors(alpha) if template.attribute == "face_mask" else glasses_anchors(alpha)
    assert set(found) == set(template.anchors)
    for anchor, (x, y) in template.anchors.items():
        assert abs(found[anchor][0] - x) <= 0.02 * 512 and abs(found[anchor][1] - y) <= 0.02 * 512, anchor


def test_template_pngs_need_alpha_and_a_body(tmp_path: Path) -> None:
    from alignment.attributes import make_template

    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(rgb)
    with pytest.raises(TemplateError, match="no alpha channel"):
        png_template(rgb, "face_mask")
    empty = tmp_path / "empty.png"
    Image.new("RGBA", (64, 64)).save(empty)
    with pytest.raises(TemplateError, match="alpha channel is empty"):
        png_template(empty, "sunglasses")
    with pytest.raises(FileNotFoundError, match="template PNG for frame_glasses not found"):
        png_template(tmp_path / "nope.png", "frame_glasses")
    glasses = tmp_path / "glasses.png"
    Image.fromarray(np.asarray(make_template("sunglasses", 128).rgba), "RGBA").save(glasses)
    template = png_template(glasses, "sunglasses", {"left_temple": (1.0, 2.0)})
    assert template.anchors["left_temple"] == (1.0, 2.0) and template.attribute == "sunglasses"


def test_place_gives_a_premultiplied_layer_and_the_alpha_as_region() -> None:
    from alignment.attributes import make_template
    from training.fusion_pairs.compose import place

    origin = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    placed = place(origin, ffhq_landmarks(64), make_template("sunglasses", 128), shadow=False)
    outside = placed.region == 0
    assert outside.any() and (~outside).any()
    assert not placed.template[outside].any()  # black where the attribute is not
    np.testing.assert_array_equal(placed.gt[outside], origin[outside])  # untouched there (no shadow)
    assert 0 < placed.area < 0.5


# ---------------------------------------------------------------------------------------------- shards
def _samples(n: int) -> list[tuple[str, list[tuple[str, bytes]]]]:
    return [(f"train_{i:08d}", [(f"train_{i:08d}.json", b'{"i": %d}' % i),
                                (f"train_{i:08d}.face_mask.gt.png", bytes([i]) * (700 + i))]) for i in range(n)]


def test_member_shards_are_byte_reproducible_and_readable(tmp_path: Path) -> None:
    a = write_member_shard(tmp_path / "a", "fusion", "train", 3, _samples(3))
    b = write_member_shard(tmp_path / "b", "fusion", "train", 3, iter(_samples(3)))
    path = tmp_path / "a" / "fusion-train-000003.tar"
    assert a.name == path.name and a.count == 3 and a.labels == {}
    assert path.read_bytes() == (tmp_path / "b" / a.name).read_bytes() and a.sha256 == b.sha256
    assert a.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and a.bytes == path.stat().st_size
    assert read_stats(path) == a and stats_path(path).is_file()
    with open(path, "rb") as stream:
        grouped = list(group_samples(iter_members(stream, str(path)), str(path)))
    assert [s["__key__"] for s in grouped] == ["train_00000000", "train_00000001", "train_00000002"]
    assert grouped[1]["face_mask.gt.png"] == bytes([1]) * 701


@pytest.mark.parametrize(("samples", "message"), [
    (lambda: list(reversed(_samples(2))), "strictly increasing"),
    (lambda: [("a.b", [("a.b.json", b"{}")])], "no dots"),
    (lambda: [("a", [("b.json", b"{}")])], "must be named"),
    (lambda: [("a", [])], "has no members"),
    (list, "would hold no samples"),
])
def test_member_shard_errors_leave_no_shard(tmp_path: Path, samples, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_member_shard(tmp_path, "fusion", "test", 0, samples())
    assert not any(tmp_path.rglob("*.tar")) and not [p for p in tmp_path.rglob("*") if p.is_file()]


# ---------------------------------------------------------------------------------------------- config
def test_the_config_repeats_other_packages_names_faithfully() -> None:
    from alignment.attributes import GLASSES_ANCHORS, MASK_ANCHORS, TEMPLATE_NAMES, make_template
    from training.fusion_pairs.config import ANCHOR_NAMES, BUILTIN_TEMPLATES, MAP_NAMES
    from training.unsup3d.maps import MAP_NAMES as UNSUP3D_MAPS

    assert MAP_NAMES == UNSUP3D_MAPS
    assert sorted(n for names in BUILTIN_TEMPLATES.values() for n in names) == sorted(TEMPLATE_NAMES)
    for attribute, names in BUILTIN_TEMPLATES.items():
        assert all(make_template(name, 64).attribute == attribute for name in names)
    assert ANCHOR_NAMES == {"face_mask": MASK_ANCHORS, "sunglasses": GLASSES_ANCHORS, "frame_glasses": GLASSES_ANCHORS}


@pytest.mark.parametrize("profile", ["demo", "full"])
def test_profiles_load(profile: str) -> None:
    from data_catalog.config import load_config
    from training.fusion_pairs.config import FusionPairsConfig

    config = load_config(FusionPairsConfig, profile)
    assert config.attributes == ("face_mask", "sunglasses", "frame_glasses") and config.truncation == 0.5
