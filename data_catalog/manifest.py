"""Manifests: the small JSON record a stage run returns and the next stage (and the cache) keys on.

Stages pass manifests, never tensors or DataFrames, so cache keys are built from content hashes and
never from paths or pickled objects.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from data_catalog.hashing import json_hash, sha256_bytes, sha256_file
from data_catalog.stages import DECLARATIONS_FILE

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "sdgan-pipeline"

Status = Literal["running", "completed", "failed"]
_MOD = 1 << 256


class FileOutput(BaseModel):
    model_config = ConfigDict(frozen=True)
    path: str  # relative to the workspace, POSIX separators
    sha256: str
    bytes: int
    # Logs with timings (stats.jsonl): listed and verified, but not part of what the run produced, so a rerun
    # that made the same model keeps its content hash and its downstream stays cached.
    volatile: bool = False


class TableOutput(BaseModel):
    model_config = ConfigDict(frozen=True)
    table: str
    rows: int
    digest: str  # hash of the content columns of the rows this run wrote


class InputRef(BaseModel):
    model_config = ConfigDict(frozen=True)
    stage: str
    run_id: str
    content_hash: str


class Manifest(BaseModel):
    stage: str
    run_id: str
    config_hash: str
    code_version: str
    code_fingerprint: str
    status: Status = "running"
    inputs: list[InputRef] = Field(default_factory=list)
    files: dict[str, FileOutput] = Field(default_factory=dict)
    tables: dict[str, TableOutput] = Field(default_factory=dict)
    counts: dict[str, int | float] = Field(default_factory=dict)  # kimg keeps its fraction
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    error: str | None = None

    @property
    def content_hash(self) -> str:
        """Identity of what the run produced (not when or where), used in downstream cache keys."""
        return json_hash(
            {
                "stage": self.stage,
                "files": {k: v.sha256 for k, v in self.files.items() if not v.volatile},
                "tables": {k: v.digest for k, v in self.tables.items()},
            }
        )

    def ref(self) -> InputRef:
        return InputRef(stage=self.stage, run_id=self.run_id, content_hash=self.content_hash)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls.model_validate_json(text)


def file_output(path: Path, workspace_root: Path, volatile: bool = False) -> FileOutput:
    return FileOutput(
        path=path.resolve().relative_to(workspace_root.resolve()).as_posix(),
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
        volatile=volatile,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def table_digest(frame: pd.DataFrame, columns: Iterable[str]) -> str:
    """Multiset hash of the rows (sum of row hashes mod 2**256) over the given columns.

    Independent of row order and of how rows were split into batches, so a resumed run that wrote the
    same rows in other batches gets the same digest; see `combine_digests`.
    """
    columns = list(columns)
    total = 0
    for row in frame[columns].to_dict("records"):
        line = json.dumps({c: _plain(row[c]) for c in columns}, sort_keys=True, ensure_ascii=False)
        total = (total + int(sha256_bytes(line.encode("utf-8")), 16)) % _MOD
    return f"{total:064x}"


def combine_digests(*digests: str) -> str:
    """The digest of the union of the batches the given digests were computed on."""
    return f"{sum(int(d, 16) for d in digests) % _MOD:064x}"


@functools.cache
def code_version() -> str:
    """`git describe` of this checkout, else the installed package version."""
    if (PROJECT_ROOT / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "describe", "--always", "--dirty", "--tags"],
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def code_fingerprint(paths: tuple[str, ...], root: Path | None = None) -> str:
    """`source_fingerprint` of this checkout (computed once per process) or of another tree (every time)."""
    return _checkout_fingerprint(tuple(paths)) if root is None else source_fingerprint(tuple(paths), Path(root))


@functools.cache
def _checkout_fingerprint(paths: tuple[str, ...]) -> str:
    return source_fingerprint(paths, PROJECT_ROOT)


def source_fingerprint(paths: tuple[str, ...], root: Path) -> str:
    """Hash of the Python sources under the given project paths (folders, searched recursively, or modules).

    A stage declares its paths (`data_catalog.stages`), so a module added to a sibling folder leaves its cache
    key alone. `git describe --dirty` cannot tell two uncommitted edits apart; the cache must, so keys use this.
    The declarations file itself is left out: declaring a new stage must not invalidate the others.
    """
    digest: dict[str, str] = {}
    for entry in sorted(set(paths)):
        target = root / entry
        if target.is_file():
            files = [target]
        elif target.is_dir():
            files = sorted(target.rglob("*.py"))
        else:
            raise FileNotFoundError(f"declared code path {entry!r} does not exist under {root}")
        for path in files:
            relative = path.relative_to(root).as_posix()
            if relative != DECLARATIONS_FILE and "__pycache__" not in path.parts:
                digest[relative] = sha256_file(path)
    return json_hash(digest)


def manifest_to_row(manifest: Manifest, config: dict[str, Any], host: str | None) -> dict[str, Any]:
    """Flatten a finished manifest into one `runs` table row (JSON columns for the nested parts)."""
    finished = manifest.finished_at or manifest.started_at
    return {
        "run_id": manifest.run_id,
        "stage": manifest.stage,
        "status": manifest.status,
        "config_hash": manifest.config_hash,
        "config": json.dumps(config, sort_keys=True),
        "code_version": manifest.code_version,
        "code_fingerprint": manifest.code_fingerprint,
        "inputs": json.dumps([i.model_dump() for i in manifest.inputs], sort_keys=True),
        "outputs": json.dumps(
            {
                "files": {k: v.model_dump() for k, v in manifest.files.items()},
                "tables": {k: v.model_dump() for k, v in manifest.tables.items()},
            },
            sort_keys=True,
        ),
        "counts": json.dumps(manifest.counts, sort_keys=True),
        "content_hash": manifest.content_hash if manifest.status == "completed" else None,
        "error": manifest.error,
        "started_at": pd.Timestamp(manifest.started_at),
        "finished_at": pd.Timestamp(finished),
        "duration_s": (finished - manifest.started_at).total_seconds(),
        "host": host,
    }


def manifest_from_row(row: dict[str, Any]) -> Manifest:
    outputs = json.loads(row["outputs"])
    finished = row["finished_at"]
    return Manifest(
        stage=row["stage"],
        run_id=row["run_id"],
        config_hash=row["config_hash"],
        code_version=row["code_version"],
        code_fingerprint=row["code_fingerprint"],
        status=row["status"],
        inputs=json.loads(row["inputs"]),
        files=outputs.get("files", {}),
        tables=outputs.get("tables", {}),
        counts=json.loads(row["counts"]),
        started_at=pd.Timestamp(row["started_at"]).to_pydatetime(),
        finished_at=None if pd.isna(finished) else pd.Timestamp(finished).to_pydatetime(),
        error=None if pd.isna(row["error"]) else row["error"],
    )
