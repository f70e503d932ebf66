"""The Unsup3d trainer: the reconstruction loss falls, checkpoints are in the official layout, depth is learnt."""

from __future__ import annotations

import torch

from tests.training.unsup3d.synthetic import render_faces, symmetric_scene, to_uint8
from training.unsup3d.config import TrainUnsup3dConfig
from training.unsup3d.trainer import Unsup3dTrainer

TINY = {"nf": 16, "zdim": 32, "encoder_nf": 8, "conf_nf": 16, "conf_zdim": 16}


def tiny_config(**sections: dict) -> TrainUnsup3dConfig:
    data = {"model": TINY, "optim": {"batch": 8}, "schedule": {"grid_seeds": 2}, "runtime": {"device": "cpu"}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return TrainUnsup3dConfig.model_validate(data)


def _faces(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    depth, albedo, light = symmetric_scene(n, seed=seed)
    return to_uint8(render_faces(depth, albedo, light, seed=seed + 1)), depth


def test_reconstruction_loss_falls() -> None:
    torch.set_num_threads(2)
    faces, _ = _faces()
    trainer = Unsup3dTrainer(tiny_config(optim={"lr": 1e-3}), faces)
    recon = [float(trainer.step()["loss_recon_l1"]) for _ in range(30)]
    first, last = sum(recon[:5]) / 5, sum(recon[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    grid = trainer.sample_grid()
    assert grid.shape == (1, 3, 2 * 64, 6 * 64) and torch.isfinite(grid).all()


def test_checkpoint_layout_and_exact_continuation(tmp_path) -> None:
    from training.common.checkpoint import load_checkpoint, save_checkpoint
    from training.unsup3d.checkpoint import load_unsup3d

    faces, _ = _faces(12)
    config = tiny_config()
    straight = Unsup3dTrainer(config, faces)
    for _ in range(4):
        straight.step()
    first = Unsup3dTrainer(config, faces)
    for _ in range(2):
        first.step()
    path = save_checkpoint(tmp_path / "half.pt", first.checkpoint({"dataset_version": "v"}))
    resumed = Unsup3dTrainer(config, faces)
    resumed.load_checkpoint(load_checkpoint(path))
    assert resumed.state.step == 2 and resumed.state.images_seen == 16
    for _ in range(2):
        resumed.step()
    for name, net in straight.nets.items():
        for (key, a), b in zip(net.state_dict().items(), resumed.nets[name].state_dict().values()):
            assert torch.equal(a, b), f"{name}.{key} differs after resume"
    nets = load_unsup3d(path)  # the other engineer's reader takes our checkpoints (official layout + sdgan)
    assert nets.kind == "sdgan" and nets.netC is not None
    raw = load_checkpoint(path)
    assert {"netD", "netA", "netL", "netV", "netC", "optimizerD", "optimizerC", "epoch", "sdgan"} <= set(raw)


def test_perceptual_term_with_vgg16_state_dict(tmp_path) -> None:
    from training.unsup3d.model import VGG16Features

    path = tmp_path / "vgg16.pth"
    torch.manual_seed(0)
    torch.save(VGG16Features().state_dict(), path)
    faces, _ = _faces(8)
    trainer = Unsup3dTrainer(tiny_config(perceptual={"vgg16": str(path)}), faces)
    stats = trainer.step()
    assert trainer.perceptual_on and "loss_perc" in stats and torch.isfinite(stats["loss"])


def _depth_correlation(trainer: Unsup3dTrainer, faces: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean per-face Pearson correlation of predicted and true canonical depth (4-pixel border left out)."""
    with torch.no_grad():
        predicted = trainer.model.canonical(faces.float() / 127.5 - 1)["depth"]
    p = predicted[:, 4:-4, 4:-4].reshape(len(faces), -1)
    t = truth[:, 4:-4, 4:-4].reshape(len(faces), -1)
    p, t = p - p.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    return float(((p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + 1e-12)).mean())


def test_canonical_depth_correlates_with_truth_after_a_short_run() -> None:
    """Faces rendered from known symmetric depth: record how well a ~40 s run recovers the depth."""
    torch.set_num_threads(2)
    faces, truth = _faces(32)
    trainer = Unsup3dTrainer(tiny_config(optim={"lr": 5e-4, "batch": 16}, data={"xflip": False}), faces)
    before = _depth_correlation(trainer, faces, truth)
    for _ in range(100):
        trainer.step()
    after = _depth_correlation(trainer, faces, truth)
    print(f"canonical depth correlation with the truth: {before:.3f} at init, {after:.3f} after 100 steps")
    # Seeded, but the trajectory depends on the CPU's float32 kernels: 0.135 at init on both machines seen; after
    # 60 steps 0.345 on an AVX-512 VM (2026-12-02) but 0.189 on an AVX2 one (2026-12-03), where 80 / 100 / 120
    # steps give 0.267 / 0.551 / 0.680. 100 steps leave a margin on both.
    assert after > 0.25 and after > before + 0.1
