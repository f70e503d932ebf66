"""Bootstrap intervals against known distributions: a normal mean's analytic interval, coverage, paired differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from inference.metrics.bootstrap import bootstrap_ci, paired_difference_ci


def test_normal_mean_interval_matches_the_analytic_one() -> None:
    rng = np.random.default_rng(0)
    sample = rng.normal(3.0, 2.0, size=400)
    ci = bootstrap_ci(sample, confidence=0.95, n_resamples=20_000, seed=1)
    # the percentile bootstrap of a mean estimates mean +- z s_n / sqrt(n), s_n the population-form deviation
    half = norm.ppf(0.975) * sample.std() / math.sqrt(len(sample))
    assert ci.mean == pytest.approx(sample.mean(), rel=1e-12)
    assert ci.lo == pytest.approx(sample.mean() - half, abs=0.04 * half)
    assert ci.hi == pytest.approx(sample.mean() + half, abs=0.04 * half)
    assert (ci.n, ci.n_dropped, ci.confidence, ci.n_resamples, ci.seed) == (400, 0, 0.95, 20_000, 1)
    narrower = bootstrap_ci(sample, confidence=0.8, n_resamples=20_000, seed=1)
    assert ci.lo < narrower.lo < narrower.mean < narrower.hi < ci.hi


def test_coverage_of_the_true_mean() -> None:
    rng = np.random.default_rng(2)
    hits = 0
    trials = 200
    for trial in range(trials):
        ci = bootstrap_ci(rng.exponential(1.0, size=120), n_resamples=1000, seed=trial)
        hits += ci.lo <= 1.0 <= ci.hi
    assert 0.88 <= hits / trials <= 0.99  # nominal 0.95; the binomial sd over 200 trials is 0.015


def test_paired_difference_cancels_the_shared_variation() -> None:
    rng = np.random.default_rng(3)
    face = rng.normal(0.0, 1.0, size=300)  # what both methods share per sample (large)
    ours = face + 0.10 + rng.normal(0.0, 0.05, size=300)
    baseline = face + rng.normal(0.0, 0.05, size=300)
    paired = paired_difference_ci(ours, baseline, seed=4)
    assert paired.lo < 0.10 < paired.hi and paired.lo > 0.05  # the 0.10 gain, clearly above 0
    separate = [bootstrap_ci(v, seed=4) for v in (ours, baseline)]
    assert separate[0].lo < separate[1].hi  # two separate intervals overlap: the gain would be missed
    assert paired.hi - paired.lo < 0.1 * (separate[0].hi - separate[0].lo)
    half = norm.ppf(0.975) * np.std(ours - baseline) / math.sqrt(300)
    assert paired.hi - paired.lo == pytest.approx(2 * half, rel=0.08)


def test_seeded_and_non_finite_values_left_out() -> None:
    values = torch.tensor([1.0, 2.0, float("nan"), 4.0, float("inf"), 3.0])
    first, again = bootstrap_ci(values, seed=7), bootstrap_ci(values, seed=7)
    assert first == again and first != bootstrap_ci(values, seed=8)
    assert (first.n, first.n_dropped, first.mean) == (4, 2, 2.5)
    assert 1.0 <= first.lo <= first.mean <= first.hi <= 4.0
    pair = paired_difference_ci([1.0, float("nan"), 3.0, 5.0], [0.0, 1.0, float("nan"), 4.0])
    assert (pair.n, pair.n_dropped, pair.mean) == (2, 2, 1.0) and pair.lo == pair.hi == 1.0
    empty = bootstrap_ci([float("nan")])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.lo) and math.isnan(empty.hi)
    single = bootstrap_ci([0.25])
    assert single.mean == single.lo == single.hi == 0.25


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="one value per sample"):
        paired_difference_ci([1.0, 2.0], [1.0])
