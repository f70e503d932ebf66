"""`catalog verify`: every reference resolves, every stored byte is what the catalog says, nothing is orphaned."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from data_catalog.atomic import atomic_write_text
from data_catalog.blobs import BlobStore
from data_catalog.config import StageConfig
from data_catalog.hashing import sha256_file
from data_catalog.manifest import Manifest, manifest_from_row
from data_catalog.runs import stage_run
from data_catalog.schemas import BLOB_REFERENCES
from data_catalog.workspace import Workspace


@dataclass(frozen=True)
class Problem:
    kind: str  # missing_blob | modified_blob | orphan_blob | missing_file | modified_file | unreadable_part | ...
    subject: str  # hash or relative path
    detail: str


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "problem_counts": self.counts(),
            "problems": [asdict(p) for p in self.problems],
            "warnings": [asdict(p) for p in self.warnings],
        }


class VerificationError(RuntimeError):
    pass


def _read(ws: Workspace, table: str, columns: list[str] | None, report: VerifyReport) -> pd.DataFrame:
    """The readable rows of `table`; each part file that cannot be read is a problem (once), and the check goes on."""
    def unreadable(path: Path, reason: str) -> None:
        subject = ws.relative(path)
        if all(p.subject != subject for p in report.problems):
            report.problems.append(Problem("unreadable_part", subject, f"part of table {table!r}: {reason}"))

    return ws.tables.read(table, columns=columns, on_unreadable=unreadable)


def _column_values(ws: Workspace, table: str, column: str, report: VerifyReport) -> set[str]:
    return {v for v in _read(ws, table, [column], report)[column].tolist() if isinstance(v, str) and v}


def _completed_runs(ws: Workspace, report: VerifyReport) -> list[Manifest]:
    """Manifests of the completed runs in the readable `runs` parts, oldest first (Workspace.manifests, tolerant)."""
    runs = _read(ws, "runs", None, report)
    runs = runs[runs["status"] == "completed"].sort_values("finished_at", kind="stable")
    manifests = []
    for row in runs.to_dict("records"):
        try:
            manifests.append(manifest_from_row(row))
        except (ValueError, KeyError, TypeError) as exc:
            report.problems.append(Problem("unreadable_run", str(row.get("run_id")), f"its manifest: {exc}"))
    return manifests


def _check_store(store: BlobStore, name: str, referenced: set[str], rehash: bool, report: VerifyReport) -> None:
    for sha in sorted(referenced):
        path = store.find(sha)
        if path is None:
            report.problems.append(Problem("missing_blob", sha, f"referenced by the catalog, absent from {name} store"))
        elif rehash and sha256_file(path) != sha:
            report.problems.append(Problem("modified_blob", sha, f"{path} no longer hashes to its name"))
    on_disk = 0
    for sha, path in store:
        on_disk += 1
        if sha not in referenced:
            report.problems.append(Problem("orphan_blob", sha, f"{path} is referenced by no catalog row"))
    for tmp in store.temp_files():
        report.warnings.append(Problem("stale_temp_file", str(tmp), "left by an interrupted write; safe to delete"))
    report.checked[f"{name}_blobs_referenced"] = len(referenced)
    report.checked[f"{name}_blobs_on_disk"] = on_disk


def _check_file(ws: Workspace, relative: str, sha256: str | None, rehash: bool, owner: str, report: VerifyReport) -> None:
    path = ws.resolve(relative)
    if not path.is_file():
        report.problems.append(Problem("missing_file", relative, f"listed by {owner}, absent"))
    elif rehash and sha256 and sha256_file(path) != sha256:
        report.problems.append(Problem("modified_file", relative, f"content differs from the hash recorded by {owner}"))


def verify_workspace(ws: Workspace, rehash: bool = True) -> VerifyReport:
    report = VerifyReport()
    stores = {"raw": ws.blobs, "aligned": ws.aligned}
    for store_name, references in BLOB_REFERENCES.items():
        referenced: set[str] = set()
        for table, column in references:
            referenced |= _column_values(ws, table, column, report)
        _check_store(stores[store_name], store_name, referenced, rehash, report)

    manifests = _completed_runs(ws, report)
    for manifest in manifests:
        for output in manifest.files.values():
            _check_file(ws, output.path, output.sha256, rehash, f"run {manifest.run_id}", report)
    report.checked["runs"] = len(manifests)

    artifacts = _read(ws, "artifacts", ["artifact_id", "path", "sha256"], report)
    for row in artifacts.to_dict("records"):
        _check_file(ws, row["path"], row["sha256"], rehash, f"artifact {row['artifact_id']}", report)
    report.checked["artifacts"] = len(artifacts)

    shards = _column_values(ws, "samples", "shard", report)
    for shard in sorted(shards):
        _check_file(ws, shard, None, False, "the samples table", report)
    report.checked["shards"] = len(shards)
    return report


class VerifyConfig(StageConfig):
    """catalog-verify: consistency check of a whole workspace."""

    STAGE = "catalog-verify"
    rehash: bool = True  # re-hash every blob and output file (slower, catches silent corruption)
    fail_on_problems: bool = True  # a run with problems ends failed (after its report is written)


def run(config: VerifyConfig, workspace: Workspace, inputs: list[Manifest] | tuple = ()) -> Manifest:
    """Stage entry point: verify, write `reporting/<run id>/verify.json`, record the run."""
    with stage_run(workspace, config.STAGE, config, inputs) as run_ctx:
        report = verify_workspace(workspace, rehash=config.rehash)
        out_dir: Path = workspace.root / "reporting" / run_ctx.run_id
        out_dir.mkdir(parents=True, exist_ok=True)
        report_path = out_dir / "verify.json"
        atomic_write_text(report_path, json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
        run_ctx.save_config(out_dir)
        run_ctx.add_file("report", report_path)
        checked = report.checked
        run_ctx.manifest.counts.update(
            problems=len(report.problems),
            warnings=len(report.warnings),
            blobs_checked=checked["raw_blobs_referenced"] + checked["aligned_blobs_referenced"],
            runs_checked=checked["runs"],
        )
        if config.fail_on_problems and not report.ok:
            summary = ", ".join(f"{k}={v}" for k, v in sorted(report.counts().items()))
            raise VerificationError(f"workspace {workspace.root} is inconsistent: {summary} (see {report_path})")
    return run_ctx.manifest
