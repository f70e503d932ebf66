"""The bookkeeping every stage run shares: run id, config.json, manifest, and the `runs` row.

Stages stay plain functions; wrapping their body in `stage_run(...)` is what makes a run traceable
and makes a failed run visible in the catalog instead of silently missing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from data_catalog.atomic import atomic_write_text
from data_catalog.config import StageConfig
from data_catalog.manifest import (
    Manifest,
    TableOutput,
    code_fingerprint,
    code_version,
    combine_digests,
    file_output,
    manifest_to_row,
    table_digest,
)
from data_catalog.stages import code_paths
from data_catalog.workspace import Workspace

MANIFEST_FILE_NAME = "manifest.json"

B = TypeVar("B")
# How a stage runs its independent work items: flows pass one backed by a Prefect task runner.
MapBatches = Callable[[Callable[[B], dict[str, Any]], list[B]], list[dict[str, Any]]]


def map_in_process(fn: Callable[[B], dict[str, Any]], items: list[B]) -> list[dict[str, Any]]:
    """The default `map_batches`: every item here, in order."""
    return [fn(item) for item in items]


def new_run_id(stage: str) -> str:
    """Sortable by start time, unique without coordination: `<stage>-<UTC time>-<random>`."""
    now = dt.datetime.now(dt.timezone.utc)
    return f"{stage}-{now:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:6]}"


class StageRun:
    """Handle a stage body uses to register its outputs while it runs."""

    def __init__(self, workspace: Workspace, config: StageConfig, manifest: Manifest) -> None:
        self.workspace = workspace
        self.config = config
        self.manifest = manifest
        self.dir = workspace.run_dir(manifest.stage, manifest.run_id)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    def add_file(self, name: str, path: str | Path, volatile: bool = False) -> None:
        """Record an output file with its content hash (the file must be complete).

        `volatile`: a log whose bytes change from run to run (timings); it stays out of the content hash.
        """
        self.manifest.files[name] = file_output(Path(path), self.workspace.root, volatile)

    def append(self, table: str, frame: pd.DataFrame, content_columns: Iterable[str] | None = None) -> None:
        """Append rows to a catalog table and fold them into this run's table output digest."""
        if frame.empty:
            return
        self.workspace.append(table, frame, self.run_id)
        columns = list(content_columns or [c for c in frame.columns if c != "run_id"])
        digest, rows = table_digest(frame, columns), frame.shape[0]
        if (previous := self.manifest.tables.get(table)) is not None:
            digest, rows = combine_digests(previous.digest, digest), rows + previous.rows
        self.manifest.tables[table] = TableOutput(table=table, rows=rows, digest=digest)

    def count(self, key: str, increment: int = 1) -> None:
        self.manifest.counts[key] = self.manifest.counts.get(key, 0) + increment

    def save_config(self, folder: str | Path) -> Path:
        """Write config.json next to an output folder (the run folder always gets one)."""
        return self.config.save(folder)


@contextlib.contextmanager
def stage_run(
    workspace: Workspace,
    stage: str,
    config: StageConfig,
    inputs: Iterable[Manifest] = (),
    run_id: str | None = None,
) -> Iterator[StageRun]:
    """Open a run; on exit append its `runs` row (completed or failed) and write manifest.json.

    The code fingerprint covers the code paths the stage's declaration names (`data_catalog.stages`).
    """
    manifest = Manifest(
        stage=stage,
        run_id=run_id or new_run_id(stage),
        config_hash=config.hash,
        code_version=code_version(),
        code_fingerprint=code_fingerprint(code_paths(stage)),
        inputs=[m.ref() for m in inputs],
        started_at=dt.datetime.now(dt.timezone.utc),
    )
    workspace.require_writable()  # a read-only workspace is one clear error here, not a failure midway
    run = StageRun(workspace, config, manifest)
    run.dir.mkdir(parents=True, exist_ok=True)
    config.save(run.dir)
    try:
        yield run
    except BaseException as exc:
        manifest.status = "failed"
        manifest.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        _finish(run)
        raise
    manifest.status = "completed"
    _finish(run)
    workspace.set_current(stage, manifest.run_id)


def _finish(run: StageRun) -> None:
    manifest = run.manifest
    manifest.finished_at = dt.datetime.now(dt.timezone.utc)
    atomic_write_text(run.dir / MANIFEST_FILE_NAME, manifest.to_json() + "\n")
    row = manifest_to_row(manifest, run.config.to_dict(), socket.gethostname())
    run.workspace.append("runs", pd.DataFrame([row]), manifest.run_id)


def record_interrupted(workspace: Workspace, stage: str, run_id: str, note: str) -> Manifest:
    """Give a run that was killed (no `runs` row) its row, status failed, so lineage stays complete."""
    folder = workspace.run_dir(stage, run_id)
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    started = dt.datetime.fromtimestamp((folder / "config.json").stat().st_mtime, dt.timezone.utc)
    manifest = Manifest(
        stage=stage,
        run_id=run_id,
        config_hash=saved["config_hash"],
        code_version=code_version(),
        code_fingerprint="unknown",
        status="failed",
        started_at=started,
        finished_at=dt.datetime.now(dt.timezone.utc),
        error=note,
    )
    atomic_write_text(folder / MANIFEST_FILE_NAME, manifest.to_json() + "\n")
    workspace.append("runs", pd.DataFrame([manifest_to_row(manifest, saved["config"], socket.gethostname())]), run_id)
    return manifest


def finished_run_ids(workspace: Workspace) -> set[str]:
    return set(workspace.table("runs", columns=["run_id"])["run_id"])
