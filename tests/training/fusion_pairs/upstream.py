"""Cheap upstream for the fusion-pairs tests: a random 32 px StyleGAN2, a real fit-boundaries run on it (tiny
classifier, 40 samples) and small Unsup3d checkpoints in our layout and in the official one."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from data_catalog.config import StageConfig
from data_catalog.manifest import Manifest
from data_catalog.runs import stage_run
from data_catalog.workspace import Workspace
from tests.training.boundaries.tiny_models import write_classifier
from training.boundaries.config import FitBoundariesConfig
from training.boundaries.stage import run as run_boundaries
from training.stylegan2.networks import Discriminator, Generator
from training.unsup3d.checkpoint import save_unsup3d
from training.unsup3d.networks import NetConfig

SIZE, STYLE_DIM = 32, 16
TEST_N = 6
BOUNDARY_SEEDS = (0, 40)  # sampling seeds 0..39
TEST_SEED = 10_000
SMALL_UNSUP3D = {"netD": NetConfig("EDDeconv", 3, 1, nf=16, zdim=16, tanh=False),
                 "netA": NetConfig("EDDeconv", 3, 3, nf=16, zdim=16),
                 "netL": NetConfig("Encoder", 3, 4, nf=8),
                 "netV": NetConfig("Encoder", 3, 6, nf=8)}


def write_generator(path: Path) -> Path:
    """A random 32 px StyleGAN2 in rosinality's layout (with args), as train-stylegan2 writes it."""
    torch.manual_seed(2024)
    g_ema = Generator(SIZE, style_dim=STYLE_DIM, n_mlp=1, channel_max=8)
    checkpoint = {"g": g_ema.state_dict(), "g_ema": g_ema.state_dict(),
                  "d": Discriminator(SIZE, channel_max=8).state_dict(), "g_optim": {}, "d_optim": {},
                  "args": argparse.Namespace(size=SIZE, latent=STYLE_DIM, n_mlp=1, channel_multiplier=2,
                                             lr_mlp=0.01)}
    torch.save(checkpoint, path)
    return path


def _small_nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(7)
    return {name: config.build() for name, config in SMALL_UNSUP3D.items()}


def write_unsup3d(path: Path, official: bool = False) -> Path:
    """Ours (save_unsup3d: the `sdgan` entry) or the official layout (networks + epoch, as checkpoint030.pth)."""
    nets = _small_nets()
    if official:
        torch.save({**{name: net.state_dict() for name, net in nets.items()}, "epoch": 30}, path)
        return path
    return save_unsup3d(path, nets, epoch=1)


def boundaries_config(models: Path) -> FitBoundariesConfig:
    return FitBoundariesConfig.model_validate({
        "generator": str(models / "g.pt"), "classifier": str(models / "c.pt"),
        "sampling": {"n_samples": BOUNDARY_SEEDS[1], "chunk_size": 8, "batch_size": 8, "truncation": 1.0,
                     "seed": BOUNDARY_SEEDS[0]},
        "svm": {"chosen_num_or_ratio": 0.25, "split_ratio": 0.7, "seed": 0},
        "test_set": {"n": TEST_N, "seed": TEST_SEED, "distance": 2.5},
        "figure": {"alphas": [0.0], "rows": 1, "scatter_points": 10},
        "runtime": {"device": "cpu", "threads": None}})


def write_models(folder: Path) -> Path:
    write_generator(folder / "g.pt")
    write_classifier(folder / "c.pt")
    write_unsup3d(folder / "unsup3d.pth")
    write_unsup3d(folder / "checkpoint030.pth", official=True)
    return folder


def boundaries_workspace(root: Path, models: Path) -> tuple[Workspace, Manifest]:
    """A workspace holding one completed fit-boundaries run made by the real stage."""
    workspace = Workspace(root)
    return workspace, run_boundaries(boundaries_config(models), workspace)


class Unsup3dStandIn(StageConfig):
    """What a registered train-unsup3d run is booked under (its real config is not needed to read it)."""

    STAGE = "train-unsup3d"
    note: str = "test"


def register_unsup3d_run(workspace: Workspace, checkpoint: Path) -> Manifest:
    """A completed train-unsup3d run whose checkpoint is a copy of `checkpoint` inside the workspace."""
    with stage_run(workspace, "train-unsup3d", Unsup3dStandIn()) as run:
        target = workspace.root / "models" / "unsup3d" / run.run_id / "checkpoints" / "ckpt-final.pt"
        target.parent.mkdir(parents=True)
        target.write_bytes(checkpoint.read_bytes())
        run.add_file("checkpoint", target)
    return run.manifest
