"""Resume helpers: run id / run folder / checkpoint file, config changes, dataset resolution, the run plan."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from data_catalog.config import ConfigError
from data_catalog.workspace import Workspace
from training.common.distributed import DistContext
from training.common.resume import (
    DatasetNotFound,
    check_resume_config,
    plan_run,
    resolve_dataset,
    resume_folder,
    shared_run_id,
)
from training.common.run_folder import RunFolder

MODELS = Path("models") / "toy"


@pytest.fixture()
def workspace(tmp_path: Path) -> Workspace:
    """A workspace with one complete dataset version (v-a) and one still being written (no version.json)."""
    workspace = Workspace(tmp_path / "ws")
    workspace.dataset_dir("v-a").mkdir(parents=True)
    (workspace.dataset_dir("v-a") / "version.json").write_text(json.dumps({"version": "v-a"}), encoding="utf-8")
    workspace.dataset_dir("v-partial").mkdir(parents=True)
    return workspace


def _run(workspace: Workspace, run_id: str, checkpoints: tuple[int, ...] = (8, 16)) -> RunFolder:
    folder = RunFolder(workspace.root / MODELS / run_id).create()
    folder.write_json("config.json", {"config": {"dataset": "v-a", "model": {"width": 4}}})
    for images in checkpoints:
        folder.checkpoint_path(images).write_bytes(b"x")
    return folder


def test_resume_by_run_id_folder_or_checkpoint(workspace: Workspace, tmp_path: Path) -> None:
    folder = _run(workspace, "toy-1")
    assert resume_folder(workspace, "toy-1", MODELS) == (folder, folder.checkpoint_path(16))
    found, checkpoint = resume_folder(workspace, str(folder.root), MODELS)
    assert found is not None and found.root == folder.root and checkpoint == folder.checkpoint_path(16)
    found, checkpoint = resume_folder(workspace, str(folder.checkpoint_path(8)), MODELS)
    assert found is not None and found.root == folder.root and checkpoint == folder.checkpoint_path(8)
    loose = tmp_path / "downloaded.pt"
    loose.write_bytes(b"x")
    assert resume_folder(workspace, str(loose), MODELS) == (None, loose)  # a new run folder will be made
    empty = _run(workspace, "toy-2", checkpoints=())
    found, checkpoint = resume_folder(workspace, "toy-2", MODELS)
    assert found is not None and found.root == empty.root and checkpoint is None


def test_missing_resume_targets_are_clear_errors(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run 'toy-9'.*models/toy"):
        resume_folder(workspace, "toy-9", MODELS)
    with pytest.raises(FileNotFoundError, match="resume checkpoint not found.*gone.pt"):
        resume_folder(workspace, str(tmp_path / "gone.pt"), MODELS)


def test_config_may_change_only_in_the_allowed_sections() -> None:
    saved = {"dataset": "v-a", "model": {"width": 4}, "schedule": {"total_kimg": 1}, "resume": None}
    allowed = ("schedule", "runtime")
    check_resume_config(saved, {**saved, "schedule": {"total_kimg": 2}, "resume": "toy-1"}, allowed)
    check_resume_config(saved, {**saved, "dataset": None}, allowed)  # no dataset given: the run's own
    with pytest.raises(ConfigError, match=r"differs from the run's in \['model'\]; only \['runtime', 'schedule'\]"):
        check_resume_config(saved, {**saved, "model": {"width": 8}}, allowed)
    with pytest.raises(ConfigError, match="dataset"):
        check_resume_config(saved, {**saved, "dataset": "v-b"}, allowed)
    with pytest.raises(ConfigError, match="dataset"):
        check_resume_config(saved, {**saved, "dataset": None}, allowed, inherited=())


def test_dataset_resolution(workspace: Workspace) -> None:
    version, folder, producer = resolve_dataset(workspace, "v-a")
    assert (version, folder, producer) == ("v-a", workspace.dataset_dir("v-a"), None)
    with pytest.raises(DatasetNotFound, match="'v-partial' not found.*versions: v-a, v-partial"):
        resolve_dataset(workspace, "v-partial")
    with pytest.raises(DatasetNotFound, match="no dataset version given"):
        resolve_dataset(workspace, None)


def test_a_single_process_draws_its_own_run_id() -> None:
    first, second = shared_run_id("train-toy", DistContext()), shared_run_id("train-toy", DistContext())
    assert first.startswith("train-toy-") and first != second


@dataclass
class ToyConfig:
    dataset: str | None = "v-a"
    resume: str | None = None
    model: dict[str, Any] = field(default_factory=lambda: {"width": 4})

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "resume": self.resume, "model": self.model}


def test_plan_run_starts_fresh_or_continues_a_run_with_its_dataset(workspace: Workspace) -> None:
    plan = plan_run(workspace, "train-toy", MODELS, ToyConfig())
    assert plan.folder.root == workspace.root / MODELS / plan.run_id and plan.folder.checkpoints.is_dir()
    assert plan.is_new_folder and plan.resume_from is None and plan.dataset_version == "v-a"
    plan.folder.write_json("config.json", {"config": ToyConfig().to_dict()})
    plan.write_dataset_record("train", [Path("train-000000.tar")])
    assert plan.folder.read_json("dataset.json") == {"dataset_version": "v-a", "split": "train",
                                                     "shards": ["train-000000.tar"], "shard_run": None}
    plan.folder.checkpoint_path(24).write_bytes(b"x")

    # Resumed without a dataset: the run's own, not whatever would be current now.
    again = plan_run(workspace, "train-toy", MODELS, ToyConfig(dataset=None, resume=plan.run_id))
    assert again.folder.root == plan.folder.root and not again.is_new_folder
    assert again.resume_from == plan.folder.checkpoint_path(24) and again.dataset_version == "v-a"
    assert again.run_id != plan.run_id  # a new catalog run continues the same run folder
    with pytest.raises(ConfigError, match="model"):
        plan_run(workspace, "train-toy", MODELS, ToyConfig(resume=plan.run_id, model={"width": 8}))
