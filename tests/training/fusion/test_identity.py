"""The ArcFace-compatible identity network: arcface_torch state dicts load strictly, shapes come from the keys,
embeddings are unit vectors of the face crop, and the network stays frozen while gradients reach the image."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.common.checkpoint import CheckpointError
from training.fusion.identity import (
    FACE_BOX,
    ArcFaceIdentity,
    IResNet,
    IResNetShape,
    load_arcface,
    shape_from_state,
)

TINY = IResNetShape(stem=8, stages=((8, 1), (16, 2), (16, 1), (32, 1)), features=24)


def write_tiny_arcface(path: Path, shape: IResNetShape = TINY, seed: int = 0, prefix: str = "") -> Path:
    """A random IResNet saved as arcface_torch saves its backbones (a bare state dict, running stats included)."""
    torch.manual_seed(seed)
    net = IResNet(shape)
    with torch.no_grad():  # non-trivial running statistics, so eval mode is really used
        for module in net.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    torch.save({prefix + k: v for k, v in net.state_dict().items()}, path)
    return path


def test_released_depths_are_named_from_their_keys() -> None:
    widths = (64, 128, 256, 512)
    state = IResNet(IResNetShape(64, tuple(zip(widths, (2, 2, 2, 2))), 512)).state_dict()  # a real-sized r18
    read = shape_from_state(state)
    assert read.name == "iresnet18" and read.features == 512 and state["fc.weight"].shape == (512, 512 * 7 * 7)
    assert "layer1.0.downsample.0.weight" in state and "layer4.1.bn3.running_var" in state
    for blocks, name in (((3, 4, 6, 3), "iresnet34"), ((3, 4, 14, 3), "iresnet50"), ((3, 13, 30, 3), "iresnet100")):
        assert IResNetShape(64, tuple(zip(widths, blocks)), 512).name == name
    assert TINY.name.startswith("iresnet(stem 8")


def test_loads_strictly_and_embeds_unit_vectors(tmp_path: Path) -> None:
    identity = load_arcface(write_tiny_arcface(tmp_path / "r.pth"))
    assert shape_from_state(identity.backbone.state_dict()).stages == TINY.stages
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    embeddings = identity(images)
    assert embeddings.shape == (3, 24)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))
    assert torch.allclose(identity(images[:1]), embeddings[:1], atol=1e-5)  # eval mode: batch-independent
    # only the face box matters: changing a corner outside it changes nothing
    top, _, left, _ = (round(f * 64) for f in FACE_BOX)
    edited = images.clone()
    edited[..., :top, :left] = 1.0
    torch.testing.assert_close(identity(edited), embeddings)


def test_dataparallel_and_wrapped_state_dicts_load(tmp_path: Path) -> None:
    write_tiny_arcface(tmp_path / "dp.pth", prefix="module.")
    direct = load_arcface(write_tiny_arcface(tmp_path / "plain.pth"))
    wrapped = load_arcface(tmp_path / "dp.pth")
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    torch.testing.assert_close(direct(x), wrapped(x))


def test_wrong_files_are_clear_errors(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an arcface_torch IResNet"):
        load_arcface(tmp_path / "other.pth")
    state = IResNet(TINY).state_dict()
    state["fc.weight"] = torch.zeros(24, 32 * 8 * 8)  # a 128 px head
    torch.save(state, tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="not a 112 px IResNet"):
        load_arcface(tmp_path / "wide.pth")
    state = IResNet(TINY).state_dict()
    del state["layer2.1.bn3.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_arcface(tmp_path / "missing.pth")


def test_frozen_in_eval_mode_and_gradients_reach_the_image(tmp_path: Path) -> None:
    identity = load_arcface(write_tiny_arcface(tmp_path / "r.pth"))
    identity.train()
    assert not identity.training and not identity.backbone.training
    assert not any(p.requires_grad for p in identity.parameters())
    before = {k: v.clone() for k, v in identity.state_dict().items()}
    images = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)  # batch 1: the norm-backward case
    reference = identity(torch.rand(1, 3, 32, 32) * 2 - 1).detach()
    loss = (1 - (identity(images) * reference).sum(1)).mean()
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    for key, value in identity.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} moved"


def test_batch_one_gradient_matches_finite_differences(tmp_path: Path) -> None:
    """Eval-mode BatchNorm backward at N=1 (PyTorch 2.13's CPU bug concerns that case): check it numerically."""
    identity = load_arcface(write_tiny_arcface(tmp_path / "r.pth")).double()
    reference = identity(torch.rand(1, 3, 40, 40, dtype=torch.float64) * 2 - 1).detach()
    image = (torch.rand(1, 3, 40, 40, dtype=torch.float64) * 2 - 1).requires_grad_(True)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return 1 - (identity(x) * reference).sum()

    loss(image).backward()
    direction = torch.randn_like(image)
    eps = 1e-6
    numeric = (loss(image.detach() + eps * direction) - loss(image.detach() - eps * direction)) / (2 * eps)
    analytic = (image.grad * direction).sum()
    assert torch.isclose(analytic, numeric, rtol=1e-5, atol=1e-9), (float(analytic), float(numeric))


def test_identity_wrapper_keeps_a_given_backbone_frozen() -> None:
    wrapper = ArcFaceIdentity(IResNet(TINY))
    assert not any(p.requires_grad for p in wrapper.parameters()) and not wrapper.backbone.training
