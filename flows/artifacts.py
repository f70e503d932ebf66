"""Markdown for Prefect artifacts: what a stage left (the dataset card, reports, sample grids), made to render.

A file written for a folder does not render as it is in Prefect's UI: the card's YAML front matter (Hugging Face
metadata) shows as large headings, and a relative link like `![samples](grid.png)` points nowhere once the text
is in the server's database. So the artifact gets the text without front matter, with each local image embedded
as a small `data:` URI thumbnail, and a stage's image outputs (training sample grids) that its markdown does not
show get the same treatment. Pure functions of files, no Prefect: `flows.pipeline.publish_outputs` publishes.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from data_catalog.card import strip_front_matter

THUMBNAIL_SIDE = 768  # px, longest side: a grid stays legible, an artifact stays well under a megabyte
THUMBNAIL_QUALITY = 85
MAX_IMAGES = 12  # per artifact; the rest stay links
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # stills: an animation is left as a path
_IMAGE_LINK = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<target><[^>]+>|[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")


def thumbnail_data_uri(path: str | Path, side: int = THUMBNAIL_SIDE) -> str:
    """`data:image/jpeg;base64,...` of the image scaled to at most `side` px (never enlarged)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _local_image(target: str, base: Path) -> Path | None:
    target = target.strip("<>")
    if ":" in target.split("/", 1)[0] or target.startswith(("/", "#")):  # a URL, data: URI, absolute or anchor
        return None
    path = (base / target).resolve()
    return path if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() else None


def embed_images(markdown: str, base: Path, limit: int = MAX_IMAGES) -> tuple[str, set[Path]]:
    """Replace links to local images (relative to `base`) by thumbnails; returns the text and the files embedded."""
    embedded: set[Path] = set()

    def replace(match: re.Match[str]) -> str:
        path = _local_image(match.group("target"), base)
        if path is None or (path not in embedded and len(embedded) >= limit):
            return match.group(0)
        embedded.add(path)
        return f"![{match.group('alt')}]({thumbnail_data_uri(path)})"

    return _IMAGE_LINK.sub(replace, markdown), embedded


def output_images(items: Mapping[str, str]) -> dict[str, Path]:
    """The items of a StageOutputs whose value is an existing image file (label -> path)."""
    found = {}
    for label, value in items.items():
        path = Path(str(value))
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_absolute() and path.is_file():
            found[label] = path
    return found


def artifact_markdown(described: Mapping[str, Any]) -> str | None:
    """The artifact text for one stage's outputs (`StageOutputs.to_json()`), or None when it has nothing to show.

    Its markdown file without front matter and with local images embedded, then any image item not already in
    it (a training run's sample grid) under its label.
    """
    parts: list[str] = []
    shown: set[Path] = set()
    if described.get("markdown") and (path := Path(described["markdown"])).is_file():
        text, shown = embed_images(strip_front_matter(path.read_text(encoding="utf-8")), path.parent)
        parts.append(text.rstrip())
    images = {label: p for label, p in output_images(described.get("items") or {}).items() if p.resolve() not in shown}
    if images and not parts:
        parts.append(f"# {described.get('title', 'outputs')}")
    for label, path in list(images.items())[:max(0, MAX_IMAGES - len(shown))]:
        parts.append(f"## {label}\n\n![{label}]({thumbnail_data_uri(path)})\n\n`{path}`")
    return "\n\n".join(parts) + "\n" if parts else None
