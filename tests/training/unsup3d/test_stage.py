"""train-unsup3d keeps the stage contract (tests/stage_kit.py) on a toy dataset version, and resumes exactly."""

from __future__ import annotations

from pathlib import Path

import torch

from data_catalog.config import load_config
from data_catalog.workspace import Workspace
from tests.stage_kit import StageContract
from tests.training.stylegan2.stylegan2_helpers import VERSION, toy_workspace
from training.unsup3d import stage as unsup3d_stage
from training.unsup3d.config import TrainUnsup3dConfig
from training.unsup3d.summary import describe


def tiny_config(**overrides: object) -> TrainUnsup3dConfig:
    """Demo profile shrunk to 2 steps of batch 4 on one thread."""
    base = ["dataset=" + VERSION, "optim.batch=4", "schedule.total_kimg=0.008", "schedule.checkpoint_kimg=0.004",
            "schedule.sample_kimg=0.004", "schedule.tick_kimg=0.004", "schedule.log_steps=1",
            "schedule.grid_seeds=2", "runtime.device=cpu", "runtime.threads=1"]
    base += [f"{key}={value}" for key, value in overrides.items()]
    return load_config(TrainUnsup3dConfig, "demo", overrides=base)


class TestTrainUnsup3dStageContract(StageContract):
    stage = "train-unsup3d"

    def prepare(self, tmp_path: Path) -> tuple[Workspace, list]:
        return toy_workspace(tmp_path / "ws", n=12, size=32, shards=2), []

    def config(self) -> TrainUnsup3dConfig:
        return tiny_config()

    def changed_config(self) -> TrainUnsup3dConfig:
        return tiny_config(**{"loss.lam_flip": 0.25})

    def test_outputs_and_summary(self, first_run: tuple) -> None:
        workspace, _, manifest = first_run
        assert {"checkpoint", "grid", "mesh", "animation", "stats.jsonl"} <= set(manifest.files)
        mesh = workspace.resolve(manifest.files["mesh"].path)
        lines = Path(mesh).read_text().splitlines()
        assert sum(line.startswith("v ") for line in lines) == 64 * 64
        assert sum(line.startswith("f ") for line in lines) == 2 * 63 * 63
        from PIL import Image

        with Image.open(workspace.resolve(manifest.files["animation"].path)) as gif:
            assert gif.n_frames > 10
        with Image.open(workspace.resolve(manifest.files["grid"].path)) as grid:
            assert grid.size == (6 * 64, 2 * 64)
        outputs = describe(workspace, manifest)
        assert outputs is not None and manifest.run_id in outputs.title


def test_resume_continues_exactly(tmp_path: Path) -> None:
    from training.common.checkpoint import load_checkpoint

    workspace = toy_workspace(tmp_path / "ws", n=12, size=32, shards=2)
    half = unsup3d_stage.run(tiny_config(), workspace)
    resumed = unsup3d_stage.run(tiny_config(**{"schedule.total_kimg": 0.016, "resume": half.run_id}), workspace)
    straight = unsup3d_stage.run(tiny_config(**{"schedule.total_kimg": 0.016}), workspace)
    assert resumed.counts["steps"] == straight.counts["steps"] == 4
    a = load_checkpoint(workspace.resolve(resumed.files["checkpoint"].path))
    b = load_checkpoint(workspace.resolve(straight.files["checkpoint"].path))
    for name in ("netD", "netA", "netL", "netV", "netC"):
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs after resume"
