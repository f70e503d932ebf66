"""Exports of MEGN shards for tools that do not read WebDataset.

`export_stylegan_zip` writes the layout of NVlabs' `dataset_tool.py` (stylegan2-ada-pytorch, stylegan3),
so their `train.py --data=megn.zip --cond=1` runs on MEGN unchanged. `export_folder` gives one folder per split
and attribute with the original bytes (`<split>/<attribute>/<key>.jpg`), for browsing and for tools that expect
an image folder (torchvision's `ImageFolder` on `<out>/train`, Hugging Face's `imagefolder`, which reads the
split folders as splits).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from data_catalog.atomic import atomic_write_bytes, atomic_write_text, atomic_writer
from data_catalog.loader import read_samples
from data_catalog.shards import ATTRIBUTE_NAMES, encode_image

IMAGES_PER_FOLDER = 1000  # dataset_tool.py's `idx_str[:5]` folders hold 1000 images each
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
_UNIX = 3  # ZipInfo.create_system; fixed so the archive does not depend on the writing platform


def stylegan_name(index: int) -> str:
    """`00000/img00000000.png`, exactly as dataset_tool.py names image `index`."""
    return f"{index // IMAGES_PER_FOLDER:05d}/img{index:08d}.png"


def attribute_name(label: int) -> str:
    """Folder name for a label; ids outside ATTRIBUTE_NAMES still export, as `label_<id>`."""
    return ATTRIBUTE_NAMES.get(label, f"label_{label}")


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED  # PNG is compressed already; stored is also what dataset_tool writes
    info.create_system = _UNIX
    info.external_attr = 0o100644 << 16  # regular file, rw-r--r--
    return info


def _to_png(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return encode_image(image, "png")


def export_stylegan_zip(shards: Sequence[str | Path], out: str | Path) -> Path:
    """Write the dataset_tool.py zip: PNG images in shard/key order, then dataset.json with the labels.

    Entries are written in sorted name order (the image names sort in index order and `dataset.json`
    after them) with fixed dates and permissions, so the same shards give a byte-identical zip.
    """
    out = Path(out)
    labels: list[list] = []
    with atomic_writer(out) as handle, zipfile.ZipFile(handle, "w", allowZip64=True) as archive:
        for index, sample in enumerate(read_samples(shards)):
            name = stylegan_name(index)
            archive.writestr(_zip_entry(name), _to_png(sample.image))
            labels.append([name, sample.label])
        archive.writestr(_zip_entry("dataset.json"), json.dumps({"labels": labels}))
    return out


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False


def export_folder(splits: Mapping[str, Sequence[str | Path]], out: str | Path) -> Path:
    """Write `<out>/<split>/<attribute>/<key>.<ext>` (original bytes) and `<out>/labels.csv`
    (key,split,file,label,attribute) for the shards of each split.

    The split stays in the layout: merging train and val into one folder would leak validation faces into
    whatever trains on it. Idempotent: files that already hold the right bytes are left alone, and labels.csv
    is written last, so its presence marks a finished export. Keys must be unique across the given shards.
    """
    out = Path(out)
    rows: list[tuple[str, str, str, int, str]] = []
    seen: set[str] = set()
    for split, shards in splits.items():
        if not split or "/" in split or split.startswith("."):
            raise ValueError(f"split name {split!r} cannot name a folder")
        for sample in read_samples(shards):
            if sample.key in seen:
                raise ValueError(f"key {sample.key!r} appears twice in the shards; export_folder needs unique keys")
            seen.add(sample.key)
            attribute = attribute_name(sample.label)
            relative = f"{split}/{attribute}/{sample.key}.{sample.image_ext}"
            target = out / relative
            if not _same_bytes(target, sample.image):
                atomic_write_bytes(target, sample.image, durable=False)  # no fsync per file: a rerun repairs a loss
            rows.append((sample.key, split, relative, sample.label, attribute))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["key", "split", "file", "label", "attribute"])
    writer.writerows(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "labels.csv", text.getvalue())
    return out
