"""A trainer's run folder (`models/<model>/<run-id>/`): config, stats, TensorBoard events, grids, checkpoints.

Everything written here survives a kill: checkpoints and grids are written atomically, stats lines are
flushed one by one, and on resume the stats logged after the restored checkpoint are dropped so that no
kimg appears twice. Every stats line carries the UTC time it was written, so a run's speed over days (and
the gap of a kill and resume) can be read from the file alone.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from data_catalog.atomic import atomic_write_text, is_temp_file

CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{9})\.pt$")
STATS_FILE = "stats.jsonl"


def utc_timestamp() -> str:
    """Now as UTC ISO-8601 with milliseconds (what `stats.jsonl` lines carry as "time")."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RunFolder:
    """Paths and files of one training run; checkpoints and grids are named by the images seen so far."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.grids = self.root / "grids"
        self.events = self.root / "events"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def create(self) -> RunFolder:
        for folder in (self.root, self.checkpoints, self.grids, self.events):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def stats_path(self) -> Path:
        return self.root / STATS_FILE

    def checkpoint_path(self, images_seen: int) -> Path:
        return self.checkpoints / f"ckpt-{images_seen:09d}.pt"

    def grid_path(self, images_seen: int) -> Path:
        return self.grids / f"fakes-{images_seen:09d}.png"

    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (temp files of an interrupted write are ignored)."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.iterdir() if CHECKPOINT_PATTERN.match(p.name) and not is_temp_file(p)]
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        checkpoints = self.list_checkpoints()
        return checkpoints[-1] if checkpoints else None

    def prune_checkpoints(self, keep: int) -> list[Path]:
        """Delete all but the newest `keep` checkpoints; returns what was removed."""
        removed = self.list_checkpoints()[:-keep] if keep > 0 else []
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def append_stats(self, record: dict[str, Any]) -> None:
        """Append one line with a "time" field, flushed to disk so a kill loses at most this line."""
        line = json.dumps({**record, "time": utc_timestamp()}, sort_keys=True)
        with open(self.stats_path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_stats(self) -> list[dict[str, Any]]:
        if not self.stats_path.is_file():
            return []
        records = []
        for line in self.stats_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill is the last one
        return records

    def truncate_stats(self, images_seen: int) -> int:
        """Keep the stats up to a restored checkpoint (and drop a half-written last line); returns dropped."""
        records = self.read_stats()
        kept = [r for r in records if r.get("images_seen", 0) <= images_seen]
        if self.stats_path.is_file():
            atomic_write_text(self.stats_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        return len(records) - len(kept)

    def write_json(self, name: str, data: Any) -> Path:
        """An indented JSON file in the run folder, written atomically (dataset.json and the like)."""
        path = self.root / name
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        return path

    def read_json(self, name: str) -> Any | None:
        """A JSON file of the run folder, or None when the run has none."""
        path = self.root / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
