from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from data_catalog.hashing import sha256_file
from data_catalog.shards import (
    ATTRIBUTE_NAMES,
    ShardInfo,
    ShardSample,
    encode_image,
    read_all_stats,
    read_stats,
    shard_name,
    stats_path,
    write_shards,
)


def make_samples(n: int, ext: str = "png", size: int = 8, seed: int = 0, start: int = 0) -> list[ShardSample]:
    """Small random images with labels cycling through the four attributes and non-ASCII metadata."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(start, start + n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        samples.append(ShardSample(key=f"face_{i:05d}", image=encode_image(pixels, ext), image_ext=ext,
                                   metadata={"source": "tëst", "index": i, "box": [1, 2.5]}, label=i % 4))
    return samples


def raw_sample(key: str, image_size: int = 1000, label: int = 0) -> ShardSample:
    """A sample with fixed-size fake image bytes, so shard sizes can be computed by hand."""
    return ShardSample(key=key, image=b"x" * image_size, image_ext="jpg", metadata={}, label=label)


def tar_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tar"))


def test_two_writes_are_byte_identical(tmp_path: Path) -> None:
    samples = make_samples(7)
    first = write_shards(samples, tmp_path / "a", "train", max_count=3)
    second = write_shards(iter(samples), tmp_path / "b", "train", max_count=3)
    assert first == second
    names = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert len(names) == 6  # three shards and three stats files
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_stock_webdataset_reads_every_sample_back(tmp_path: Path) -> None:
    samples = make_samples(5, "png") + make_samples(4, "jpg", start=5)
    write_shards(samples, tmp_path, "train", max_count=4)
    urls = [str(p) for p in tar_files(tmp_path)]
    assert len(urls) == 3
    read = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in read] == [s.key for s in samples]
    for got, want in zip(read, samples):
        assert got[want.image_ext] == want.image
        assert json.loads(got["json"]) == want.metadata
        assert got["json"] == json.dumps(want.metadata, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode("utf-8")
        assert got["cls"] == str(want.label).encode("ascii")


def test_tar_members_have_fixed_order_and_metadata(tmp_path: Path) -> None:
    samples = make_samples(2, "jpg")
    (info,) = write_shards(samples, tmp_path, "val")
    with tarfile.open(tmp_path / info.name) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == ["face_00000.cls", "face_00000.jpg", "face_00000.json",
                                         "face_00001.cls", "face_00001.jpg", "face_00001.json"]
    for member in members:
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
        assert member.mode == 0o644 and member.isreg()


def test_headers_match_pythons_ustar_layout(tmp_path: Path) -> None:
    (info,) = write_shards([raw_sample("k", 10)], tmp_path, "train")
    data = (tmp_path / info.name).read_bytes()
    expected = tarfile.TarInfo("k.cls")
    expected.size, expected.mode = 1, 0o644
    header = expected.tobuf(format=tarfile.USTAR_FORMAT)
    assert data[:100] == header[:100]  # name
    assert data[100:148] == header[100:148]  # mode, uid, gid, size, mtime
    assert data[257:265] == b"ustar\x0000"
    assert len(data) == info.bytes == 3 * 1024 + 1024  # three members of one data block each, then the end


def test_count_limit_splits_shards(tmp_path: Path) -> None:
    samples = make_samples(7)
    infos = write_shards(samples, tmp_path, "train", max_count=3)
    assert [i.count for i in infos] == [3, 3, 1]
    assert [i.name for i in infos] == [shard_name("megn", "train", i) for i in range(3)]
    assert [(i.first_key, i.last_key) for i in infos] == [("face_00000", "face_00002"),
                                                         ("face_00003", "face_00005"),
                                                         ("face_00006", "face_00006")]
    assert [i.index for i in infos] == [0, 1, 2]
    assert infos[0].labels == {0: 1, 1: 1, 2: 1}


def test_byte_limit_splits_shards_and_oversize_sample_goes_alone(tmp_path: Path) -> None:
    # each sample: 3 headers + 1 block (cls) + 2 blocks (1000 B image) + 1 block (json) = 3584 B; end = 1024 B
    per_sample, end = 3584, 1024
    samples = [raw_sample(f"k{i}") for i in range(5)] + [raw_sample("k9", image_size=20_000)]
    max_bytes = end + 2 * per_sample
    infos = write_shards(samples, tmp_path, "train", max_bytes=max_bytes)
    assert [i.count for i in infos] == [2, 2, 1, 1]
    assert [i.bytes for i in infos[:3]] == [max_bytes, max_bytes, end + per_sample]
    assert infos[3].first_key == "k9" and infos[3].bytes > max_bytes
    assert [p.stat().st_size for p in tar_files(tmp_path)] == [i.bytes for i in infos]


@pytest.mark.parametrize("keys, message", [
    (["b", "a"], "'a' comes after 'b'"),
    (["a", "a"], "'a' comes after 'a'"),
    (["a", "b.c"], "'b.c' must match"),
    (["a", ""], "non-empty"),
    (["a", "x/y"], "'x/y' must match"),
])
def test_bad_keys_raise_and_leave_no_partial_shard(tmp_path: Path, keys: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_shards([raw_sample(k) for k in keys], tmp_path, "train")
    assert list(tmp_path.iterdir()) == []  # the shard being filled is discarded, temp file included


def test_closed_shards_stay_when_a_later_sample_is_invalid(tmp_path: Path) -> None:
    samples = [raw_sample("a"), raw_sample("b"), raw_sample("c"), raw_sample("d", label=-1)]
    with pytest.raises(ValueError, match="'d': label must be an int >= 0"):
        write_shards(samples, tmp_path, "train", max_count=2)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "megn-train-000000.tar", "stats/megn-train-000000_stats.json"]


@pytest.mark.parametrize("field, value, message", [
    ("label", -1, "label must be an int >= 0"),
    ("label", True, "label must be an int >= 0"),
    ("label", "1", "label must be an int >= 0"),
    ("label", 1.0, "label must be an int >= 0"),
    ("image_ext", "jpeg", "image_ext must be one of"),
    ("image_ext", "gif", "image_ext must be one of"),
    ("image", b"", "non-empty encoded bytes"),
    ("metadata", {"x": float("nan")}, "not JSON-able"),
    ("metadata", {"x": object()}, "not JSON-able"),
])
def test_invalid_samples_raise(tmp_path: Path, field: str, value: object, message: str) -> None:
    values = {"key": "k", "image": b"x", "image_ext": "png", "metadata": {}, "label": 0, field: value}
    with pytest.raises(ValueError, match=message):
        write_shards([ShardSample(**values)], tmp_path, "train")


def test_numpy_integer_labels_are_accepted(tmp_path: Path) -> None:
    (info,) = write_shards([ShardSample("k", b"x", "png", {}, np.int64(3))], tmp_path, "train")
    assert info.labels == {3: 1}


def test_stats_json_matches_the_shard(tmp_path: Path) -> None:
    infos = write_shards(make_samples(6), tmp_path, "test", prefix="megn", max_count=4)
    for info in infos:
        shard = tmp_path / info.name
        assert stats_path(shard) == tmp_path / "stats" / (shard.stem + "_stats.json")  # apart from the shards
        stats = json.loads(stats_path(shard).read_text())
        assert list(stats) == sorted(stats)
        assert stats["sha256"] == sha256_file(shard) == info.sha256
        assert stats["bytes"] == shard.stat().st_size
        with tarfile.open(shard) as archive:
            assert stats["count"] == len(archive.getmembers()) // 3
        assert read_stats(shard) == info
    assert read_all_stats(tmp_path, "test") == infos
    assert infos[0].labels == {0: 1, 1: 1, 2: 1, 3: 1} and infos[1].labels == {0: 1, 1: 1}
    assert ShardInfo.from_dict(infos[0].to_dict()) == infos[0]


def test_stats_beside_the_shards_still_read(tmp_path: Path) -> None:
    """Folders written before the stats moved to `stats/` keep theirs next to each shard."""
    infos = write_shards(make_samples(6), tmp_path, "test", max_count=4)
    for info in infos:
        moved = tmp_path / f"{Path(info.name).stem}_stats.json"
        (tmp_path / "stats" / moved.name).rename(moved)
        assert stats_path(tmp_path / info.name) == moved and read_stats(tmp_path / info.name) == info
    assert read_all_stats(tmp_path, "test") == infos


def test_empty_input_writes_nothing(tmp_path: Path) -> None:
    assert write_shards([], tmp_path / "out", "train") == []
    assert not (tmp_path / "out").exists()


def test_shard_name_and_attribute_names() -> None:
    assert shard_name("megn", "train", 0) == "megn-train-000000.tar"
    assert shard_name("megn", "val", 123) == "megn-val-000123.tar"
    with pytest.raises(ValueError, match="split"):
        shard_name("megn", "tr-ain", 0)
    with pytest.raises(ValueError, match="index"):
        shard_name("megn", "train", -1)
    assert ATTRIBUTE_NAMES == {0: "none", 1: "face_mask", 2: "sunglasses", 3: "frame_glasses"}


def test_encode_image_is_deterministic_rgb_without_metadata() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    png = encode_image(pixels, "png")
    assert png == encode_image(pixels, "png")
    decoded = Image.open(io.BytesIO(png))
    assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), pixels)

    tagged = Image.fromarray(pixels)
    tagged.info["icc_profile"] = b"not a real profile"  # PNG save would copy this from info
    assert encode_image(tagged, "png") == png
    rgba = np.dstack([pixels, np.full((12, 10), 255, np.uint8)])
    assert encode_image(rgba, "png") == png

    jpg = encode_image(pixels, "jpg", quality=90)
    assert jpg == encode_image(Image.fromarray(pixels), "jpg", quality=90)
    assert jpg != encode_image(pixels, "jpg", quality=50)
    with Image.open(io.BytesIO(jpg)) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (10, 12)
        assert "exif" not in image.info and "icc_profile" not in image.info

    gray = encode_image(pixels[:, :, 0], "png")
    assert np.asarray(Image.open(io.BytesIO(gray))).shape == (12, 10, 3)


def test_encode_image_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="format"):
        encode_image(np.zeros((4, 4, 3), np.uint8), "gif")
    with pytest.raises(ValueError, match="uint8"):
        encode_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        encode_image(np.zeros((4, 4, 2), np.uint8))
