"""Pixel metrics against known values: identical images, closed forms, scikit-image's SSIM, a planted region change."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from inference.metrics.pixels import background_l1, l1, masked_l1, psnr, region_l1, ssim


def pair(seed: int, shape: tuple[int, ...] = (3, 3, 40, 37), noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] (float64) and a noisy copy."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    return a, (a + noise * torch.randn(shape, generator=gen, dtype=torch.float64)).clamp(-1, 1)


def test_identical_images() -> None:
    a, _ = pair(0)
    assert torch.equal(l1(a, a), torch.zeros(3, dtype=torch.float64))
    assert torch.isinf(psnr(a, a, 2.0)).all()
    torch.testing.assert_close(ssim(a, a, 2.0), torch.ones(3, dtype=torch.float64))
    pixels = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)  # integer images work too
    torch.testing.assert_close(ssim(pixels, pixels, 255.0), torch.ones(2, dtype=torch.float64))


def test_l1_and_psnr_closed_forms() -> None:
    a = torch.zeros(2, 3, 8, 8)
    b = torch.full((2, 3, 8, 8), 0.1)
    b[1] = 0.5
    torch.testing.assert_close(l1(a, b), torch.tensor([0.1, 0.5], dtype=torch.float64))
    torch.testing.assert_close(psnr(a, b, 1.0), torch.tensor([20.0, 10 * math.log10(1 / 0.25)], dtype=torch.float64))
    # the same pictures on [-1, 1] and on [0, 1]: PSNR needs only the width, L1 doubles ...
    x, y = pair(1)
    x01, y01 = (x + 1) / 2, (y + 1) / 2
    torch.testing.assert_close(psnr(x, y, 2.0), psnr(x01, y01, 1.0))
    torch.testing.assert_close(psnr(x, y, (-1.0, 1.0)), psnr(x01, y01, 1.0))
    torch.testing.assert_close(l1(x, y), 2 * l1(x01, y01))
    # ... while SSIM's luminance term sees the shift: the range (-1, 1) gives the [0, 1] value, the width alone not
    torch.testing.assert_close(ssim(x, y, (-1.0, 1.0)), ssim(x01, y01, 1.0))
    assert (ssim(x, y, 2.0) - ssim(x01, y01, 1.0)).abs().max() > 0.01


def test_ssim_of_flat_images_is_the_luminance_term() -> None:
    """Flat images have no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 L)^2."""
    a, b = 0.2, 0.7
    flat = {v: torch.full((1, 1, 16, 16), v, dtype=torch.float64) for v in (a, b)}
    value = ssim(flat[a], flat[b], 1.0)
    c1 = (0.01 * 1.0) ** 2
    assert float(value) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


@pytest.mark.parametrize("data_range, low", [(2.0, -1.0), (1.0, 0.0)])
def test_ssim_matches_scikit_image(data_range: float, low: float) -> None:
    x, y = pair(2)
    x, y = (x + 1) / 2 * data_range + low, (y + 1) / 2 * data_range + low
    ours = ssim(x, y, data_range)
    reference = [structural_similarity(x[i].numpy(), y[i].numpy(), data_range=data_range, channel_axis=0,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
                 for i in range(len(x))]
    np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ssim(x.float(), y.float(), data_range).numpy(), reference, atol=1e-6)  # float32 input
    for i in range(len(x)):  # per image: the batch around it changes nothing
        torch.testing.assert_close(ssim(x[i], y[i], data_range), ours[i:i + 1])


def test_ssim_reflect_border_matches_torchmetrics() -> None:
    functional = pytest.importorskip("torchmetrics.functional.image")
    x, y = pair(3)
    reference = functional.structural_similarity_index_measure(x, y, data_range=2.0, reduction="none")
    torch.testing.assert_close(ssim(x, y, 2.0, border="reflect"), reference.to(torch.float64))


def test_planted_region_change() -> None:
    a, _ = pair(4, (2, 3, 32, 32))
    region = torch.zeros(2, 32, 32, dtype=torch.bool)
    region[:, 8:20, 10:26] = True
    b = a.clone()
    delta = torch.rand(2, 3, 12, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    b[:, :, 8:20, 10:26] += delta
    inside, outside = region_l1(a, b, region)
    torch.testing.assert_close(inside, delta.flatten(1).mean(1))
    torch.testing.assert_close(outside, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(background_l1(a, b, region), outside)
    # the same region as an 8-bit alpha (region.png), as [N, 1, H, W] floats, and one mask for the whole batch
    alpha = region.to(torch.uint8) * 255
    torch.testing.assert_close(region_l1(a, b, alpha)[0], inside)
    torch.testing.assert_close(masked_l1(a, b, region[:, None].double()), inside)
    torch.testing.assert_close(masked_l1(a, b, region[0]), inside)
    # everything counted once: the whole-image L1 is the area-weighted mix of inside and outside
    share = region[0].double().mean()
    torch.testing.assert_close(l1(a, b), share * inside + (1 - share) * outside)


def test_soft_and_empty_masks() -> None:
    a = torch.zeros(1, 1, 4, 4)
    b = torch.ones(1, 1, 4, 4)
    b[..., :2] = 3.0  # difference 3 on the left half, 1 on the right
    soft = torch.zeros(4, 4)
    soft[:, :2] = 0.5
    # inside: weights 0.5 on the left half -> 3; outside: weights 0.5 left + 1 right -> (0.5*3 + 1*1) / 1.5
    inside, outside = region_l1(a, b, soft)
    assert float(inside) == pytest.approx(3.0) and float(outside) == pytest.approx(2.5 / 1.5)
    assert math.isnan(float(masked_l1(a, b, torch.zeros(4, 4))))


def test_bad_inputs_are_refused() -> None:
    a, b = pair(6)
    with pytest.raises(ValueError, match="differ in shape"):
        l1(a, b[:, :, :30])
    with pytest.raises(ValueError, match="data_range"):
        psnr(a, b, 0.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(a, b, (1.0, -1.0))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(a[..., :10, :10], b[..., :10, :10], 2.0)
    with pytest.raises(ValueError, match="border"):
        ssim(a, b, 2.0, border="same")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not fit"):
        masked_l1(a, b, torch.ones(40, 36, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        masked_l1(a, b, torch.full((40, 37), 2.0))
