"""train-classifier: the stage contract, exact resume, reports and the label check on a toy face dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_catalog.config import ConfigError, load_config
from data_catalog.manifest import Manifest
from data_catalog.workspace import Workspace
from tests.stage_kit import StageContract
from tests.training.classifier.helpers import VERSION, tiny_config, toy_workspace
from training.classifier.config import TrainClassifierConfig
from training.classifier.model import ATTRIBUTES
from training.classifier.scorer import AttributeScorer
from training.classifier.stage import run
from training.classifier.summary import describe
from training.common.checkpoint import load_checkpoint


class TestTrainClassifierStageContract(StageContract):
    stage = "train-classifier"

    def prepare(self, tmp_path: Path) -> tuple[Workspace, list]:
        return toy_workspace(tmp_path / "ws", copies=1), []

    def config(self) -> TrainClassifierConfig:
        return tiny_config(**{"schedule.total_kimg": 0.064})

    def changed_config(self) -> TrainClassifierConfig:
        return tiny_config(**{"schedule.total_kimg": 0.064, "optim.lr": 0.01})


def test_reports_label_check_and_scorer(tmp_path: Path) -> None:
    workspace = toy_workspace(tmp_path / "ws", copies=1)
    manifest = run(tiny_config(), workspace)
    for name in ("config.json", "dataset.json", "stats.jsonl", "checkpoint", "report.json", "report.md", "grid",
                 "label-check.md", "training_checkpoint"):
        assert name in manifest.files, name
    counts = manifest.counts
    assert counts["steps"] == 8 and counts["images_seen"] == 128 and counts["kimg"] == 0.128
    assert counts["composite_seen"] == 8 * 4 and counts["real_seen"] == 8 * 12
    folder = workspace.resolve(manifest.files["report.json"].path).parent
    report = json.loads((folder / "report.json").read_text())
    assert report["val_empty"] is False and set(report["figures"]) == set(ATTRIBUTES)
    for figures in report["figures"].values():
        assert {"precision", "recall", "auc", "positives"} <= set(figures) and figures["auc"] is not None
    assert report["temperature"] > 0 and report["ece_before"] is not None and report["ece_after"] is not None
    assert sum(sum(row.values()) for row in report["confusion"].values()) == report["val_samples"]
    assert "ROC AUC" in (folder / "report.md").read_text() and (folder / "grid-val.png").is_file()
    rows = workspace.table("label_checks")
    total = report["val_samples"] + report["train_samples"]
    assert len(rows) == total and set(rows["verdict"]) <= {"agrees", "disagrees", "uncertain"}
    assert (rows["dataset_version"] == VERSION).all() and (rows["run_id"] == manifest.run_id).all()
    assert sum(counts[f"label_{v}"] for v in ("agrees", "disagrees", "uncertain")) == total
    scorer = AttributeScorer.load(workspace.resolve(manifest.files["checkpoint"].path))
    assert scorer.attributes == ATTRIBUTES and scorer.resolution == 32 and scorer.temperature == report["temperature"]
    assert scorer.probabilities(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
    shown = describe(workspace, manifest)
    assert shown.artifact_key == "classifier-report" and "ROC AUC" in Path(shown.markdown).read_text() and "AUC" in shown.title


def test_empty_val_split_is_reported_not_a_crash(tmp_path: Path) -> None:
    workspace = toy_workspace(tmp_path / "ws", copies=1)
    for path in (workspace.root / "primary" / "megn" / VERSION).glob("megn-val-*"):
        path.unlink()
    manifest = run(tiny_config(**{"schedule.total_kimg": 0.032}), workspace)
    report = json.loads(workspace.resolve(manifest.files["report.json"].path).read_text())
    assert report["val_empty"] is True and report["temperature"] == 1.0 and "grid" not in manifest.files
    assert "No validation figures" in workspace.resolve(manifest.files["report.md"].path).read_text()


def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    workspace = toy_workspace(tmp_path / "ws", copies=1)
    whole = run(tiny_config(), workspace)
    # "killed" after the first checkpoint (0.064 kimg): a run of half the length, then resumed to the end
    half = run(tiny_config(**{"schedule.total_kimg": 0.064}), workspace)
    half_ckpt = workspace.resolve(half.files["training_checkpoint"].path)
    resumed = run(tiny_config(resume=str(half_ckpt.parent.parent.name)), workspace)
    a = load_checkpoint(workspace.resolve(whole.files["training_checkpoint"].path))
    b = load_checkpoint(workspace.resolve(resumed.files["training_checkpoint"].path))
    assert a["sdgan"]["step"] == b["sdgan"]["step"] == 8
    assert a["sdgan"]["composite_seen"] == b["sdgan"]["composite_seen"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_resume_trains_on_the_run_config_and_records_its_overrides(tmp_path: Path) -> None:
    """Resuming with only --resume keeps the run's schedule (not the profile's); a --set given with it is applied,
    recorded, and kept by the next resume."""
    workspace = toy_workspace(tmp_path / "ws", copies=1)
    first = run(tiny_config(**{"schedule.total_kimg": 0.064}), workspace)
    folder = workspace.root / "models" / "classifier" / first.run_id
    started_with = (folder / "config.json").read_bytes()

    def resume(*overrides: str) -> Manifest:
        return run(load_config(TrainClassifierConfig, "demo", [f"resume={first.run_id}", *overrides]), workspace)

    again = resume()  # the demo profile trains longer, on a larger model: neither applies to this run
    assert again.counts["steps"] == first.counts["steps"] == 4
    extended = resume("schedule.total_kimg=0.128")
    assert extended.counts["steps"] == 8
    after = resume()  # the extension is the run's schedule now
    assert after.counts["steps"] == 8 and after.counts["kimg"] == 0.128
    history = [json.loads(line) for line in (folder / "config-history.jsonl").read_text().splitlines()]
    assert [h["run_id"] for h in history] == [again.run_id, extended.run_id, after.run_id]
    assert [h["resume_overrides"] for h in history] == [{}, {"schedule.total_kimg": 0.128}, {}]
    assert [h["config"]["schedule"]["total_kimg"] for h in history] == [0.064, 0.128, 0.128]
    assert (folder / "config.json").read_bytes() == started_with  # as the run began (its hash is in the catalog)
    recorded = json.loads((workspace.root / "runs" / "train-classifier" / extended.run_id / "config.json").read_text())
    assert recorded["config"]["resume_overrides"] == {"schedule.total_kimg": 0.128}
    assert recorded["config"]["model"] == history[0]["config"]["model"]
    with pytest.raises(ConfigError, match=r"differs from the run's in \['optim'\]"):
        resume("optim.lr=0.5")
