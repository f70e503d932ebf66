"""A small corpus of distinct images for crawl tests (served by the loopback emulator)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

MASK_FILES = [f"mask{i}.jpg" for i in range(4)]
PLAIN_FILES = [f"plain{i}.jpg" for i in range(3)] + ["plain3.png"]


def noisy_image(seed: int, size: int = 96, fmt: str = "JPEG") -> bytes:
    image = Image.effect_noise((size, size), 40 + seed).convert("RGB")
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, fmt, quality=90)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def write_corpus(folder: Path) -> Path:
    """Eight distinct images: four match mask queries, four match plain-face queries."""
    entries = []
    for seed, name in enumerate(MASK_FILES + PLAIN_FILES):
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        (folder / name).write_bytes(noisy_image(seed, fmt=fmt))
        keywords = ["face mask", "마스크"] if name.startswith("mask") else ["face portrait", "얼굴 사진"]
        entries.append({"file": name, "keywords": keywords, "title": f"photo {name}"})
    (folder / "index.json").write_text(json.dumps({"images": entries}, ensure_ascii=False), encoding="utf-8")
    return folder
