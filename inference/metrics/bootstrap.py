"""Bootstrap confidence intervals of a mean: one method's per-sample metric, or two methods' paired difference.

Percentile bootstrap (Efron): resample the per-sample values with replacement `n_resamples` times from a seeded
generator, take the mean of each resample, and report the (1 - confidence) / 2 and (1 + confidence) / 2
quantiles of those means around the sample mean. Seeded, so a report's intervals are the same on every run.

The paired version resamples the same indices for both methods (the per-sample differences), which is what
comparing two edits of the same faces needs: the large face-to-face variation cancels and only the methods'
difference is left, so the interval is much narrower than two separate ones suggest.

Non-finite values (NaN: a face that was not detected, an empty region) are left out and the count kept says
how many were used; in the paired version a sample is used only when both of its values are finite.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["BootstrapCI", "bootstrap_ci", "paired_difference_ci"]

_CHUNK = 4_000_000  # resampled values held at once (32 MB of indices)


@dataclass(frozen=True)
class BootstrapCI:
    mean: float
    lo: float
    hi: float
    n: int  # finite samples used
    n_dropped: int  # non-finite samples left out
    confidence: float
    n_resamples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _values(values: np.ndarray | torch.Tensor | list[float], name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per sample (1-D), got shape {array.shape}")
    return array


def _check(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


def _resampled_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = len(values)
    means = np.empty(n_resamples)
    step = max(1, _CHUNK // n)
    for start in range(0, n_resamples, step):
        count = min(step, n_resamples - start)
        means[start:start + count] = values[rng.integers(0, n, size=(count, n))].mean(axis=1)
    return means


def _interval(values: np.ndarray, n_dropped: int, confidence: float, n_resamples: int, seed: int) -> BootstrapCI:
    n = len(values)
    if n == 0:
        nan = float("nan")
        return BootstrapCI(nan, nan, nan, 0, n_dropped, confidence, n_resamples, seed)
    means = _resampled_means(values, n_resamples, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(float(values.mean()), float(lo), float(hi), n, n_dropped, confidence, n_resamples, seed)


def bootstrap_ci(values: np.ndarray | torch.Tensor | list[float], confidence: float = 0.95,
                 n_resamples: int = 10_000, seed: int = 0) -> BootstrapCI:
    """Mean of the finite per-sample values with its percentile-bootstrap interval (NaNs when none are finite)."""
    _check(confidence, n_resamples)
    array = _values(values, "values")
    finite = np.isfinite(array)
    return _interval(array[finite], int((~finite).sum()), confidence, n_resamples, seed)


def paired_difference_ci(a: np.ndarray | torch.Tensor | list[float], b: np.ndarray | torch.Tensor | list[float],
                         confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> BootstrapCI:
    """Mean of a_i - b_i over samples where both are finite, with its percentile-bootstrap interval."""
    _check(confidence, n_resamples)
    x, y = _values(a, "a"), _values(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired values need one value per sample in each: {x.shape} vs {y.shape}")
    both = np.isfinite(x) & np.isfinite(y)
    return _interval(x[both] - y[both], int((~both).sum()), confidence, n_resamples, seed)
