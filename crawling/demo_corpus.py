"""The offline demo corpus: real face photos shipped inside installed packages, augmented.

Sources: scikit-image's `astronaut` (NASA, public domain) and insightface's test photos `t1.jpg` and
`Tom_Hanks_54745.png`. Each becomes several variants (flip, crop, scale, rotation, colour, JPEG quality)
so the emulator has a varied set to serve. The images here are plain faces (attribute `none`); the
attribute variants (masks, glasses composited by landmarks) are added by the build-megn corpus step.
The folder gets an `index.json` (file, keywords, title, licence) that the loopback emulator reads.
"""

from __future__ import annotations

import importlib.util
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from data_catalog.atomic import atomic_write_bytes, atomic_write_text

CORPUS_VERSION = 1
PLAIN_FACE_KEYWORDS = ["face portrait", "portrait photo", "얼굴 사진", "인물 사진", "顔写真"]


def _package_file(package: str, *parts: str) -> Path:
    """A data file of an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; it ships the demo photos")
    path = Path(spec.submodule_search_locations[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r}")
    return path


def source_photos() -> Iterator[tuple[str, Image.Image, str]]:
    """(name, image, licence) of every real photo the demo builds on."""
    from skimage import data as skimage_data

    yield "astronaut", Image.fromarray(skimage_data.astronaut()), "public domain (NASA), via scikit-image"
    for name in ("t1.jpg", "Tom_Hanks_54745.png"):
        path = _package_file("insightface", "data", "images", name)
        yield Path(name).stem.lower(), Image.open(path).convert("RGB"), "test image shipped with insightface"


def _variants(image: Image.Image, rng: random.Random, count: int) -> Iterator[tuple[str, Image.Image, int]]:
    """(suffix, image, jpeg quality) augmentations; deterministic for a given rng seed."""
    yield "orig", image, 95
    for index in range(count - 1):
        img = image
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        w, h = img.size
        scale = rng.uniform(0.75, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
        img = img.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(128, 128, 128))
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.7, 1.3))
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
        target = rng.choice([256, 384, 512])
        img = img.resize((target, max(1, round(target * img.height / img.width))), Image.Resampling.LANCZOS)
        yield f"v{index}", img, rng.choice([60, 75, 90])


def build_demo_corpus(folder: str | Path, variants_per_photo: int = 6, seed: int = 0) -> Path:
    """Write the corpus into `folder` (idempotent: an up-to-date index.json means it is already there)."""
    folder = Path(folder)
    index_path = folder / "index.json"
    if index_path.is_file() and json.loads(index_path.read_text(encoding="utf-8")).get("version") == CORPUS_VERSION:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    entries = []
    for name, photo, licence in source_photos():
        for suffix, image, quality in _variants(photo, rng, variants_per_photo):
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=quality)
            file = f"{name}-{suffix}.jpg"
            atomic_write_bytes(folder / file, buffer.getvalue())
            entries.append({"file": file, "keywords": PLAIN_FACE_KEYWORDS, "title": f"{name} ({suffix})",
                            "licence": licence, "attribute": "none"})
    index = {"version": CORPUS_VERSION, "seed": seed, "images": entries}
    atomic_write_text(index_path, json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    return folder
