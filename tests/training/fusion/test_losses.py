"""train-fusion's losses: the region L1, realism through a frozen D, the offset penalty, the weighted total, and
LPIPS from weights files the test writes (torchvision VGG16 layout, lpips' vgg.pth linear layers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from training.common.checkpoint import CheckpointError
from training.fusion.config import LossConfig
from training.fusion.losses import FusionLoss, clamp_straight_through, offset_penalty, realism_loss, region_l1
from training.fusion.perceptual import TAP_CHANNELS, VGG16Taps, load_lpips
from training.stylegan2.networks import Discriminator


def test_region_l1_weighs_each_side_by_its_own_area() -> None:
    image = torch.zeros(1, 3, 2, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).expand(1, 3, 2, 2)
    region = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # one pixel inside, three outside
    inside, outside = region_l1(image, target, region)
    assert float(inside) == 1.0 and float(outside) == 0.0
    inside, outside = region_l1(image, target, torch.zeros(1, 1, 2, 2))  # no region: inside is 0, not NaN
    assert float(inside) == 0.0 and float(outside) == pytest.approx(0.25)
    soft = torch.full((1, 1, 2, 2), 0.5)
    inside, outside = region_l1(image, target, soft)
    assert float(inside) == pytest.approx(0.25) and float(outside) == pytest.approx(0.25)


def test_images_meet_the_gt_clamped_with_the_gradient_of_the_raw_output() -> None:
    raw = torch.tensor([-1.5, -0.5, 0.5, 1.5], requires_grad=True)
    clamped = clamp_straight_through(raw)
    assert clamped.tolist() == [-1.0, -0.5, 0.5, 1.0]
    (clamped * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert raw.grad.tolist() == [1.0, 2.0, 3.0, 4.0]  # a plain clamp would give 0 at both ends
    image = torch.full((1, 3, 2, 2), 1.4, requires_grad=True)  # overshoots a saturated GT: no loss, no push
    out = FusionLoss(LossConfig(realism=0.0, offset_norm=0.0))(image, torch.ones(1, 3, 2, 2),
                                                             torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2))
    assert float(out.total.detach()) == 0.0


def test_realism_is_the_nonsaturating_loss_and_leaves_d_alone() -> None:
    torch.manual_seed(0)
    d = Discriminator(16, channel_max=8).eval().requires_grad_(False)
    image = torch.randn(2, 3, 16, 16, requires_grad=True)
    loss = realism_loss(d, image)
    torch.testing.assert_close(loss, torch.log1p(torch.exp(-d(image))).mean())
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.parameters())


def test_offset_penalty_is_the_mean_square() -> None:
    offset = torch.tensor([[[1.0, -2.0], [0.0, 3.0]]])
    assert float(offset_penalty(offset)) == pytest.approx((1 + 4 + 0 + 9) / 4)


def test_total_is_the_weighted_sum_and_terms_switch_off() -> None:
    torch.manual_seed(0)
    d = Discriminator(16, channel_max=8)
    weights = LossConfig(l1_inside=2.0, l1_outside=0.5, realism=0.1, offset_norm=0.01, lpips=0.8, identity=0.1)
    loss = FusionLoss(weights, discriminator=d)
    assert not d.training and not any(p.requires_grad for p in d.parameters())
    assert loss.active == ["l1_inside", "l1_outside", "realism", "offset_norm"]  # no LPIPS / ArcFace weights
    image, gt = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    region = (torch.rand(2, 1, 16, 16) > 0.7).float()
    offset = torch.randn(2, 6, 16)
    out = loss(image, gt, region, offset)
    t = out.terms
    expected = 2.0 * t["l1_inside"] + 0.5 * t["l1_outside"] + 0.1 * t["realism"] + 0.01 * t["offset_norm"]
    torch.testing.assert_close(out.total, expected)
    torch.testing.assert_close(t["image_l1"], (image - gt).abs().mean())
    off = FusionLoss(LossConfig(realism=0.0, offset_norm=0.0), discriminator=None)
    assert off.active == ["l1_inside", "l1_outside"] and "realism" not in off(image, gt, region, offset).terms
    with pytest.raises(ValueError, match="discriminator"):
        FusionLoss(LossConfig(realism=0.5))


def write_vgg16(path: Path, seed: int = 0) -> Path:
    """Random VGG16 weights in torchvision's layout, with a classifier head the loader must ignore."""
    torch.manual_seed(seed)
    state = VGG16Taps().state_dict()
    state["classifier.0.weight"] = torch.zeros(4, 4)
    torch.save(state, path)
    return path


def write_lpips_linear(path: Path, seed: int = 1) -> Path:
    """lpips' vgg.pth layout: lin<k>.model.1.weight of shape (1, C, 1, 1), non-negative."""
    generator = torch.Generator().manual_seed(seed)
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator)
                for k, c in enumerate(TAP_CHANNELS)}, path)
    return path


def test_lpips_is_a_per_sample_distance_with_the_documented_arithmetic(tmp_path: Path) -> None:
    vgg = write_vgg16(tmp_path / "vgg16.pth")
    linear = write_lpips_linear(tmp_path / "vgg.pth")
    lpips = load_lpips(vgg, linear)
    plain = load_lpips(vgg)
    assert lpips.calibrated and not plain.calibrated
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    d = lpips(a, b)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(lpips(a, a), torch.zeros(2))
    torch.testing.assert_close(lpips(b, a), d)
    # by hand, for the uncalibrated variant: unit-normalise each tap over channels, sum squared differences
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps_a, taps_b = plain.backbone((a - shift) / scale), plain.backbone((b - shift) / scale)
    manual = sum(((F.normalize(x, dim=1, eps=0) - F.normalize(y, dim=1, eps=0)) ** 2).sum(1).mean((1, 2))
                 for x, y in zip(taps_a, taps_b))
    torch.testing.assert_close(plain(a, b), manual, rtol=1e-4, atol=1e-6)
    assert [t.shape[1] for t in taps_a] == list(TAP_CHANNELS)


def test_lpips_gradients_reach_the_image_only(tmp_path: Path) -> None:
    lpips = load_lpips(write_vgg16(tmp_path / "vgg16.pth"))
    lpips.train()
    assert not lpips.training and not any(p.requires_grad for p in lpips.parameters())
    a = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    lpips(a, torch.zeros(1, 3, 32, 32)).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_lpips_wrong_files_are_clear_errors(tmp_path: Path) -> None:
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "half.pth")
    with pytest.raises(CheckpointError, match="not a torchvision VGG16"):
        load_lpips(tmp_path / "half.pth")
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "lin.pth")
    with pytest.raises(CheckpointError, match="lin1.model.1.weight"):
        load_lpips(write_vgg16(tmp_path / "vgg16.pth"), tmp_path / "lin.pth")
