from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_catalog.export import export_folder, export_stylegan_zip, stylegan_name
from data_catalog.loader import list_shards
from data_catalog.shards import ShardSample, write_shards
from tests.data_catalog.test_shards import make_samples


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture()
def mixed(tmp_path: Path) -> tuple[list[Path], list[ShardSample]]:
    """Two shards: PNG samples, then JPEG samples (so both decode paths are exported)."""
    samples = make_samples(3, "png", size=9) + make_samples(3, "jpg", size=16, start=3)
    write_shards(samples, tmp_path / "shards", "train", max_count=3)
    return list_shards(tmp_path / "shards", "train"), samples


def test_stylegan_name_matches_dataset_tool() -> None:
    assert stylegan_name(0) == "00000/img00000000.png"
    assert stylegan_name(999) == "00000/img00000999.png"
    assert stylegan_name(1234) == "00001/img00001234.png"


def test_stylegan_zip_layout_labels_and_pixels(tmp_path: Path, mixed: tuple[list[Path], list[ShardSample]]) -> None:
    shards, samples = mixed
    out = export_stylegan_zip(shards, tmp_path / "megn.zip")
    assert out == tmp_path / "megn.zip"
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert names == [stylegan_name(i) for i in range(6)] + ["dataset.json"]
        labels = json.loads(archive.read("dataset.json"))["labels"]
        assert labels == [[stylegan_name(i), s.label] for i, s in enumerate(samples)]
        for i, sample in enumerate(samples):
            data = archive.read(stylegan_name(i))
            with Image.open(io.BytesIO(data)) as image:
                assert image.format == "PNG" and image.mode == "RGB"
            # PNG input: the same pixels; JPEG input: its decoded pixels, stored losslessly at the same size
            assert np.array_equal(pixels(data), pixels(sample.image))
            assert pixels(data).shape == ((9, 9, 3) if sample.image_ext == "png" else (16, 16, 3))
        for info in archive.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0) and info.external_attr >> 16 == 0o100644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_stylegan_zip_is_byte_reproducible(tmp_path: Path, mixed: tuple[list[Path], list[ShardSample]]) -> None:
    shards, _ = mixed
    first = export_stylegan_zip(shards, tmp_path / "a.zip").read_bytes()
    second = export_stylegan_zip([str(s) for s in shards], tmp_path / "b.zip").read_bytes()
    assert first == second
    assert export_stylegan_zip(shards[1:], tmp_path / "c.zip").read_bytes() != first


def test_stylegan_zip_folders_hold_a_thousand_images(tmp_path: Path) -> None:
    samples = [ShardSample(f"k{i:05d}", make_samples(1, size=2)[0].image, "png", {}, i % 2) for i in range(1001)]
    write_shards(samples, tmp_path / "shards", "train")
    out = export_stylegan_zip(list_shards(tmp_path / "shards", "train"), tmp_path / "big.zip")
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert names[999] == "00000/img00000999.png" and names[1000] == "00001/img00001000.png"
    assert len(names) == 1002


def test_folder_export_files_and_labels_csv(tmp_path: Path, mixed: tuple[list[Path], list[ShardSample]]) -> None:
    shards, samples = mixed
    out = export_folder({"train": shards}, tmp_path / "folder")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    names = {0: "none", 1: "face_mask", 2: "sunglasses", 3: "frame_glasses"}
    expected = {f"train/{names[s.label]}/{s.key}.{s.image_ext}": s for s in samples}
    assert files == sorted([*expected, "labels.csv"])
    for relative, sample in expected.items():
        assert (out / relative).read_bytes() == sample.image
    with open(out / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"key": s.key, "split": "train", "file": f"train/{names[s.label]}/{s.key}.{s.image_ext}",
                     "label": str(s.label), "attribute": names[s.label]} for s in samples]


def test_folder_export_keeps_the_splits_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train and val land in their own folders, which Hugging Face's imagefolder reads back as two splits."""
    train, val = make_samples(4, "png", size=8), make_samples(2, "jpg", size=8, start=4)
    write_shards(train, tmp_path / "v", "train", max_count=2)
    write_shards(val, tmp_path / "v", "val")
    splits = {"train": list_shards(tmp_path / "v", "train"), "val": list_shards(tmp_path / "v", "val")}
    out = export_folder(splits, tmp_path / "folder")
    assert sorted(p.name for p in out.iterdir()) == ["labels.csv", "train", "val"]
    assert sorted(p.stem for p in (out / "val").rglob("*.jpg")) == [s.key for s in val]
    with open(out / "labels.csv", newline="", encoding="utf-8") as handle:
        assert {r["key"]: r["split"] for r in csv.DictReader(handle)} == {
            **{s.key: "train" for s in train}, **{s.key: "val" for s in val}}

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # read before `datasets` is imported
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import datasets

    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert {name: len(rows) for name, rows in loaded.items()} == {"train": 4, "validation": 2}
    names = loaded["train"].features["label"].names
    assert sorted(names[label] for label in loaded["train"]["label"]) == sorted(
        {0: "none", 1: "face_mask", 2: "sunglasses", 3: "frame_glasses"}[s.label] for s in train)


def test_folder_export_is_idempotent(tmp_path: Path, mixed: tuple[list[Path], list[ShardSample]]) -> None:
    shards, _ = mixed
    out = export_folder({"train": shards}, tmp_path / "folder")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in out.rglob("*") if p.is_file()}
    image = next(p for p in before if p.suffix == ".png")
    image.write_bytes(b"corrupted")
    export_folder({"train": shards}, out)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in out.rglob("*") if p.is_file()}
    assert {p: v[0] for p, v in after.items()} == {p: v[0] for p, v in before.items()}  # the damage is repaired
    untouched = [p for p in before if p != image and p.name != "labels.csv"]
    assert all(after[p][1:] == before[p][1:] for p in untouched)  # correct files are not rewritten


def test_folder_export_rejects_duplicate_keys_and_names_unknown_labels(tmp_path: Path) -> None:
    one = [ShardSample("a", make_samples(1)[0].image, "png", {}, 7)]
    write_shards(one, tmp_path / "x", "train")
    write_shards(one, tmp_path / "y", "train")
    shards = list_shards(tmp_path / "x", "train") + list_shards(tmp_path / "y", "train")
    with pytest.raises(ValueError, match="key 'a' appears twice"):
        export_folder({"train": shards[:1], "val": shards[1:]}, tmp_path / "dup")
    out = export_folder({"train": shards[:1]}, tmp_path / "ok")
    assert (out / "train" / "label_7" / "a.png").is_file()
