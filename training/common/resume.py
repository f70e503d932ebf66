"""Starting or resuming a training run: which dataset, which run folder, which checkpoint, which run id.

Every trainer that reads MEGN shards and writes a run folder under `models/<model>/` does the same steps:
`--resume` may be a run id, a run folder or a checkpoint file; a resumed run keeps its folder, its dataset
(even if a newer shard run became current meanwhile) and its config; all ranks of a torchrun job must agree
on one run id. `resumed_config` gives the config a resumed run trains with: the one the run saved, changed
only by the `--set` values given with the resume (`resume_overrides`, filled by `load_config`) and only in
the sections the trainer lets change (schedule, logging, runtime). The profile's values do not leak in: a
resume that forgets to repeat `--set schedule.total_kimg=...` keeps the run's schedule. Every resume appends
its overrides and resulting config to the run folder's `config-history.jsonl`, and the next resume starts
from the newest entry. `plan_run` does the rest; the pieces are public for trainers that need a variation.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch.distributed as dist

from data_catalog.config import RESUME_OVERRIDES_KEY, ConfigError, StageConfig, apply_dotted, validate_config
from data_catalog.dataset import version_folder
from data_catalog.manifest import Manifest
from data_catalog.runs import MANIFEST_FILE_NAME, StageRun, new_run_id, stage_run
from data_catalog.workspace import Workspace
from training.common.distributed import DistContext, barrier
from training.common.loop import TrainingLoop
from training.common.run_folder import RunFolder

CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
HISTORY_FILE = "config-history.jsonl"  # one line per resume: its overrides and the config it trained with
log = logging.getLogger("sdgan.resume")


class DatasetNotFound(FileNotFoundError):
    """No dataset version was given and none can be found upstream, or the given one does not exist."""


def resolve_dataset(workspace: Workspace, version: str | None,
                    inputs: Sequence[Manifest] = ()) -> tuple[str, Path, Manifest | None]:
    """(version id, version folder, the shard run that wrote it): explicit version, else the upstream one."""
    shard_runs = [m for m in inputs if m.stage == "shard"] or [m for m in [workspace.current("shard")] if m]
    if version is None:
        if not shard_runs or (folder := version_folder(workspace, shard_runs[0])) is None:
            raise DatasetNotFound(f"no dataset version given and no completed shard run in {workspace.root}; "
                                  f"build one (sdgan run build-megn) or pass --dataset")
        return folder.name, folder, shard_runs[0]
    folder = workspace.dataset_dir(version)
    if not (folder / "version.json").is_file():
        known = ", ".join(workspace.dataset_versions()) or "none"
        raise DatasetNotFound(f"dataset version {version!r} not found in {workspace.root} (versions: {known})")
    producer = next((m for m in reversed(workspace.manifests("shard")) if version_folder(workspace, m) == folder),
                    None)
    return version, folder, producer


def resume_folder(workspace: Workspace, resume: str | Path,
                  models_dir: str | Path) -> tuple[RunFolder | None, Path | None]:
    """A run id, a run folder or a checkpoint file -> (folder to continue in, checkpoint to load).

    `models_dir` is relative to the workspace (e.g. `models/stylegan2`). A checkpoint outside a run folder
    gives no folder (the caller starts a new one); a run without checkpoints gives no checkpoint.
    """
    path = Path(resume)
    if path.suffix == ".pt":
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint not found: {path}")
        inside = path.parent.name == "checkpoints" and (path.parent.parent / CONFIG_FILE).is_file()
        return (RunFolder(path.parent.parent) if inside else None), path
    folder = RunFolder(path if path.is_dir() else workspace.root / models_dir / str(resume))
    if not folder.root.is_dir():
        raise FileNotFoundError(f"no run {str(resume)!r}: {folder.root} does not exist (give a run id from "
                                f"{workspace.root / models_dir}, a run folder or a .pt checkpoint)")
    return folder, folder.latest_checkpoint()


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], allowed: Iterable[str],
                        inherited: Iterable[str] = ("dataset",)) -> None:
    """ConfigError unless `current` equals the run's `saved` config outside the `allowed` sections.

    `inherited` keys that are None in `current` mean "the run's own" (no dataset given on resume) and are
    not a change. `resume` itself may always differ.
    """
    allowed = set(allowed) | {"resume", RESUME_OVERRIDES_KEY}
    current = dict(current)
    for key in inherited:
        if current.get(key) is None:
            current[key] = saved.get(key)
    changed = sorted(k for k in set(saved) | set(current) if k not in allowed and saved.get(k) != current.get(k))
    if changed:
        raise ConfigError(f"cannot resume: the config differs from the run's in {changed}; only "
                          f"{sorted(allowed - {'resume', RESUME_OVERRIDES_KEY})} may change on resume")


def saved_run_config(folder: RunFolder) -> tuple[dict[str, Any], Path] | None:
    """(config, where it was read) a run folder's training continues with, or None for a folder without one.

    The newest `config-history.jsonl` entry (what the last resume trained with), else `config.json`."""
    history = folder.root / HISTORY_FILE
    if history.is_file():
        lines = [line for line in history.read_text(encoding="utf-8").splitlines() if line.strip()]
        for line in reversed(lines):
            try:
                return json.loads(line)["config"], history
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill: the entry before it still holds
    saved = folder.read_json(CONFIG_FILE)
    return (saved["config"], folder.root / CONFIG_FILE) if saved is not None else None


def _dotted(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict) or not data:
        return {prefix: data}
    return {k: v for key, value in data.items() for k, v in _dotted(value, f"{prefix}.{key}" if prefix else key).items()}


C = TypeVar("C", bound=StageConfig)


def resumed_config(workspace: Workspace, models_dir: str | Path, config: C, allowed_changes: Iterable[str],
                   inherited: Iterable[str] = ("dataset",)) -> C:
    """The config a run resumed by `config.resume` trains with: the run's saved config plus `resume_overrides`.

    `config` itself when it resumes nothing, resumes a checkpoint outside a run folder, or has no
    `resume_overrides` field (then `plan_run` checks it against the saved one as a whole). ConfigError when
    an override changes a section outside `allowed_changes` (or `inherited` keys other than to None).
    """
    if not getattr(config, "resume", None) or RESUME_OVERRIDES_KEY not in type(config).model_fields:
        return config
    folder, _ = resume_folder(workspace, config.resume, models_dir)
    found = saved_run_config(folder) if folder is not None else None
    if found is None:
        return config
    saved, source = found
    explicit: dict[str, Any] = getattr(config, RESUME_OVERRIDES_KEY)
    data = apply_dotted(saved, explicit)
    data.update({"resume": config.resume, RESUME_OVERRIDES_KEY: explicit})
    for key in inherited:
        if data.get(key) is None:
            data[key] = saved.get(key)
    check_resume_config(saved, data, allowed_changes, inherited)
    effective = validate_config(type(config), data, f"{source} with the --set values given on resume")
    given, kept = _dotted(config.to_dict()), _dotted(effective.to_dict())
    ignored = sorted(k for k in given.keys() & kept.keys() if given[k] != kept[k])
    if ignored:
        log.info("resuming %s with its saved config; not taken from the profile (give --set to change): %s",
                 folder.root.name, ", ".join(f"{k}={kept[k]!r} (profile {given[k]!r})" for k in ignored))
    return effective


def shared_value(value: Any, ctx: DistContext) -> Any:
    """Rank 0's `value` on every rank (a run id, a resume decision: each rank would otherwise draw its own)."""
    box = [value]
    if ctx.enabled:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def shared_run_id(stage: str, ctx: DistContext) -> str:
    """A new run id for `stage`, rank 0's on every rank."""
    return shared_value(new_run_id(stage), ctx)


def find_interrupted_run(workspace: Workspace, stage: str, folders: Path, key: str,
                         resume_file: str = "resume.json") -> str | None:
    """The newest run folder under `folders` whose `resume_file` holds `key` and whose run never completed.

    For stages that continue a killed run in its own folder when the plan (config and input hashes) is the same,
    because what they already wrote (chunks, shards) is the expensive part.
    """
    if not folders.is_dir():
        return None
    for folder in sorted(folders.iterdir(), reverse=True):
        saved = folder / resume_file
        if not saved.is_file() or json.loads(saved.read_text(encoding="utf-8")).get("key") != key:
            continue
        manifest = workspace.run_dir(stage, folder.name) / MANIFEST_FILE_NAME
        if manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("status") == "completed":
            continue
        return folder.name
    return None


class ResumableConfig(Protocol):
    """What `plan_run` reads from a stage config: the dataset, the resume target, the whole as a dict."""

    dataset: str | None
    resume: str | None

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class RunPlan:
    """Where a run writes, what it resumes from, and the dataset it trains on."""

    run_id: str
    folder: RunFolder
    resume_from: Path | None
    dataset_version: str
    dataset_folder: Path
    producer: Manifest | None  # the shard run that wrote the dataset version (None if unknown)
    resumes_folder: bool = False  # continues a run folder that has its config (else: a new folder)
    resume_overrides: dict[str, Any] = field(default_factory=dict)  # the --set values given with the resume

    @property
    def is_new_folder(self) -> bool:
        """True until the run folder has its config.json (a fresh run, or a checkpoint from elsewhere)."""
        return not (self.folder.root / CONFIG_FILE).is_file()

    def bookkeeping(self, workspace: Workspace, stage: str, config: StageConfig,
                    ctx: DistContext) -> AbstractContextManager[StageRun | None]:
        """The catalog run on rank 0 (input: the shard run that wrote the dataset); nothing on other ranks."""
        if not ctx.is_main:
            return contextlib.nullcontext()
        return stage_run(workspace, stage, config, [self.producer] if self.producer else [], run_id=self.run_id)

    def start(self, loop: TrainingLoop, config: StageConfig, split: str, shards: Sequence[Path],
              ctx: DistContext) -> None:
        """Restore the checkpoint being resumed; a new run folder gets config.json and dataset.json, a resumed
        one a config-history.jsonl entry (rank 0). config.json stays as the run began: earlier catalog runs
        recorded its hash."""
        if self.resume_from is not None:
            loop.resume(self.resume_from)
        if ctx.is_main and self.is_new_folder:
            config.save(self.folder.root)
            self.write_dataset_record(split, shards)
        elif ctx.is_main and self.resumes_folder:
            self.record_resume(config)

    def record_resume(self, config: StageConfig) -> Path:
        """Append this resume (catalog run id, checkpoint, overrides, resulting config) to config-history.jsonl."""
        entry = {"run_id": self.run_id, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "resumed_from": self.resume_from.name if self.resume_from else None,
                 RESUME_OVERRIDES_KEY: self.resume_overrides, "config_hash": config.hash, "config": config.to_dict()}
        path = self.folder.root / HISTORY_FILE
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
        return path

    def record_run_files(self, run_ctx: StageRun) -> None:
        """config.json and dataset.json, and stats.jsonl as volatile (its timings differ from run to run)."""
        for name in (CONFIG_FILE, DATASET_FILE):
            run_ctx.add_file(name, self.folder.root / name)
        run_ctx.add_file("stats.jsonl", self.folder.stats_path, volatile=True)

    def record_training(self, run_ctx: StageRun, loop: TrainingLoop, result: dict[str, Any]) -> None:
        """The run files, the final checkpoint, the newest sample grid, and steps / images seen / kimg."""
        self.record_run_files(run_ctx)
        run_ctx.add_file("checkpoint", loop.final_checkpoint)
        grids = sorted(self.folder.grids.glob("fakes-*.png"))
        if grids:
            run_ctx.add_file("grid", grids[-1])
        run_ctx.manifest.counts.update({k: result[k] for k in ("steps", "images_seen", "kimg")})

    def write_dataset_record(self, split: str, shards: Sequence[Path]) -> Path:
        """dataset.json: the version, split and shards trained on, and the shard run that wrote them."""
        return self.folder.write_json(DATASET_FILE, {
            "dataset_version": self.dataset_version, "split": split, "shards": [p.name for p in shards],
            "shard_run": self.producer.run_id if self.producer else None})


def plan_run(workspace: Workspace, stage: str, models_dir: str | Path, config: ResumableConfig,
             inputs: Sequence[Manifest] = (), ctx: DistContext | None = None,
             allowed_changes: Iterable[str] = ()) -> RunPlan:
    """Resolve resume, config check, dataset and run id; rank 0 creates the run folder, then all ranks meet.

    `config` must be what `resumed_config` made of the stage's config (the stage trains with it, so it must
    ask first). Raises FileNotFoundError for a resume target that does not exist, ConfigError for a config
    changed outside `allowed_changes`, DatasetNotFound for a missing dataset.
    """
    ctx = ctx or DistContext()
    folder: RunFolder | None = None
    resume_from: Path | None = None
    dataset = config.dataset
    resumes_folder = False
    if config.resume:
        if isinstance(config, StageConfig) and resumed_config(workspace, models_dir, config, allowed_changes) != config:
            raise RuntimeError(f"plan_run was given the config as loaded, not the one the resumed run trains with: "
                               f"the stage must call resumed_config(workspace, {str(models_dir)!r}, config, ...) first")
        folder, resume_from = resume_folder(workspace, config.resume, models_dir)
        if folder is not None and (found := saved_run_config(folder)) is not None:
            check_resume_config(found[0], config.to_dict(), allowed_changes)
            resumes_folder = True
        if folder is not None and (record := folder.read_json(DATASET_FILE)) is not None:
            dataset = record["dataset_version"]  # the run keeps its dataset, whatever became current since
    version, dataset_folder, producer = resolve_dataset(workspace, dataset, list(inputs))
    run_id = shared_run_id(stage, ctx)
    if folder is None:
        folder = RunFolder(workspace.root / models_dir / run_id)
    if ctx.is_main:
        folder.create()
    barrier(ctx)
    return RunPlan(run_id, folder, resume_from, version, dataset_folder, producer, resumes_folder,
                   dict(getattr(config, RESUME_OVERRIDES_KEY, None) or {}))
