"""Pixel metrics between an edit and its reference: L1, PSNR, SSIM and L1 inside / outside a region, per image.

Every function takes two batches of the same shape, [N, C, H, W] (or one image [C, H, W]), float in whatever
range the caller uses, and returns one value per image ([N], float64 on CPU), so the caller can average,
bootstrap or pair them. PSNR and SSIM need the range explicitly, never guessed from the data (a guess changes
the numbers between batches): `data_range` is either its width (2.0 for [-1, 1], 1.0 for [0, 1]; the images
are used as they are, as scikit-image and torchmetrics do) or the range itself, `(-1.0, 1.0)`, in which case
the images are first shifted to start at 0. That matters for SSIM only: its luminance term (2 mu_x mu_y + C1) /
(mu_x^2 + mu_y^2 + C1) is not shift-invariant, so SSIM of [-1, 1] images with width 2 is not the SSIM of the
same pictures on [0, 1] (the papers' convention); with `(-1.0, 1.0)` it is. PSNR and L1 ignore the shift.

SSIM is Wang et al. (2004): an 11-tap Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population
(biased) variances, computed in float64 per channel over the valid region (no padding) and averaged over
channels and positions, as scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)` does (the tests check it to 1e-12). torchmetrics 1.x averages over the whole image
instead, its border windows reading reflect-padded pixels; `border="reflect"` reproduces that (checked against it
when it is importable), for comparison with papers that report its numbers. The two differ by up to a few
hundredths on small images.

L1 is in the images' own units (on [-1, 1] images, twice the value on [0, 1]). `region_l1` weights pixels by a
region mask (the attribute region of a fusion pair): inside = weighted by the mask, outside = by 1 - mask, so
background preservation is the L1 outside the attribute region. A soft mask (a placed alpha) is used as weights.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SSIM_BORDERS", "SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW", "DataRange", "background_l1", "l1",
           "masked_l1", "psnr", "region_l1", "ssim"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_BORDERS = ("valid", "reflect")

DataRange = float | tuple[float, float]  # the width of the images' range, or the range (low, high) itself


def _as_batch(images: Tensor | np.ndarray, name: str) -> Tensor:
    """[N, C, H, W] floating tensor (a single [C, H, W] image gains the batch axis; integers become float32)."""
    tensor = torch.as_tensor(images)
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4:
        raise ValueError(f"{name} must be [N, C, H, W] or [C, H, W], got shape {tuple(tensor.shape)}")
    return tensor if tensor.is_floating_point() else tensor.float()


def _pair(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    x, y = _as_batch(a, "a"), _as_batch(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(device=x.device, dtype=dtype)


def _check_range(data_range: DataRange) -> tuple[float, float]:
    """(low, width); low is 0 when only the width is given (images used as they are)."""
    low, high = (float(v) for v in data_range) if isinstance(data_range, (tuple, list)) else (0.0, float(data_range))
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"data_range must be a positive width (2.0 for [-1, 1] images, 1.0 for [0, 1]) or a "
                         f"range (low, high) with high > low, got {data_range}")
    return low, high - low


def _per_image(values: Tensor) -> Tensor:
    return values.detach().to("cpu", torch.float64)


def l1(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> Tensor:
    """Mean absolute difference per image, in the images' units: [N]."""
    x, y = _pair(a, b)
    return _per_image((x - y).abs().flatten(1).mean(1))


def psnr(a: Tensor | np.ndarray, b: Tensor | np.ndarray, data_range: DataRange) -> Tensor:
    """10 log10(width^2 / MSE) per image, in dB ([N]; +inf where the images are identical)."""
    _, peak = _check_range(data_range)
    x, y = _pair(a, b)
    mse = _per_image((x - y).pow(2).flatten(1).mean(1))
    return 10.0 * torch.log10(peak**2 / mse)  # mse 0 -> +inf


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian taps centred on the middle one (the separable SSIM window)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    return (taps / taps.sum()).to(device=device, dtype=dtype)


def _blur(x: Tensor, window: Tensor) -> Tensor:
    """Separable valid-region Gaussian filter of [N*C, 1, H, W]."""
    x = F.conv2d(x, window.view(1, 1, 1, -1))
    return F.conv2d(x, window.view(1, 1, -1, 1))


def ssim(a: Tensor | np.ndarray, b: Tensor | np.ndarray, data_range: DataRange, window_size: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA, k1: float = SSIM_K1, k2: float = SSIM_K2,
         border: Literal["valid", "reflect"] = "valid") -> Tensor:
    """Mean SSIM per image ([N]), Gaussian window; `data_range` and `border` as in the module docstring."""
    low, peak = _check_range(data_range)
    if border not in SSIM_BORDERS:
        raise ValueError(f"border must be one of {SSIM_BORDERS}, got {border!r}")
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be odd and positive, got {window_size}")
    x, y = _pair(a, b)
    n, c, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size} x {window_size} px, got {h} x {w}")
    if border == "reflect":
        pad = (window_size - 1) // 2
        x, y = (F.pad(t, (pad, pad, pad, pad), mode="reflect") for t in (x, y))
        h, w = h + 2 * pad, w + 2 * pad
    x, y = x.double() - low, y.double() - low  # E[x^2] - E[x]^2 cancels badly in float32
    window = _gaussian_window(window_size, sigma, x.dtype, x.device)
    stack = torch.cat([x, y, x * x, y * y, x * y]).reshape(5 * n * c, 1, h, w)
    mu_x, mu_y, e_xx, e_yy, e_xy = _blur(stack, window).reshape(5, n, c, h - window_size + 1, w - window_size + 1)
    var_x, var_y, cov = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y, e_xy - mu_x * mu_y
    c1, c2 = (k1 * peak) ** 2, (k2 * peak) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return _per_image(ssim_map.flatten(1).mean(1))


def _as_weights(mask: Tensor | np.ndarray, like: Tensor) -> Tensor:
    """A region mask as weights in [0, 1], [N, 1, H, W]: bool, uint8 (0..255 alpha) or float in [0, 1]."""
    weights = torch.as_tensor(mask)
    if weights.dtype == torch.bool:
        weights = weights.to(like.dtype)
    elif weights.dtype == torch.uint8:
        weights = weights.to(like.dtype) / 255.0
    elif weights.is_floating_point():
        if weights.numel() and (float(weights.min()) < 0 or float(weights.max()) > 1):
            raise ValueError("a float region mask must lie in [0, 1]")
        weights = weights.to(like.dtype)
    else:
        raise ValueError(f"region mask must be bool, uint8 or float, got {weights.dtype}")
    if weights.ndim == 2:
        weights = weights[None, None]
    elif weights.ndim == 3:
        weights = weights[:, None] if like.shape[0] == weights.shape[0] and weights.shape[0] != 1 else weights[None]
    if weights.ndim != 4 or weights.shape[1] != 1 or weights.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"region mask of shape {tuple(torch.as_tensor(mask).shape)} does not fit images "
                         f"{tuple(like.shape)}: expected [N, 1, H, W], [N, H, W] or [H, W]")
    if weights.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"region mask has {weights.shape[0]} images, the batch {like.shape[0]}")
    return weights.to(like.device).expand(like.shape[0], 1, *like.shape[-2:])


def masked_l1(a: Tensor | np.ndarray, b: Tensor | np.ndarray, mask: Tensor | np.ndarray) -> Tensor:
    """Mask-weighted mean absolute difference per image ([N]); NaN where the mask is empty (no pixels to judge)."""
    x, y = _pair(a, b)
    weights = _as_weights(mask, x)
    total = (weights * (x - y).abs()).flatten(1).sum(1)
    count = weights.flatten(1).sum(1) * x.shape[1]
    return _per_image(torch.where(count > 0, total / count.clamp_min(1e-12), torch.full_like(total, math.nan)))


def region_l1(a: Tensor | np.ndarray, b: Tensor | np.ndarray,
              region: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """(inside, outside): L1 weighted by the region mask and by its complement, per image."""
    x, _ = _pair(a, b)
    weights = _as_weights(region, x)
    return masked_l1(a, b, weights), masked_l1(a, b, 1.0 - weights)


def background_l1(a: Tensor | np.ndarray, b: Tensor | np.ndarray, region: Tensor | np.ndarray) -> Tensor:
    """Background preservation: L1 outside the attribute region, per image (lower = background kept)."""
    return region_l1(a, b, region)[1]
