"""RunFolder: timestamped stats lines, truncation on resume, checkpoint listing and pruning."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from training.common.run_folder import RunFolder


def test_every_stats_line_carries_a_parseable_utc_time(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run").create()
    before = datetime.now(timezone.utc)
    folder.append_stats({"step": 1, "images_seen": 8, "loss": 0.5})
    folder.append_stats({"step": 2, "images_seen": 16, "loss": 0.25})
    lines = folder.stats_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    for line in lines:
        record = json.loads(line)
        stamp = datetime.fromisoformat(record["time"])
        assert stamp.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= stamp <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert [r["step"] for r in folder.read_stats()] == [1, 2]


def test_truncate_drops_lines_after_a_checkpoint_and_a_cut_last_line(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run").create()
    for step in range(1, 6):
        folder.append_stats({"step": step, "images_seen": 8 * step})
    with open(folder.stats_path, "a", encoding="utf-8") as handle:
        handle.write('{"step": 6, "images_se')  # a kill in the middle of a write
    assert folder.truncate_stats(24) == 2  # steps 4 and 5; the cut line never parsed
    kept = folder.read_stats()
    assert [r["step"] for r in kept] == [1, 2, 3]
    assert all("time" in r for r in kept)  # truncation keeps the original times
    assert folder.stats_path.read_text(encoding="utf-8").endswith("}\n")


def test_truncate_without_stats_is_a_no_op(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    assert folder.truncate_stats(100) == 0
    assert not folder.stats_path.exists()


def test_checkpoints_are_listed_oldest_first_and_pruned(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run").create()
    for images in (40, 8, 16, 32):
        folder.checkpoint_path(images).write_bytes(b"x")
    (folder.checkpoints / ".tmp-ckpt-000000048.pt").write_bytes(b"half")  # an interrupted atomic write
    (folder.checkpoints / "notes.txt").write_text("not a checkpoint")
    assert [p.name for p in folder.list_checkpoints()] == [
        "ckpt-000000008.pt", "ckpt-000000016.pt", "ckpt-000000032.pt", "ckpt-000000040.pt"]
    assert folder.latest_checkpoint() == folder.checkpoint_path(40)
    removed = folder.prune_checkpoints(keep=2)
    assert [p.name for p in removed] == ["ckpt-000000008.pt", "ckpt-000000016.pt"]
    assert [p.name for p in folder.list_checkpoints()] == ["ckpt-000000032.pt", "ckpt-000000040.pt"]
    assert RunFolder(tmp_path / "empty").latest_checkpoint() is None


def test_json_files_round_trip(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run").create()
    assert folder.read_json("dataset.json") is None
    folder.write_json("dataset.json", {"dataset_version": "v1", "shards": ["a.tar"]})
    assert folder.read_json("dataset.json") == {"dataset_version": "v1", "shards": ["a.tar"]}
    assert folder.grid_path(8).name == "fakes-000000008.png"
