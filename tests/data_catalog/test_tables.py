from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data_catalog.tables import SchemaError, TableStore, UnknownTableError


def image_rows(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sha256": [f"{i:064x}" for i in range(start, start + n)],
            "format": ["jpeg"] * n,
            "width": list(range(start, start + n)),
            "height": [10] * n,
            "bytes": [100] * n,
        }
    )


def test_round_trip_keeps_types_and_run_ids(tmp_path: Path) -> None:
    store = TableStore(tmp_path)
    store.append("images", image_rows(3), "run-a")
    store.append("images", image_rows(2, 3), "run-b")
    table = store.read("images")
    assert len(table) == 5 and set(table["run_id"]) == {"run-a", "run-b"}
    assert table["width"].tolist() == [0, 1, 2, 3, 4]
    assert str(table["width"].dtype) == "Int64"
    assert store.count("images") == 5 and store.run_ids("images") == ["run-a", "run-b"]
    only_b = store.read("images", columns=["sha256"], filter=pc.field("run_id") == "run-b")
    assert list(only_b.columns) == ["sha256"] and len(only_b) == 2


def test_nested_nullable_and_timestamp_columns(tmp_path: Path) -> None:
    store = TableStore(tmp_path)
    face = {
        "face_id": "f0", "image_sha256": "a" * 64, "face_index": 0, "box": [1.0, 2.0, 30.0, 40.0],
        "landmarks5": None, "landmarks68": [0.5] * 136, "detector": "retinaface", "detector_version": "0.1.0",
        "det_score": 0.99, "align_confidence": None, "landmark_sources": None, "quad": None,
        "decision": "rejected", "reason": "blur", "aligned_sha256": None, "identity_cluster": None,
        "config_hash": "c" * 64, "transform": None, "quality": None, "phash": None, "descriptor": None,
        "duplicate_of": None,
    }
    store.append("faces", pd.DataFrame([face]), "r1")
    row = store.read("faces").iloc[0]
    assert list(row["box"]) == [1.0, 2.0, 30.0, 40.0] and len(row["landmarks68"]) == 136
    assert row["landmarks5"] is None and pd.isna(row["identity_cluster"])
    candidate = {c: None for c in store.read("candidates").columns if c != "run_id"}
    candidate.update(url="http://x/a.jpg", engine="urls", status="failed", reason="timeout",
                     fetched_at=pd.Timestamp("2026-01-02T03:04:05Z"))
    store.append("candidates", pd.DataFrame([candidate]), "r1")
    assert store.read("candidates")["fetched_at"].iloc[0] == pd.Timestamp("2026-01-02T03:04:05Z")


def test_missing_and_unknown_columns_are_named(tmp_path: Path) -> None:
    store = TableStore(tmp_path)
    with pytest.raises(SchemaError, match=r"table 'images': missing column\(s\) \['bytes'\]"):
        store.append("images", image_rows(1).drop(columns=["bytes"]), "r")
    with pytest.raises(SchemaError, match=r"unknown column\(s\) \['colour'\]"):
        store.append("images", image_rows(1).assign(colour="red"), "r")
    assert store.files("images") == []


def test_mistyped_and_null_columns_are_named(tmp_path: Path) -> None:
    store = TableStore(tmp_path)
    with pytest.raises(SchemaError, match=r"column 'width' must be int64.*'wide'"):
        store.append("images", image_rows(1).assign(width=["wide"]), "r")
    with pytest.raises(SchemaError, match=r"column 'format' must be string"):
        store.append("images", image_rows(1).assign(format=[3]), "r")
    with pytest.raises(SchemaError, match=r"column 'sha256' must not be null \(1 null rows\)"):
        store.append("images", image_rows(1).assign(sha256=[None]), "r")
    assert store.files("images") == []


def test_unknown_table_and_bad_run_id(tmp_path: Path) -> None:
    store = TableStore(tmp_path)
    with pytest.raises(UnknownTableError, match="unknown table 'imgs'"):
        store.append("imgs", image_rows(1), "r")
    with pytest.raises(ValueError, match="run id"):
        store.append("images", image_rows(1), "../escape")
    with pytest.raises(SchemaError, match="run_id other than"):
        store.append("images", image_rows(1).assign(run_id="other"), "r")


def test_empty_table_reads_with_its_columns(tmp_path: Path) -> None:
    table = TableStore(tmp_path).read("samples")
    assert table.empty and "dataset_version" in table.columns
    assert TableStore(tmp_path).append("images", image_rows(0), "r") is None


def test_older_files_without_a_new_nullable_column_read_as_null(tmp_path: Path) -> None:
    store = TableStore(tmp_path)
    store.append("queries", pd.DataFrame([{
        "query_id": "q1", "plan_hash": "p", "engine": "google", "attribute": "sunglasses",
        "keyword": "sunglasses portrait", "language": "en", "window": None, "max_results": 100,
    }]), "new")
    old = pa.table({c: ["old" if c == "run_id" else "x"] for c in ["run_id", "query_id", "plan_hash", "engine", "attribute", "keyword", "language"]})
    (tmp_path / "queries" / "old").mkdir()
    pq.write_table(old, tmp_path / "queries" / "old" / "part-0.parquet")
    table = store.read("queries").set_index("run_id")
    assert pd.isna(table.loc["old", "max_results"]) and table.loc["new", "max_results"] == 100


def test_concurrent_appends_never_collide(tmp_path: Path) -> None:
    store = TableStore(tmp_path)
    threads = [threading.Thread(target=store.append, args=("images", image_rows(10, 10 * i), "same-run")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.files("images")) == 8 and store.read("images")["sha256"].is_unique
    assert len(store.read("images")) == 80
