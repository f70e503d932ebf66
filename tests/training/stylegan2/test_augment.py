"""ADA augmentation: identity at p = 0, exact blits, gradients, determinism and the p controller."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.stylegan2.augment import AdaptiveAugment

ALL = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
       "brightness", "contrast", "lumaflip", "hue", "saturation")


def only(*names: str, p: float = 1.0, **kwargs: float) -> AdaptiveAugment:
    return AdaptiveAugment(p=p, **{name: (1 if name in names else 0) for name in ALL}, **kwargs)


def images(n: int = 8, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=gen) * 2 - 1


def test_p_zero_is_exact_identity():
    x = images()
    aug = AdaptiveAugment(p=0.0)
    assert torch.equal(aug(x), x)


def test_p_one_changes_images_keeps_shape_dtype_and_passes_gradients():
    x = images().requires_grad_(True)
    y = AdaptiveAugment(p=1.0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert not torch.allclose(y, x)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_grayscale_and_non_square():
    x = images(c=1, h=12, w=20)
    y = AdaptiveAugment(p=1.0)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_deterministic_under_fixed_seed():
    x = images()
    aug = AdaptiveAugment(p=0.7)
    torch.manual_seed(123)
    first = aug(x)
    torch.manual_seed(123)
    assert torch.equal(aug(x), first)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(aug(x, generator=gen_a), aug(x, generator=gen_b))


def test_xflip_only_gives_exact_flips():
    torch.manual_seed(0)
    x = images(n=32, h=8, w=12)
    y = only("xflip")(x)
    flipped = [torch.equal(y[i], torch.flip(x[i], dims=[-1])) for i in range(len(x))]
    kept = [torch.equal(y[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < len(x)  # p = 1 enables the flip; the flip itself is a fair coin


def test_rotate90_only_gives_exact_quarter_turns():
    torch.manual_seed(1)
    x = images(n=32)
    y = only("rotate90")(x)
    seen = set()
    for i in range(len(x)):
        matches = [k for k in range(4) if torch.equal(y[i], torch.rot90(x[i], k, dims=(-2, -1)))]
        assert matches, f"sample {i} is not a quarter turn"
        seen.update(matches)
    assert len(seen) == 4


def test_integer_translation_is_an_exact_shift_inside_the_image():
    torch.manual_seed(2)
    x = images(n=16, h=32, w=32)
    y = only("xint")(x)
    for i in range(len(x)):
        shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                  if torch.equal(y[i, :, 8:24, 8:24], x[i, :, 8 - dy:24 - dy, 8 - dx:24 - dx])]
        assert shifts, f"sample {i} is not an integer shift"


def test_general_warp_agrees_with_blit_for_quarter_turns():
    # A rotation of exactly 90 degrees through the interpolating path must match the exact blit path, which pins
    # down the coordinate conventions of both.
    torch.manual_seed(3)
    x = images(n=4)
    g = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    to_norm = torch.diag(torch.tensor([2 / 16, 2 / 16, 1.0]))
    theta = (to_norm @ g @ torch.linalg.inv(to_norm))[:2].expand(4, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    warped = torch.nn.functional.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    assert any(torch.allclose(warped, torch.rot90(x, k, dims=(-2, -1)), atol=1e-5) for k in (1, 3))


def test_colour_identity_for_constant_gray_under_hue_and_saturation():
    # Hue rotation and saturation act around the luma axis: a gray pixel (r = g = b) is unchanged.
    x = torch.full((8, 3, 4, 4), 0.3)
    y = only("hue", "saturation")(x)
    assert torch.allclose(y, x, atol=1e-5)


def feed(aug: AdaptiveAugment, sign: float, count: int) -> None:
    aug.accumulate(torch.full((count, 1), sign))


def test_adjust_raises_and_lowers_p_by_the_nvlabs_rule():
    aug = AdaptiveAugment(p=0.5, target=0.6, adjust_kimg=100)
    feed(aug, 1.0, 64)
    assert aug.adjust(64 * 4) == pytest.approx(0.5 + 256 / 100_000)
    assert aug.rt == 1.0
    feed(aug, -1.0, 64)
    assert aug.adjust(256) == pytest.approx(0.5)
    assert aug.rt == -1.0
    feed(aug, 1.0, 10)
    assert aug.adjust(10, world_size=4) == pytest.approx(0.5 + 40 / 100_000)
    feed(aug, 1.0, 50)
    assert aug.adjust() == pytest.approx(0.5 + 90 / 100_000)  # default: the number of accumulated logits


def test_adjust_clamps_and_ignores_an_empty_accumulator():
    aug = AdaptiveAugment(p=0.0, adjust_kimg=0.001)  # one image moves p by 1
    feed(aug, -1.0, 8)
    assert aug.adjust(8) == 0.0
    feed(aug, 1.0, 8)
    assert aug.adjust(8) == 1.0
    assert aug.adjust(8) == 1.0  # nothing accumulated: unchanged
    assert math.isclose(float(aug.p), 1.0)


def test_mixed_logits_use_the_mean_sign():
    aug = AdaptiveAugment(p=0.5, target=0.6, adjust_kimg=1)
    aug.accumulate(torch.tensor([3.0, 2.0, -1.0, 0.5]))  # r_t = 0.5 < 0.6: lower p
    assert aug.adjust(4) == pytest.approx(0.5 - 4 / 1000)
    assert aug.rt == pytest.approx(0.5)


def test_state_dict_round_trip_restores_p_and_accumulator():
    aug = AdaptiveAugment(p=0.0, adjust_kimg=1)
    feed(aug, 1.0, 100)
    aug.adjust(100)
    feed(aug, -1.0, 3)
    state = aug.state_dict()
    assert {"p", "sign_sum", "sign_count"} <= set(state)
    restored = AdaptiveAugment(p=0.0, adjust_kimg=1)
    restored.load_state_dict(state)
    assert float(restored.p) == pytest.approx(0.1)
    x = images()
    torch.manual_seed(9)
    expected = aug(x)
    torch.manual_seed(9)
    assert torch.equal(restored(x), expected)  # the host copy of p followed the load
    assert restored.adjust(3) == aug.adjust(3)


def _ddp_worker(rank: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        aug = AdaptiveAugment(p=0.5, target=0.6, adjust_kimg=1)
        # Rank 0 alone would say "overfitting" (r_t = 1), rank 1 alone "not" (r_t = -2/3); together r_t = 4/14.
        aug.accumulate(torch.ones(8) if rank == 0 else torch.tensor([1.0, -1.0, -1.0, -1.0, -1.0, -1.0]))
        results[rank] = (aug.adjust(8, world_size=2), aug.rt)
    finally:
        dist.destroy_process_group()


def test_adjust_all_reduces_under_torch_distributed(tmp_path):
    # fork, not spawn: the children inherit the imported torch, which keeps this test at about a second.
    with mp.get_context("fork").Manager() as manager:
        results = manager.dict()
        mp.start_processes(_ddp_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True,
                           start_method="fork")
        results = dict(results)
    assert results[0] == results[1]
    p, rt = results[0]
    assert rt == pytest.approx(4 / 14)
    assert p == pytest.approx(0.5 - 16 / 1000)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forward_backward_and_adjust():
    aug = AdaptiveAugment(p=0.8, adjust_kimg=1).cuda()
    x = images().cuda().requires_grad_(True)
    y = aug(x)
    y.sum().backward()
    assert y.device == x.device and torch.isfinite(y).all() and x.grad.abs().sum() > 0
    flips = only("xflip").cuda()(x.detach())
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flips, x.detach()))
    aug.accumulate(torch.ones(16, 1, device="cuda"))
    assert aug.adjust(16) == pytest.approx(0.816)
