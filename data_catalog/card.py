"""Dataset card and sample grid for one MEGN dataset version.

Every shard version gets a `README.md` (a Hugging Face dataset card, in the spirit of Datasheets for Datasets)
and a `grid.png` of examples next to its shards, so a reader can judge a version without opening a shard. The
card's YAML front matter is Hugging Face's dataset metadata: `configs` name each split's tar shards and
`dataset_info.features` the columns (the class names of `cls`, the fields of `<key>.json`), so
`datasets.load_dataset("<version folder>")` reads the version as a dataset. Versions written before the card
took that name have a `card.md` (`card_path` finds either).

Both files are pure functions of their inputs (no timestamps, everything sorted, PNG without metadata):
rebuilding an unchanged version rewrites identical bytes, which keeps content hashes and caches stable.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from data_catalog.atomic import atomic_write_bytes, atomic_write_text
from data_catalog.shards import ATTRIBUTE_IDS  # DESIGN.md section 4

ATTRIBUTES: tuple[str, ...] = tuple(sorted(ATTRIBUTE_IDS, key=ATTRIBUTE_IDS.__getitem__))

CARD_NAME = "README.md"  # what dataset hubs and `datasets.load_dataset(folder)` read as the card
LEGACY_CARD_NAME = "card.md"  # the card's name in versions written before it became README.md
GRID_NAME = "grid.png"
UNKNOWN = "unknown"
SPLIT_ORDER: tuple[str, ...] = ("train", "val", "validation", "test")
BAR_WIDTH = 40  # characters of the longest bar in the rejection histogram
SHA_PREFIX = 12
LABEL_WIDTH = 112  # px of the grid's label column: fits "frame_glasses" in PIL's default font with margin

_BACKGROUND = (255, 255, 255)
_CELL_BACKGROUND = (236, 236, 236)
_SEPARATOR = (200, 200, 200)
_TEXT = (0, 0, 0)


@dataclass(frozen=True)
class CardInputs:
    """Everything the card shows; the shard stage gathers it, so rendering needs no catalog access."""

    version: str  # dataset version id (a hash)
    samples: pd.DataFrame  # one row per sample: key, split, attribute, attribute_id, engine, licence, width, height
    rejections: dict[str, dict[str, int]]  # stage -> reason -> count
    resolution: int  # aligned crop size in px
    image_format: str  # "jpg" / "png"
    plan_hash: str | None
    code_version: str
    created_from: dict[str, str]  # upstream stage -> run id
    shards: list[dict]  # per shard: name, split, count, bytes, sha256
    config: dict  # the shard stage's config (JSON-able)
    examples: dict[str, list[bytes]]  # attribute name -> encoded example images
    identities: dict[str, int] | None = None  # split -> number of identity clusters
    # The fields of each sample's `<key>.json`: name -> Hugging Face dtype ("string", "int64", "float64"),
    # [dtype] for a list, a dict for a struct, [dict] for a list of structs. None: the card declares no features.
    metadata_features: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------- helpers


def _label(value: Any) -> str:
    """Missing values (None, NaN, empty) become "unknown" so they are counted instead of dropped."""
    if value is None:
        return UNKNOWN
    try:
        if pd.isna(value):
            return UNKNOWN
    except (TypeError, ValueError):  # list-like values: not a missing scalar
        pass
    if isinstance(value, float) and value.is_integer():  # ints in a column with gaps arrive as floats
        return str(int(value))
    text = str(value).strip()
    return text or UNKNOWN


def _column(samples: pd.DataFrame, name: str) -> list[str]:
    """An optional column as labels; absent columns count as all unknown rather than failing the card."""
    if name not in samples.columns:
        return [UNKNOWN] * len(samples)
    return [_label(v) for v in samples[name].tolist()]


def _split_key(split: str) -> tuple[int, str]:
    """train/val/test read best in pipeline order; anything else follows alphabetically."""
    return (SPLIT_ORDER.index(split), "") if split in SPLIT_ORDER else (len(SPLIT_ORDER), split)


def _attribute_names(extra: Iterable[str]) -> list[str]:
    """All four MEGN attributes always (a missing one is information), then any unexpected name, sorted."""
    unexpected = sorted(set(extra) - set(ATTRIBUTES))
    return [*ATTRIBUTES, *unexpected]


def _cell(value: Any) -> str:
    """Escape what would break a Markdown table row."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]], align: list[str] | None = None) -> str:
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def human_bytes(size: int) -> str:
    """Binary units, one decimal: shard sizes are compared by eye, not copied."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"


def _size_category(n: int) -> str:
    """Hugging Face's `size_categories` buckets, so the front matter is valid hub metadata."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for bound, name in bounds:
        if n < bound:
            return name
    return "n>1B"


def _bar(count: int, largest: int) -> str:
    """Plain characters so the histogram survives any Markdown renderer and `cat`; never empty for a count > 0."""
    if count <= 0 or largest <= 0:
        return ""
    return "#" * max(1, round(BAR_WIDTH * count / largest))


# ---------------------------------------------------------------------------------------------- sections


def _feature(name: str, spec: Any) -> dict[str, Any]:
    """One entry of Hugging Face's YAML `features` list from our compact spec."""
    if isinstance(spec, str):
        return {"name": name, "dtype": spec}
    if isinstance(spec, dict):
        return {"name": name, "struct": [_feature(k, v) for k, v in spec.items()]}
    if isinstance(spec, list) and len(spec) == 1:
        inner = spec[0]
        return {"name": name, "list": inner if isinstance(inner, str) else [_feature(k, v) for k, v in inner.items()]}
    raise ValueError(f"feature {name!r}: expected a dtype, [dtype], a struct or [struct], got {spec!r}")


def _split_files(shards: list[dict]) -> list[dict[str, Any]]:
    """Hugging Face `data_files` per split: a glob when the split's shard names follow `<prefix>-<split>-NNNNNN.tar`."""
    by_split: dict[str, list[str]] = {}
    for shard in shards:
        by_split.setdefault(_label(shard.get("split")), []).append(_label(shard.get("name")))
    files = []
    for split in sorted(by_split, key=_split_key):
        names = sorted(by_split[split])
        matches = [re.fullmatch(rf"(.+)-{re.escape(split)}-\d{{6}}\.tar", n) for n in names]
        prefixes = {m.group(1) for m in matches if m}
        glob = all(matches) and len(prefixes) == 1
        files.append({"split": split, "path": f"{prefixes.pop()}-{split}-*.tar" if glob else names})
    return files


def hf_metadata(inputs: CardInputs, total: int) -> dict[str, Any]:
    """The card's YAML front matter: hub metadata, plus the splits' shards and the features for `load_dataset`."""
    metadata: dict[str, Any] = {
        "pretty_name": f"MEGN {inputs.version}",
        "license": "other",
        "task_categories": ["image-classification", "unconditional-image-generation"],
        "size_categories": [_size_category(total)],
        "tags": ["faces", "webdataset"],
    }
    if inputs.shards:
        metadata["configs"] = [{"config_name": "default", "data_files": _split_files(inputs.shards)}]
    if inputs.metadata_features is not None:
        names = {str(i): a for a, i in sorted(ATTRIBUTE_IDS.items(), key=lambda kv: kv[1])}
        metadata["dataset_info"] = {"features": [
            {"name": "cls", "dtype": {"class_label": {"names": names}}},
            {"name": inputs.image_format, "dtype": "image"},
            _feature("json", inputs.metadata_features),
            {"name": "__key__", "dtype": "string"},
            {"name": "__url__", "dtype": "string"},
        ]}
    return metadata


def _front_matter(inputs: CardInputs, total: int) -> str:
    text = yaml.safe_dump(hf_metadata(inputs, total), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{text}---"


def strip_front_matter(markdown: str) -> str:
    """The card without its YAML front matter (Markdown renderers that do not know it show it as text)."""
    if markdown.startswith("---\n"):
        end = markdown.find("\n---\n", 4)
        if end >= 0:
            return markdown[end + len("\n---\n"):].lstrip("\n")
    return markdown


def card_path(folder: str | Path) -> Path:
    """The card of a version folder: README.md, or card.md in versions written before the rename."""
    folder = Path(folder)
    legacy = folder / LEGACY_CARD_NAME
    return legacy if not (folder / CARD_NAME).is_file() and legacy.is_file() else folder / CARD_NAME


def _summary(inputs: CardInputs, splits: list[str], split_counts: Counter, sizes: Counter) -> str:
    total = sum(split_counts.values())
    split_text = ", ".join(f"{s} {split_counts[s]}" for s in splits) or "none"
    size_text = ", ".join(f"{w}x{h} px ({n})" for (w, h), n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])))
    total_bytes = sum(int(s.get("bytes", 0) or 0) for s in inputs.shards)
    lines = [
        f"- **Version:** `{inputs.version}`",
        f"- **Samples:** {total}",
        f"- **Splits:** {split_text}",
        f"- **Resolution:** {inputs.resolution}x{inputs.resolution} px aligned face crops",
        f"- **Image format:** {inputs.image_format}",
        f"- **Shards:** {len(inputs.shards)} WebDataset tar files, {human_bytes(total_bytes)} in all",
        "- **Attributes:** " + ", ".join(f"{ATTRIBUTE_IDS[a]} `{a}`" for a in ATTRIBUTES),
    ]
    if size_text:
        lines.append(f"- **Stored image sizes:** {size_text}")
    return "\n".join(lines)


def _attribute_ids(samples: pd.DataFrame, attributes: list[str]) -> dict[str, str]:
    """Known names use the fixed ids; an unexpected name shows whatever id its rows carry."""
    ids = {a: str(i) for a, i in ATTRIBUTE_IDS.items()}
    if "attribute_id" in samples.columns and "attribute" in samples.columns:
        for name in attributes:
            if name in ids:
                continue
            found = sorted({_label(v) for v in samples.loc[samples["attribute"] == name, "attribute_id"].tolist()})
            ids[name] = ", ".join(found) or "?"
    return {a: ids.get(a, "?") for a in attributes}


def _crosstab(rows: list[str], cols: list[str], pairs: Counter, row_ids: dict[str, str] | None,
              first: str) -> str:
    """Counts of row x column with totals; rows and columns given in display order, zeros kept."""
    header = [first] + (["id"] if row_ids is not None else []) + cols + ["total"]
    body = []
    for r in rows:
        counts = [pairs[(r, c)] for c in cols]
        body.append([r] + ([row_ids[r]] if row_ids is not None else []) + counts + [sum(counts)])
    col_totals = [sum(pairs[(r, c)] for r in rows) for c in cols]
    body.append(["**total**"] + ([""] if row_ids is not None else []) + col_totals + [sum(col_totals)])
    align = ["l"] + (["r"] if row_ids is not None else []) + ["r"] * (len(cols) + 1)
    return _table(header, body, align)


def _licences(licences: list[str]) -> str:
    counts = Counter(licences)
    total = len(licences)
    rows = [[name, n, _percent(n, total)] for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    if not rows:
        return "No samples."
    return _table(["licence", "samples", "share"], rows)


def _rejections(rejections: Mapping[str, Mapping[str, int]]) -> str:
    entries = [(str(stage), str(reason), int(count))
               for stage, reasons in rejections.items() for reason, count in reasons.items()]
    if not entries:
        return "No rejections recorded."
    entries.sort(key=lambda e: (-e[2], e[0], e[1]))
    total = sum(e[2] for e in entries)
    largest = max(e[2] for e in entries)
    rows = [[stage, reason, count, _percent(count, total), f"`{_bar(count, largest)}`" if count > 0 else ""]
            for stage, reason, count in entries]
    per_stage = Counter()
    for stage, _, count in entries:
        per_stage[stage] += count
    stage_text = ", ".join(f"{s} {n}" for s, n in sorted(per_stage.items(), key=lambda kv: (-kv[1], kv[0])))
    return "\n".join([
        f"{total} items were rejected before reaching a shard ({stage_text}).",
        "",
        _table(["stage", "reason", "count", "share", "histogram"], rows, ["l", "l", "r", "r", "l"]),
    ])


def _identities(identities: Mapping[str, int]) -> str:
    rows = [[split, int(n)] for split, n in sorted(identities.items(), key=lambda kv: _split_key(str(kv[0])))]
    rows.append(["**total**", sum(r[1] for r in rows)])
    return "\n".join([
        ("Identity clusters per split (dlib face descriptors grouped by Chinese-whispers clustering at the align "
         "stage; a cluster approximates one person)."),
        "",
        _table(["split", "identity clusters"], rows),
    ])


def _shards(shards: list[dict]) -> str:
    if not shards:
        return "No shards."
    ordered = sorted(shards, key=lambda s: (_split_key(_label(s.get("split"))), _label(s.get("name"))))
    rows = [[f"`{_label(s.get('name'))}`", _label(s.get("split")), int(s.get("count", 0) or 0),
             human_bytes(int(s.get("bytes", 0) or 0)), f"`{_label(s.get('sha256'))[:SHA_PREFIX]}`"]
            for s in ordered]
    rows.append(["**total**", "", sum(r[2] for r in rows),
                 human_bytes(sum(int(s.get("bytes", 0) or 0) for s in shards)), ""])
    return _table(["shard", "split", "samples", "size", "sha256"], rows, ["l", "l", "r", "r", "l"])


def _provenance(inputs: CardInputs) -> str:
    lines = [
        f"- **Query plan hash:** `{inputs.plan_hash}`" if inputs.plan_hash else "- **Query plan hash:** none",
        f"- **Code version:** `{inputs.code_version}`",
        "- **Upstream runs:**" if inputs.created_from else "- **Upstream runs:** none",
    ]
    lines += [f"  - {stage}: `{run}`" for stage, run in sorted(inputs.created_from.items())]
    return "\n".join(lines)


_LOADING = """\
Each sample is `<key>.cls` (the attribute id), `<key>.jpg` or `<key>.png` (the aligned crop) and `<key>.json`
(provenance, landmarks, alignment). This folder loads as it is:

```python
import datasets
megn = datasets.load_dataset("path/to/this/folder")   # splits, class names and fields from this card
megn["train"][0]["cls"], megn["train"].features["cls"].names
```

The stock `webdataset.WebDataset` reads the tar files too, and the pipeline's DDP-correct reader is
`data_catalog.loader.make_loader`. Per-shard counts, sizes and hashes are in `stats/`."""

_INTENDED_USE = """\
MEGN (face **M**ask and **E**ye**G**lasses images crawled from Google and **N**aver) trains and evaluates
SD-GAN: a StyleGAN2 generator, an attribute classifier with InterfaceGAN boundaries, and the fusion network
that adds or removes a face mask, sunglasses or frame glasses. It suits research on attribute editing and
attribute classification of faces. It is not meant for identifying people, for surveillance, or for
any decision about an individual."""

_LIMITATIONS = """\
- Web search results over-represent some regions, ages and skin tones, and the engines' own ranking
  decides which images were kept; the attribute labels come from the search query, not from annotators,
  so some labels are wrong (a query for sunglasses also returns frame glasses).
- Alignment and filtering drop faces the detector misses (small, profile, heavily occluded), so hard
  cases are under-represented; the rejection histogram above shows what was dropped and why.
- Near-duplicates are removed by perceptual hash, which leaves some re-crops and re-encodings."""

_LICENCES = """\
Images crawled from the web keep their original licences: the dataset redistributes nothing under a
licence of its own, and the licence table above shows what the crawl recorded for each image (`unknown`
when nothing was recorded). Check each image's licence before any use beyond research. Opt-out requests
(URLs, domains, content hashes) are applied at crawl time and again at shard time, so a later opt-out
removes the image from every later version. The demo corpus uses photos shipped with scikit-image and
insightface, under those projects' licences."""


# ---------------------------------------------------------------------------------------------- public API


def render_card(inputs: CardInputs) -> str:
    """The dataset card as Markdown: the same inputs always render the same text."""
    samples = inputs.samples
    splits_col = _column(samples, "split")
    attrs_col = _column(samples, "attribute")
    engines_col = _column(samples, "engine")
    licences_col = _column(samples, "licence")
    split_counts = Counter(splits_col)
    splits = sorted(split_counts, key=_split_key)
    engines = sorted(set(engines_col))
    attributes = _attribute_names(attrs_col)
    sizes: Counter = Counter()
    if {"width", "height"} <= set(samples.columns):
        sizes = Counter(zip(_column(samples, "width"), _column(samples, "height")))
    total = len(samples)

    sections = [
        _front_matter(inputs, total),
        f"# MEGN dataset, version `{inputs.version}`",
        ("Aligned face crops labelled with one of four attributes (none, face mask, sunglasses, frame glasses), "
         "stored as WebDataset shards with one `.json` record per image."),
        "## Summary",
        _summary(inputs, splits, split_counts, sizes),
        "## Loading",
        _LOADING,
        "## Samples",
        f"![samples]({GRID_NAME})",
        "## Samples per attribute and split",
        _crosstab(attributes, splits, Counter(zip(attrs_col, splits_col)), _attribute_ids(samples, attributes),
                  "attribute"),
        "## Samples per attribute and source engine",
        _crosstab(attributes, engines, Counter(zip(attrs_col, engines_col)), None, "attribute"),
        "## Samples per licence",
        _licences(licences_col),
        "## Rejections",
        _rejections(inputs.rejections),
    ]
    if inputs.identities is not None:
        sections += ["## Identities", _identities(inputs.identities)]
    sections += [
        "## Shards",
        _shards(inputs.shards),
        "## Provenance",
        _provenance(inputs),
        "## Configuration",
        "The shard stage's configuration for this version:",
        "```json\n" + json.dumps(inputs.config, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n```",
        "## Intended use",
        _INTENDED_USE,
        "## Limitations and biases",
        _LIMITATIONS,
        "## Licences",
        _LICENCES,
    ]
    return "\n\n".join(sections) + "\n"


def _decode(data: bytes, attribute: str, index: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"example {index} of attribute {attribute!r} is not a readable image: {exc}") from exc


def grid_size(examples: Mapping[str, list[bytes]], cell: int = 96, per_row: int = 8) -> tuple[int, int]:
    """(width, height) of the grid: a label column plus `per_row` cells, one or more cell rows per attribute."""
    rows = sum(max(1, math.ceil(len(examples.get(a, [])) / per_row)) for a in _attribute_names(examples))
    return LABEL_WIDTH + per_row * cell, rows * cell


def make_grid(examples: dict[str, list[bytes]], cell: int = 96, per_row: int = 8) -> bytes:
    """PNG of example images, one labelled row group per attribute; identical inputs give identical bytes.

    Every MEGN attribute gets a row even with no examples, so a missing class is visible at a glance.
    Images are letterboxed into square cells rather than cropped, so nothing of a face is hidden.
    """
    if cell < 1 or per_row < 1:
        raise ValueError(f"cell and per_row must be positive, got cell={cell}, per_row={per_row}")
    width, height = grid_size(examples, cell, per_row)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    top = 0
    for attribute in _attribute_names(examples):
        images = examples.get(attribute, [])
        rows = max(1, math.ceil(len(images) / per_row))
        draw.rectangle([LABEL_WIDTH, top, width - 1, top + rows * cell - 1], fill=_CELL_BACKGROUND)
        for index, data in enumerate(images):
            image = ImageOps.contain(_decode(data, attribute, index), (cell, cell), Image.Resampling.LANCZOS)
            x = LABEL_WIDTH + (index % per_row) * cell + (cell - image.width) // 2
            y = top + (index // per_row) * cell + (cell - image.height) // 2
            canvas.paste(image, (x, y))
        label = f"{ATTRIBUTE_IDS[attribute]} {attribute}" if attribute in ATTRIBUTE_IDS else attribute
        _, upper, _, lower = draw.textbbox((0, 0), label, font=font)
        draw.text((6, top + max(0, (cell - (lower - upper)) // 2) - upper), label, fill=_TEXT, font=font)
        if top > 0:
            draw.line([(0, top), (width - 1, top)], fill=_SEPARATOR)
        top += rows * cell
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def write_card(folder: str | Path, inputs: CardInputs) -> tuple[Path, Path]:
    """Write `README.md` and `grid.png` into the version folder; returns (card path, grid path).

    Both are rendered before anything is written, so a bad example image leaves the folder untouched;
    the grid lands first so a reader who sees the card also finds the image it embeds.
    """
    folder = Path(folder)
    text = render_card(inputs)
    grid = make_grid(inputs.examples)
    card_path, grid_path = folder / CARD_NAME, folder / GRID_NAME
    atomic_write_bytes(grid_path, grid)
    atomic_write_text(card_path, text)
    return card_path, grid_path
