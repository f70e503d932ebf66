"""upfirdn2d and the fused activation against direct, loop-based definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.stylegan2.ops import fused_leaky_relu, make_kernel, upfirdn2d


def upfirdn2d_loops(x: np.ndarray, kernel: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """The textbook definition, one output pixel at a time: zero-insert, pad/crop, convolve, subsample."""
    n, c, h, w = x.shape
    upsampled = np.zeros((n, c, h * up, w * up))
    upsampled[:, :, ::up, ::up] = x
    p0, p1 = pad
    padded = np.pad(upsampled, ((0, 0), (0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0))))
    hh, ww = padded.shape[2:]
    padded = padded[:, :, max(-p0, 0):hh - max(-p1, 0), max(-p0, 0):ww - max(-p1, 0)]
    kh, kw = kernel.shape
    out_h, out_w = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, :, i:i + kh, j:j + kw]
            out[:, :, i, j] = (window * kernel[::-1, ::-1]).sum(axis=(2, 3))  # true convolution
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize(("up", "down", "pad"), [(1, 1, (2, 1)), (2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (-1, 2)),
                                                 (2, 1, (0, -1))])
def test_upfirdn2d_matches_the_definition_with_an_asymmetric_kernel(up: int, down: int, pad: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    kernel = rng.standard_normal((3, 4))  # asymmetric and non-square: catches a missing flip or swapped axes
    ours = upfirdn2d(torch.tensor(x, dtype=torch.float64), torch.tensor(kernel), up=up, down=down, pad=pad)
    np.testing.assert_allclose(ours.numpy(), upfirdn2d_loops(x, kernel, up, down, pad), atol=1e-10)


def test_make_kernel_normalises_and_takes_the_outer_product() -> None:
    kernel = make_kernel([1, 3, 3, 1])
    assert kernel.shape == (4, 4) and math.isclose(kernel.sum().item(), 1.0, rel_tol=1e-6)
    torch.testing.assert_close(kernel, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)


def test_fused_leaky_relu_is_bias_then_leaky_relu_times_sqrt2() -> None:
    x = torch.tensor([[[[-1.0]], [[2.0]]]])
    out = fused_leaky_relu(x, torch.tensor([0.5, -3.0]))
    torch.testing.assert_close(out.flatten(), torch.tensor([-0.5 * 0.2, -1.0 * 0.2]) * math.sqrt(2))
