from __future__ import annotations

import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_catalog.card import (ATTRIBUTE_IDS, ATTRIBUTES, LABEL_WIDTH, CardInputs, human_bytes, make_grid, render_card,
                               write_card)


def encoded(color: tuple[int, int, int], size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def sample_frame() -> pd.DataFrame:
    """frame_glasses has no samples on purpose; licences include None and NaN."""
    rows = [
        ("none", "train", "google", "cc-by"), ("none", "train", "naver", None), ("none", "test", "google", "cc-by"),
        ("face_mask", "train", "naver", float("nan")), ("face_mask", "val", "naver", "cc0"),
        ("face_mask", "train", "google", "cc-by"), ("sunglasses", "test", "google", "cc0"),
    ]
    return pd.DataFrame({
        "key": [f"k{i:03d}" for i in range(len(rows))],
        "split": [r[1] for r in rows],
        "attribute": [r[0] for r in rows],
        "attribute_id": [ATTRIBUTE_IDS[r[0]] for r in rows],
        "engine": [r[2] for r in rows],
        "licence": [r[3] for r in rows],
        "width": [128] * len(rows),
        "height": [128] * len(rows),
    })


def card_inputs(**changes: object) -> CardInputs:
    inputs = CardInputs(
        version="v" + "ab" * 16,
        samples=sample_frame(),
        rejections={"crawl": {"http_404": 3}, "align": {"duplicate_near": 5, "no_face": 2}, "shard": {"opt_out": 1}},
        resolution=128,
        image_format="jpg",
        plan_hash="p" * 64,
        code_version="0.1.0+g1234567",
        created_from={"crawl": "run-crawl-1", "align": "run-align-2"},
        shards=[
            {"name": "test-000000.tar", "split": "test", "count": 2, "bytes": 2048, "sha256": "e" * 64},
            {"name": "train-000000.tar", "split": "train", "count": 4, "bytes": 3 * 1024 * 1024, "sha256": "a" * 64},
            {"name": "val-000000.tar", "split": "val", "count": 1, "bytes": 500, "sha256": "c" * 64},
        ],
        config={"shard_size": 1000, "splits": {"train": 0.8, "val": 0.1, "test": 0.1}, "image_format": "jpg"},
        examples={"none": [encoded((255, 0, 0))], "face_mask": [encoded((0, 255, 0), fmt="JPEG")] * 3,
                  "sunglasses": [encoded((0, 0, 255), (20, 50))]},
        identities={"train": 3, "test": 2, "val": 1},
    )
    return replace(inputs, **changes)


def section(card: str, title: str) -> str:
    """The body of one `## title` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, flags=re.S | re.M)
    assert match, f"section {title!r} missing"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """Cells of each Markdown table row, header and rule dropped."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row] for row in rows[2:]]


def test_catalog_attribute_ids_match_the_query_plan() -> None:
    assert ATTRIBUTES == ("none", "face_mask", "sunglasses", "frame_glasses")


def test_attribute_by_split_counts_match_the_frame_and_keep_empty_attributes() -> None:
    samples = sample_frame()
    rows = table_rows(section(render_card(card_inputs()), "Samples per attribute and split"))
    header_cells = ["attribute", "id", "train", "val", "test", "total"]
    by_name = {r[0]: r for r in rows}
    assert [r[0] for r in rows] == [*ATTRIBUTES, "**total**"]  # zero-sample frame_glasses still listed
    for attribute in ATTRIBUTES:
        row = dict(zip(header_cells, by_name[attribute]))
        assert row["id"] == str(ATTRIBUTE_IDS[attribute])
        for split in ("train", "val", "test"):
            expected = int(((samples["attribute"] == attribute) & (samples["split"] == split)).sum())
            assert int(row[split]) == expected
        assert int(row["total"]) == int((samples["attribute"] == attribute).sum())
    assert by_name["frame_glasses"][2:] == ["0", "0", "0", "0"]
    assert int(by_name["**total**"][-1]) == len(samples)


def test_engine_and_licence_tables_match_the_frame() -> None:
    samples = sample_frame()
    card = render_card(card_inputs())
    rows = {r[0]: r[1:] for r in table_rows(section(card, "Samples per attribute and source engine"))}
    assert set(rows) == {*ATTRIBUTES, "**total**"}
    for attribute in ATTRIBUTES:
        for i, engine in enumerate(["google", "naver"]):  # engines sorted
            expected = ((samples["attribute"] == attribute) & (samples["engine"] == engine)).sum()
            assert int(rows[attribute][i]) == expected
    licences = {r[0]: int(r[1]) for r in table_rows(section(card, "Samples per licence"))}
    assert licences == {"cc-by": 3, "cc0": 2, "unknown": 2}  # None and NaN both count as unknown


def test_rejection_histogram_sorted_by_count_with_proportional_bars() -> None:
    rows = table_rows(section(render_card(card_inputs()), "Rejections"))
    counts = [int(r[2]) for r in rows]
    assert counts == sorted(counts, reverse=True) == [5, 3, 2, 1]
    assert [(r[0], r[1]) for r in rows] == [("align", "duplicate_near"), ("crawl", "http_404"),
                                            ("align", "no_face"), ("shard", "opt_out")]
    bars = [len(r[4].strip("`")) for r in rows]
    assert bars == sorted(bars, reverse=True) and bars[0] > bars[-1] >= 1


def test_identities_shards_provenance_and_config_sections() -> None:
    inputs = card_inputs()
    card = render_card(inputs)
    assert card.startswith("---\n")
    assert f"# MEGN dataset, version `{inputs.version}`" in card
    assert "![samples](grid.png)" in card
    assert {r[0]: r[1] for r in table_rows(section(card, "Identities"))} == {
        "train": "3", "val": "1", "test": "2", "**total**": "6"}
    shards = table_rows(section(card, "Shards"))
    assert [r[0] for r in shards[:3]] == ["`train-000000.tar`", "`val-000000.tar`", "`test-000000.tar`"]
    assert shards[0][2:] == ["4", "3.0 MiB", "`aaaaaaaaaaaa`"]
    assert shards[1][3] == "500 B" and shards[-1][2] == "7"
    provenance = section(card, "Provenance")
    assert "p" * 64 in provenance and "0.1.0+g1234567" in provenance
    assert provenance.index("align: `run-align-2`") < provenance.index("crawl: `run-crawl-1`")
    assert '"shard_size": 1000' in section(card, "Configuration")
    assert "Identities" not in render_card(card_inputs(identities=None))


def test_render_is_deterministic_and_ignores_row_order() -> None:
    inputs = card_inputs()
    shuffled = card_inputs(samples=sample_frame().sample(frac=1.0, random_state=3).reset_index(drop=True),
                           rejections={"shard": {"opt_out": 1}, "align": {"no_face": 2, "duplicate_near": 5},
                                       "crawl": {"http_404": 3}},
                           shards=list(reversed(card_inputs().shards)),
                           config={"image_format": "jpg", "splits": {"test": 0.1, "val": 0.1, "train": 0.8},
                                   "shard_size": 1000})
    assert render_card(inputs) == render_card(inputs) == render_card(shuffled)


def test_empty_version_still_renders_every_attribute() -> None:
    empty = sample_frame().iloc[0:0]
    card = render_card(card_inputs(samples=empty, rejections={}, shards=[], examples={}))
    rows = table_rows(section(card, "Samples per attribute and split"))
    assert [r[0] for r in rows] == [*ATTRIBUTES, "**total**"]
    assert "No rejections recorded." in card


def test_grid_is_deterministic_and_sized_by_cell_rows_and_attributes() -> None:
    examples = card_inputs().examples
    data = make_grid(examples, cell=32, per_row=2)
    assert data == make_grid(examples, cell=32, per_row=2)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and not image.text  # no metadata chunks
    # none 1 -> 1 row, face_mask 3 -> 2 rows, sunglasses 1 -> 1 row, frame_glasses empty -> 1 labelled row
    assert image.size == (LABEL_WIDTH + 2 * 32, 5 * 32)
    assert Image.open(io.BytesIO(make_grid({}, cell=16, per_row=4))).size == (LABEL_WIDTH + 64, 4 * 16)
    extra = make_grid({"hat": [encoded((9, 9, 9))]}, cell=16, per_row=4)
    assert Image.open(io.BytesIO(extra)).size == (LABEL_WIDTH + 64, 5 * 16)


def test_grid_places_examples_and_labels_rows() -> None:
    image = Image.open(io.BytesIO(make_grid(card_inputs().examples, cell=32, per_row=2))).convert("RGB")
    pixels = np.asarray(image).astype(int)
    assert tuple(pixels[16, LABEL_WIDTH + 16]) == pytest.approx((255, 0, 0), abs=8)  # "none" first row
    assert tuple(pixels[32 + 16, LABEL_WIDTH + 16]) == pytest.approx((0, 255, 0), abs=8)  # face_mask next
    assert (pixels[:32, :LABEL_WIDTH] < 128).any()  # label text drawn in the label column
    assert (pixels[4 * 32:, :LABEL_WIDTH] < 128).any()  # the empty frame_glasses row is labelled too


def test_corrupt_example_raises_value_error_naming_the_attribute() -> None:
    examples = {"sunglasses": [encoded((1, 2, 3)), b"not an image"]}
    with pytest.raises(ValueError, match="sunglasses"):
        make_grid(examples)
    truncated = encoded((1, 2, 3), (64, 64), fmt="JPEG")[:200]
    with pytest.raises(ValueError, match="face_mask"):
        make_grid({"face_mask": [truncated]})


def test_write_card_writes_both_files(tmp_path: Path) -> None:
    inputs = card_inputs()
    folder = tmp_path / "primary" / "megn" / inputs.version
    card_path, grid_path = write_card(folder, inputs)
    assert (card_path, grid_path) == (folder / "README.md", folder / "grid.png")
    assert card_path.read_text(encoding="utf-8") == render_card(inputs)
    assert grid_path.read_bytes() == make_grid(inputs.examples)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "grid.png"]  # no temp files left


def test_write_card_with_bad_example_leaves_folder_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="none"):
        write_card(tmp_path / "v", card_inputs(examples={"none": [b"\x89PNG garbage"]}))
    assert not (tmp_path / "v").exists()


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 1024**3)] == ["0 B", "1023 B", "1.0 KiB", "1.5 KiB",
                                                                            "5.0 GiB"]
