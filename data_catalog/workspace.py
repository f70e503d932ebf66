"""The workspace: one folder holding every layer of the pipeline (DESIGN.md section 3)."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc

from data_catalog.atomic import atomic_write_text
from data_catalog.blobs import BlobStore
from data_catalog.manifest import Manifest, manifest_from_row
from data_catalog.tables import TableStore

LAYOUT_VERSION = 1
MARKER = "workspace.json"
CURRENT = "CURRENT"  # per-stage pointer file: runs/<stage>/CURRENT holds a run id
DATASETS = "primary/megn"  # one folder per dataset version
LAYERS = (
    "catalog",
    "raw/blobs",
    "intermediate/aligned",
    DATASETS,
    "models",
    "reporting",
    "runs",
)


class WorkspaceError(RuntimeError):
    pass


class RunNotFound(LookupError):
    """A run id that names no completed run of the stage asked for."""


def _wait_for_creator(marker: Path, timeout: float = 5.0) -> None:
    """A folder being laid out by another process has no marker for a moment: wait for it, briefly.

    Only a folder changed in the last minute can be one; an old non-empty folder fails at once.
    """
    folder = marker.parent
    if time.time() - folder.stat().st_mtime > 60:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not marker.is_file():
        time.sleep(0.05)


def unusable(root: Path, exc: OSError, doing: str) -> WorkspaceError:
    """A WorkspaceError saying what could not be done to the workspace at `root`, and why, in words."""
    reason = (exc.strerror or type(exc).__name__).lower()
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(root) else ""
    hint = {errno.EROFS: "it is on a read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted", errno.ENOSPC: "the disk is full",
            errno.ENOTDIR: "a part of the path is a file, not a folder"}.get(exc.errno or 0, reason)
    return WorkspaceError(f"cannot {doing} the workspace {root}: {hint}{where}")


class Workspace:
    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.root = Path(path).expanduser().resolve()
        try:
            self._open(create)
        except OSError as exc:
            raise unusable(self.root, exc, "create" if create else "open") from exc
        self.blobs = BlobStore(self.root / "raw" / "blobs")
        self.aligned = BlobStore(self.root / "intermediate" / "aligned")
        self.tables = TableStore(self.root / "catalog")

    def _open(self, create: bool) -> None:
        """Check the marker of an existing workspace, or lay out a new one (OSError: the caller says which)."""
        marker = self.root / MARKER
        if self.root.exists() and not self.root.is_dir():
            raise WorkspaceError(f"the workspace path {self.root} is a file, not a folder")
        if create and not marker.is_file() and self.root.is_dir() and any(self.root.iterdir()):
            _wait_for_creator(marker)  # another process may be creating this very workspace right now
        if marker.is_file():
            layout = json.loads(marker.read_text(encoding="utf-8")).get("layout_version")
            if layout != LAYOUT_VERSION:
                raise WorkspaceError(f"{self.root}: layout version {layout}, this code reads {LAYOUT_VERSION}")
        elif not create:
            raise WorkspaceError(f"{self.root} is not an sdgan workspace (no {MARKER}); create it with a stage run")
        elif self.root.exists() and any(self.root.iterdir()):
            raise WorkspaceError(f"{self.root} exists, is not empty and is not an sdgan workspace")
        else:
            for layer in LAYERS:
                (self.root / layer).mkdir(parents=True, exist_ok=True)
            atomic_write_text(marker, json.dumps({"layout_version": LAYOUT_VERSION}) + "\n")

    def require_writable(self) -> None:
        """WorkspaceError unless this process can write here: a read-only workspace still opens (catalog ls,
        show and verify only read), but a stage run must say so before it starts, not fail midway."""
        probe = self.root / "runs" / f".write-probe-{os.getpid()}-{threading.get_ident()}"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise unusable(self.root, OSError(exc.errno, exc.strerror), "write to") from exc  # the probe's name says nothing

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # tables ---------------------------------------------------------------------------------
    def append(self, name: str, frame: pd.DataFrame, run_id: str) -> Path | None:
        return self.tables.append(name, frame, run_id)

    def table(self, name: str, columns: list[str] | None = None, filter: pc.Expression | None = None) -> pd.DataFrame:
        """Every row ever appended, superseded ones included (the history); `effective` is the current view."""
        return self.tables.read(name, columns, filter)

    def effective(self, name: str, config_hash: str | None = None) -> pd.DataFrame:
        """The table without superseded rows, as the stages read it (rules: `data_catalog.effective.RULES`)."""
        from data_catalog.effective import effective_table  # effective builds on this module

        return effective_table(self, name, config_hash)

    # runs -----------------------------------------------------------------------------------
    def run_dir(self, stage: str, run_id: str) -> Path:
        return self.root / "runs" / stage / run_id

    def manifests(self, stage: str | None = None, status: str | None = "completed") -> list[Manifest]:
        """Manifests from the `runs` table, oldest first."""
        runs = self.table("runs")
        if stage is not None:
            runs = runs[runs["stage"] == stage]
        if status is not None:
            runs = runs[runs["status"] == status]
        runs = runs.sort_values("finished_at", kind="stable")
        return [manifest_from_row(row) for row in runs.to_dict("records")]

    def manifest(self, run_id: str) -> Manifest:
        runs = self.table("runs", filter=pc.field("run_id") == run_id)
        if runs.empty:
            raise KeyError(f"no run {run_id!r} in {self.root}")
        return manifest_from_row(runs.to_dict("records")[-1])

    def completed_run(self, run_id: str, stage: str) -> Manifest:
        """The completed `stage` run named `run_id` (a run id a user gave); RunNotFound saying what there is."""
        try:
            manifest = self.manifest(run_id)
        except KeyError:
            known = ", ".join(m.run_id for m in self.manifests(stage)) or "none"
            raise RunNotFound(f"no {stage} run {run_id!r} in {self.root} (completed runs: {known})") from None
        if manifest.stage != stage or manifest.status != "completed":
            raise RunNotFound(f"run {run_id!r} is a {manifest.status} {manifest.stage} run, not a completed "
                              f"{stage} run")
        return manifest

    def chosen_run(self, stage: str, run_id: str | None, inputs: Iterable[Manifest] = ()) -> Manifest | None:
        """The `stage` run a stage reads: `run_id`'s (RunNotFound unless completed), else the upstream one among
        `inputs`, else the current one; None when there is none."""
        if run_id is not None:
            return self.completed_run(run_id, stage)
        return next((m for m in inputs if m.stage == stage), None) or self.current(stage)

    def latest(self, stage: str) -> Manifest | None:
        """The most recently finished completed run of `stage`."""
        found = self.manifests(stage)
        return found[-1] if found else None

    def current(self, stage: str) -> Manifest | None:
        """The run whose outputs are current for `stage`: the last one completed or served from cache.

        A cache hit can make an older run current again (config A, then B, then A again), which is why
        this is a pointer and not simply the latest run.
        """
        pointer = self.root / "runs" / stage / CURRENT
        if pointer.is_file():
            return self.manifest(pointer.read_text(encoding="utf-8").strip())
        return self.latest(stage)

    def set_current(self, stage: str, run_id: str) -> None:
        atomic_write_text(self.root / "runs" / stage / CURRENT, run_id + "\n")

    # paths ----------------------------------------------------------------------------------
    def relative(self, path: str | Path) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()

    def resolve(self, relative: str) -> Path:
        return self.root / relative

    def dataset_dir(self, version: str) -> Path:
        """Where a MEGN dataset version lives (complete once its version.json exists)."""
        return self.root / DATASETS / version

    def dataset_versions(self) -> list[str]:
        folder = self.root / DATASETS
        # dot-prefixed folders are versions still being written (or left by a killed run)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
