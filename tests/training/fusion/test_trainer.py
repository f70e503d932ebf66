"""The fusion trainer: G and D frozen with gradients reaching only the network, truncation after the offsets,
exact continuation from a checkpoint in the official layout, batch-1 gradients, fine-tuning from fusion weights,
and the CUDA-only options ignored on CPU."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from data_catalog.workspace import Workspace
from tests.training.fusion.pairs_helpers import (
    N_LATENT,
    PSI,
    STYLE_DIM,
    build_trainer,
    make_pairs_run,
    tiny_config,
    train_batches,
    write_generator,
)
from training.common.checkpoint import CheckpointError, load_checkpoint
from training.fusion.checkpoint import load_fusion_checkpoint, save_fusion_checkpoint
from training.fusion.config import ArchConfig
from training.fusion.data import collate_pairs, read_pairs
from training.fusion.losses import offset_penalty, realism_loss, region_l1
from training.fusion.trainer import resolve_arch


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, str]:
    root = tmp_path_factory.mktemp("trainer")
    workspace = Workspace(root / "ws")
    manifest = make_pairs_run(workspace, write_generator(root / "g.pt"), n_train=8, n_test=2,
                              attributes=("face_mask", "frame_glasses"))
    return workspace, manifest.run_id


def _frozen_state(trainer) -> dict[str, torch.Tensor]:
    modules = {"g": trainer.editor.generator, "d": trainer.loss.discriminator}
    return {f"{name}.{k}": v.clone() for name, m in modules.items() for k, v in m.state_dict().items()}


def test_gradients_reach_the_network_and_not_g_or_d(pairs) -> None:
    workspace, run_id = pairs
    trainer, run = build_trainer(workspace, run_id, "face_mask", tiny_config())
    g, d = trainer.editor.generator, trainer.loss.discriminator
    assert d is not None and not g.training and not d.training
    assert not any(p.requires_grad for p in [*g.parameters(), *d.parameters()])
    before = _frozen_state(trainer)
    weights = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    stats = trainer.step(next(train_batches(run, trainer)))
    assert {"loss", "loss_l1_inside", "loss_l1_outside", "loss_realism", "loss_offset_norm"} <= set(stats)
    assert all(p.grad is None for p in [*g.parameters(), *d.parameters()])
    for key, value in _frozen_state(trainer).items():
        assert torch.equal(value, before[key]), f"{key} moved"
    assert not g.training and not d.training
    grads = [p.grad for p in trainer.network.parameters() if p.grad is not None]
    assert grads and sum(float(grad.abs().sum()) for grad in grads) > 0
    assert any(not torch.equal(v, weights[k]) for k, v in trainer.network.state_dict().items())


def test_truncation_applies_to_the_sum_of_w_basis_and_offset(pairs) -> None:
    workspace, run_id = pairs
    trainer, run = build_trainer(workspace, run_id, "face_mask", tiny_config())
    editor = trainer.editor
    w, nb, offset = torch.randn(2, STYLE_DIM), torch.randn(2, STYLE_DIM), torch.randn(2, N_LATENT, STYLE_DIM)
    mean = editor.mean_w.reshape(1, 1, -1)
    expected = mean + PSI * ((w + nb)[:, None] + offset - mean)
    torch.testing.assert_close(editor.latent(w, nb, offset), expected)
    # with n_o = 0 the editor renders exactly what the pairs' GT (n_true = 0 here) was rendered from
    batch = collate_pairs(read_pairs(run.shards("test"), "face_mask"))
    inputs = trainer.prepare(batch)
    basis = trainer.render(inputs, torch.zeros(2, N_LATENT, STYLE_DIM))
    assert (basis.clamp(-1, 1) - inputs.gt).abs().max() < 1.5 / 127.5  # the GT PNG holds it rounded to uint8


def test_resume_is_exact(pairs, tmp_path: Path) -> None:
    """Weights, Adam state, data position and RNG after 2 + 2 steps equal those after 4 uninterrupted steps."""
    workspace, run_id = pairs
    config = tiny_config()
    straight, run = build_trainer(workspace, run_id, "frame_glasses", config)
    straight_keys = []
    for batch in itertools.islice(train_batches(run, straight), 4):
        straight.step(batch)
        straight_keys.append(batch["key"])
    straight_rng = torch.get_rng_state()

    first, _ = build_trainer(workspace, run_id, "frame_glasses", config)
    for batch in itertools.islice(train_batches(run, first), 2):
        first.step(batch)
    path = first.save(tmp_path / "half.pt", {"pairs_run": run_id})
    resumed, _ = build_trainer(workspace, run_id, "frame_glasses", config)
    resumed.load_checkpoint(load_checkpoint(path))
    assert resumed.state.step == 2 and resumed.state.images_seen == 8
    resumed_keys = []
    for batch in itertools.islice(train_batches(run, resumed, start=resumed.state.step), 2):
        resumed.step(batch)
        resumed_keys.append(batch["key"])
    assert resumed_keys == straight_keys[2:]
    assert torch.equal(torch.get_rng_state(), straight_rng)
    for (key, a), b in zip(straight.network.state_dict().items(), resumed.network.state_dict().values()):
        assert torch.equal(a, b), f"{key} differs after resume"
    a_state, b_state = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert a_state["param_groups"] == b_state["param_groups"]
    for index, entry in a_state["state"].items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b_state["state"][index][name])), name


def test_checkpoint_is_the_official_layout_and_loads_officially(pairs, tmp_path: Path) -> None:
    workspace, run_id = pairs
    trainer, _ = build_trainer(workspace, run_id, "face_mask", tiny_config())
    path = trainer.save(tmp_path / "checkpoint_latest.pt", {"pairs_run": run_id})
    raw = load_checkpoint(path)
    assert all(key.startswith("module.") for key in raw["model"])  # DataParallel(model).state_dict()
    assert raw["sdgan"]["attribute"] == "face_mask" and raw["sdgan"]["step"] == 0 and "optimizer" in raw
    network = load_fusion_checkpoint(path)  # the loader synthesis (and the official test.py's layout) uses
    for (key, a), b in zip(trainer.network.state_dict().items(), network.state_dict().values()):
        assert torch.equal(a, b), key
    other, _ = build_trainer(workspace, run_id, "frame_glasses", tiny_config())
    with pytest.raises(CheckpointError, match="trains 'face_mask'"):
        other.load_checkpoint(raw)


def test_init_from_fusion_weights_and_arch_mismatch(pairs, tmp_path: Path) -> None:
    workspace, run_id = pairs
    source, _ = build_trainer(workspace, run_id, "face_mask", tiny_config(runtime={"seed": 5}))
    save_fusion_checkpoint(source.network, tmp_path / "official.pt")
    trainer, _ = build_trainer(workspace, run_id, "face_mask", tiny_config())
    trainer.init_from(tmp_path / "official.pt")
    for (key, a), b in zip(source.network.state_dict().items(), trainer.network.state_dict().values()):
        assert torch.equal(a, b), key
    wider, _ = build_trainer(workspace, run_id, "face_mask", tiny_config(arch={"encoder_width": 8}))
    with pytest.raises(CheckpointError):
        wider.init_from(tmp_path / "official.pt")


def test_arch_must_fit_the_generator(pairs) -> None:
    workspace, run_id = pairs
    _, run = build_trainer(workspace, run_id, "face_mask", tiny_config())
    from training.stylegan2.handle import GeneratorHandle

    handle = GeneratorHandle.load(run.index.generator)
    arch = resolve_arch(ArchConfig(), run.index, handle)
    assert (arch.num_ws, arch.w_dim, arch.image_size) == (N_LATENT, STYLE_DIM, 32)
    with pytest.raises(ValueError, match="arch.num_ws must be 8"):
        resolve_arch(ArchConfig(num_ws=14), run.index, handle)
    with pytest.raises(ValueError, match="arch.w_dim must be 16"):
        resolve_arch(ArchConfig(w_dim=512), run.index, handle)


def test_cuda_options_are_ignored_on_cpu(pairs) -> None:
    workspace, run_id = pairs
    trainer, run = build_trainer(workspace, run_id, "face_mask", tiny_config(runtime={"amp": True, "compile": True}))
    assert not trainer.amp and trainer.network_fast is trainer.network
    assert trainer.editor.render_fn is trainer.editor.generator
    assert torch.isfinite(trainer.step(next(train_batches(run, trainer)))["loss"])


def test_batch_one_step_matches_finite_differences(pairs) -> None:
    """A batch of 1 (PyTorch 2.13's CPU norm-backward bug lives there): autograd through the network, G and D
    agrees with a central difference along a random parameter direction, in float64."""
    workspace, run_id = pairs
    config = tiny_config(optim={"batch": 1})
    trainer, run = build_trainer(workspace, run_id, "face_mask", config)
    trainer.network.double()
    trainer.editor.double()
    trainer.loss.double()
    batch = next(train_batches(run, trainer))
    assert len(batch["key"]) == 1
    inputs = trainer.prepare(batch)
    inputs = type(inputs)(**{k: v.double() for k, v in vars(inputs).items()})
    trainer.network.eval()  # BatchNorm with running statistics: a function of the weights alone

    def loss() -> torch.Tensor:  # the loss terms without the straight-through clamp (its gradient is not d value)
        offset = trainer.network(inputs.face, inputs.template, inputs.canonical)
        image = trainer.editor(trainer.editor.latent(inputs.w, inputs.nb, offset))
        inside, outside = region_l1(image, inputs.gt, inputs.region)
        return inside + outside + realism_loss(trainer.loss.discriminator, image) + offset_penalty(offset)

    params = [p for p in trainer.network.parameters() if p.requires_grad]
    trainer.network.zero_grad()
    loss().backward()
    generator = torch.Generator().manual_seed(0)
    directions = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
    analytic = sum(float((p.grad * v).sum()) for p, v in zip(params, directions) if p.grad is not None)
    eps = 1e-8  # the random generator is strongly curved: 1e-6 leaves a 1e-4 truncation error (measured)
    with torch.no_grad():
        for p, v in zip(params, directions):
            p.add_(eps * v)
        up = float(loss())
        for p, v in zip(params, directions):
            p.sub_(2 * eps * v)
        down = float(loss())
    numeric = (up - down) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)
    # and the train-mode step itself at batch 1 runs and moves the network
    trainer.network.float()
    trainer.editor.float()
    trainer.loss.float()
    before = [p.detach().clone() for p in trainer.network.parameters()]
    stats = trainer.step(batch)
    assert torch.isfinite(stats["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.network.parameters()))
