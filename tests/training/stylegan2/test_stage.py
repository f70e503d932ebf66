"""train-stylegan2 keeps the stage contract (tests/stage_kit.py) on a toy dataset version."""

from __future__ import annotations

from pathlib import Path

from data_catalog.workspace import Workspace
from tests.stage_kit import StageContract
from tests.training.stylegan2.stylegan2_helpers import tiny_config, toy_workspace
from training.stylegan2.config import TrainStyleGAN2Config


class TestTrainStyleGAN2StageContract(StageContract):
    stage = "train-stylegan2"

    def prepare(self, tmp_path: Path) -> tuple[Workspace, list]:
        return toy_workspace(tmp_path / "ws", n=32, size=16, shards=2), []

    def config(self) -> TrainStyleGAN2Config:
        return tiny_config(**{"schedule.total_kimg": 0.032, "schedule.checkpoint_kimg": 0.032})

    def changed_config(self) -> TrainStyleGAN2Config:
        return tiny_config(**{"schedule.total_kimg": 0.032, "schedule.checkpoint_kimg": 0.032, "loss.r1_gamma": 5})
