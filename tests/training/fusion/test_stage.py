"""train-fusion keeps the stage contract (tests/stage_kit.py), writes its outputs per attribute, refuses what it
cannot resume, and a run killed with SIGKILL resumes exactly (the same weights as an uninterrupted run)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from data_catalog.config import ConfigError
from data_catalog.manifest import PROJECT_ROOT, Manifest
from data_catalog.workspace import Workspace
from tests.stage_kit import StageContract
from tests.training.fusion.pairs_helpers import make_pairs_run, tiny_config, write_generator
from training.common.checkpoint import load_checkpoint
from training.fusion.stage import LATEST, MODELS_DIR, plan_fusion_run, run
from training.fusion.summary import describe


def prepare_pairs(root: Path, attributes: tuple[str, ...] = ("face_mask", "sunglasses", "frame_glasses"),
                  ) -> tuple[Workspace, list[Manifest], Path]:
    workspace = Workspace(root / "ws")
    generator = write_generator(root / "g.pt")
    return workspace, [make_pairs_run(workspace, generator, n_train=8, n_test=2, attributes=attributes)], generator


class TestTrainFusionStageContract(StageContract):
    stage = "train-fusion"

    def prepare(self, tmp_path: Path) -> tuple[Workspace, list[Manifest]]:
        workspace, inputs, _ = prepare_pairs(tmp_path)
        return workspace, inputs

    def config(self):
        return tiny_config()

    def changed_config(self):
        return tiny_config(loss={"l1_inside": 2.0})

    def test_outputs_and_summary(self, first_run: tuple) -> None:
        from PIL import Image

        workspace, inputs, manifest = first_run
        root = workspace.root / MODELS_DIR / manifest.run_id
        assert [(m.stage, m.run_id) for m in manifest.inputs] == [("fusion-pairs", inputs[0].run_id)]
        for attribute in ("face_mask", "sunglasses", "frame_glasses"):
            folder = root / attribute
            checkpoint = load_checkpoint(folder / LATEST)
            assert all(k.startswith("module.") for k in checkpoint["model"])
            assert checkpoint["sdgan"]["attribute"] == attribute and checkpoint["sdgan"]["images_seen"] == 16
            assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["ckpt-000000008.pt",
                                                                                 "ckpt-000000016.pt"]
            assert any((folder / "events").iterdir()) and (folder / "stats.jsonl").is_file()
            with Image.open(workspace.resolve(manifest.files[f"grid_{attribute}"].path)) as grid:
                assert grid.size == (4 * 32, 2 * 32)  # origin | basis | ours | GT, two held-out pairs
            assert manifest.counts[f"{attribute}_steps"] == 4
            assert manifest.files[f"stats_{attribute}"].volatile
        report = json.loads((root / "report.json").read_text())
        assert set(report["attributes"]["face_mask"]["test"]) >= {"loss_image_l1", "basis_image_l1", "offset_rms"}
        assert "| face_mask |" in (root / "report.md").read_text()
        assert json.loads((root / "dataset.json").read_text())["pairs_run"] == inputs[0].run_id
        outputs = describe(workspace, manifest)
        assert outputs is not None and manifest.run_id in outputs.title and Path(outputs.markdown).is_file()
        assert "face_mask held-out L1 to GT" in outputs.items


def test_resume_refuses_changed_config_and_finds_the_run_of_a_checkpoint(tmp_path: Path) -> None:
    workspace, inputs, _ = prepare_pairs(tmp_path, ("face_mask",))
    manifest = run(tiny_config(), workspace, inputs)
    root = workspace.root / MODELS_DIR / manifest.run_id
    with pytest.raises(ConfigError, match="loss"):
        plan_fusion_run(workspace, tiny_config(loss={"offset_norm": 0.5}, resume=manifest.run_id))
    numbered = min((root / "face_mask" / "checkpoints").iterdir())
    plan = plan_fusion_run(workspace, tiny_config(resume=str(numbered), schedule={"total_kimg": 0.032}))
    assert plan.root == root and plan.resume == {"face_mask": numbered} and plan.pairs == inputs[0].run_id
    same = run(tiny_config(resume=manifest.run_id, schedule={"total_kimg": 0.024}), workspace)
    assert same.counts["face_mask_steps"] == 4  # a resume trains on the run's saved config, not the profile's
    longer = run(tiny_config(resume=manifest.run_id, resume_overrides={"schedule.total_kimg": 0.024}), workspace)
    assert longer.counts["face_mask_steps"] == 6  # continued from step 4 by the explicit override, not restarted
    with pytest.raises(FileNotFoundError, match="no run 'nope'"):
        plan_fusion_run(workspace, tiny_config(resume="nope"))


def test_a_changed_generator_is_refused(tmp_path: Path) -> None:
    workspace, inputs, generator = prepare_pairs(tmp_path, ("face_mask",))
    write_generator(generator, seed=99)
    with pytest.raises(ValueError, match="changed since fusion-pairs run"):
        run(tiny_config(), workspace, inputs)


KILLED_RUN = """
import json, sys
from data_catalog.workspace import Workspace
from tests.training.fusion.pairs_helpers import tiny_config
from training.fusion.stage import run
run(tiny_config(**json.loads(sys.argv[2])), Workspace(sys.argv[1]))
"""


def test_a_killed_run_resumes_exactly(tmp_path: Path) -> None:
    workspace, _, _ = prepare_pairs(tmp_path, ("face_mask", "sunglasses"))
    sections = {"schedule": {"total_kimg": 0.048, "checkpoint_kimg": 0.008, "sample_kimg": 0.016, "log_steps": 1}}
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(workspace.root), json.dumps(sections)],
                               cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if list((workspace.root / MODELS_DIR).glob("*/face_mask/checkpoints/ckpt-000000008.pt")):
            break
        time.sleep(0.005)
    assert process.poll() is None, process.stderr.read().decode()[-2000:] if process.stderr else "exited"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert workspace.manifests("train-fusion") == []  # killed before it could finish
    (killed,) = list((workspace.root / MODELS_DIR).iterdir())
    resumed = run(tiny_config(**sections, resume=killed.name), workspace)
    straight = run(tiny_config(**sections), workspace)
    for attribute in ("face_mask", "sunglasses"):
        a = load_checkpoint(workspace.resolve(resumed.files[f"checkpoint_{attribute}"].path))
        b = load_checkpoint(workspace.resolve(straight.files[f"checkpoint_{attribute}"].path))
        assert a["sdgan"]["step"] == b["sdgan"]["step"] == 12
        for key in b["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), f"{attribute}: {key} differs after the kill"
        for index, entry in b["optimizer"]["state"].items():
            for name, value in entry.items():
                assert torch.equal(torch.as_tensor(a["optimizer"]["state"][index][name]), torch.as_tensor(value))
        assert resumed.files[f"grid_{attribute}"].sha256 == straight.files[f"grid_{attribute}"].sha256
        seen = [r["images_seen"] for r in json.loads("[" + ",".join(
            (killed / attribute / "stats.jsonl").read_text().splitlines()) + "]")]
        assert seen == sorted(set(seen)), "stats logged after the restored checkpoint were not dropped"


def test_trains_on_pairs_made_by_the_fusion_pairs_stage(tmp_path: Path) -> None:
    """The real upstream: fit-boundaries and fusion-pairs on tiny models, then train-fusion on their output."""
    from tests.training.fusion_pairs.upstream import boundaries_workspace, write_models
    from training.fusion_pairs.config import FusionPairsConfig
    from training.fusion_pairs.stage import run as make_pairs

    (tmp_path / "models").mkdir()
    models = write_models(tmp_path / "models")
    workspace, boundaries = boundaries_workspace(tmp_path / "ws", models)
    config = FusionPairsConfig.model_validate({
        "unsup3d": str(models / "unsup3d.pth"), "n_train": 8, "chunk_size": 4, "batch_size": 4,
        "canonical_size": 16, "detector": "none", "templates": {"size": 64}, "runtime": {"device": "cpu", "threads": 1}})
    pairs = make_pairs(config, workspace, [boundaries])
    manifest = run(tiny_config(), workspace, [pairs])
    assert [(m.stage, m.run_id) for m in manifest.inputs] == [("fusion-pairs", pairs.run_id)]
    report = json.loads(workspace.resolve(manifest.files["report.json"].path).read_text())
    for attribute in ("face_mask", "sunglasses", "frame_glasses"):
        assert manifest.counts[f"{attribute}_steps"] == 4
        assert report["attributes"][attribute]["test_pairs"] == 4  # eval.pairs of the 6 held-out w
        assert report["attributes"][attribute]["test"]["basis_image_l1"] > 0
