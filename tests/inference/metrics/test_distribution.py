"""FID and KID: identical sets, exact-moment Gaussians against the closed form, KID against its definition, and
the Inception extractor from a path (a tiny TorchScript module in NVlabs' calling convention) or skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.metrics.distribution import (
    DistributionScores,
    InceptionFeatures,
    distribution_scores,
    fid_from_features,
    kid_from_features,
)
from inference.metrics.skipped import Skipped


def exact_moments(n: int, mean: np.ndarray, cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """n samples whose sample mean and unbiased sample covariance are exactly `mean` and `cov`."""
    x = rng.normal(size=(n, len(mean)))
    x -= x.mean(0)
    whiten = np.linalg.cholesky(np.cov(x, rowvar=False))
    x = x @ np.linalg.inv(whiten).T  # sample covariance now the identity
    return x @ np.linalg.cholesky(cov).T + mean


def spd(dim: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def closed_form(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), with tr (S1 S2)^1/2 = tr (S1^1/2 S2 S1^1/2)^1/2 by eigh."""
    w, v = np.linalg.eigh(s1)
    root = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root @ s2 @ root)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(inner.clip(0))))


def test_identical_feature_sets_give_zero() -> None:
    features = np.random.default_rng(0).normal(size=(300, 16))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-6)
    # KID is unbiased, not zero, on one set against itself: with every sample in the subset it is
    # 2 (S - D) / (m (m - 1)) - 2 S / m^2 (S: sum of all kernel values, D: of the diagonal), O(1/m)
    kid = kid_from_features(features, features, num_subsets=5, max_subset_size=300)
    kernel = (features @ features.T / 16 + 1) ** 3
    m, total, diagonal = 300, kernel.sum(), np.trace(kernel)
    assert kid.mean == pytest.approx(2 * (total - diagonal) / (m * (m - 1)) - 2 * total / m**2, rel=1e-9)
    shifted = kid_from_features(features, features + 0.5, num_subsets=5, max_subset_size=300)
    assert abs(kid.mean) < 0.1 * shifted.mean and kid.subset_size == 300


def test_shifted_gaussians_match_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    dim = 6
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim) + 2.0
    s1, s2 = spd(dim, rng), spd(dim, rng)
    real, fake = exact_moments(500, mu1, s1, rng), exact_moments(400, mu2, s2, rng)
    assert fid_from_features(real, fake) == pytest.approx(closed_form(mu1, s1, mu2, s2), rel=1e-8)
    # a pure shift of one covariance: the trace terms cancel and FID is the squared distance of the means
    shifted = exact_moments(500, mu2, s1, rng)
    assert fid_from_features(real, shifted) == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), rel=1e-8)
    # torch tensors are accepted as they are
    assert fid_from_features(torch.from_numpy(real), torch.from_numpy(fake)) == pytest.approx(
        fid_from_features(real, fake), rel=1e-12)


def kid_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out with loops."""
    d, m = x.shape[1], len(x)

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float((a @ b / d + 1) ** 3)

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_polynomial_mmd() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.5
    # one subset holding every sample: MMD^2 does not depend on the order the subset was drawn in
    kid = kid_from_features(y, x, num_subsets=1, max_subset_size=100)
    assert kid.mean == pytest.approx(kid_by_definition(x, y), rel=1e-10) and kid.std == 0.0
    assert kid.subset_size == 7 and kid.num_subsets == 1


def test_kid_same_distribution_near_zero_shifted_positive_and_seeded() -> None:
    rng = np.random.default_rng(3)
    real, same, shifted = rng.normal(size=(600, 8)), rng.normal(size=(500, 8)), rng.normal(size=(500, 8)) + 0.5
    null = kid_from_features(real, same, num_subsets=50, max_subset_size=200, seed=1)
    moved = kid_from_features(real, shifted, num_subsets=50, max_subset_size=200, seed=1)
    assert null.subset_size == 200 and abs(null.mean) < 3 * null.std + 1e-3
    assert moved.mean > 5 * moved.std and moved.mean > 20 * abs(null.mean)
    assert kid_from_features(real, shifted, num_subsets=50, max_subset_size=200, seed=1) == moved
    assert kid_from_features(real, shifted, num_subsets=50, max_subset_size=200, seed=2) != moved


class TinyInception(torch.nn.Module):
    """NVlabs' calling convention: uint8 NCHW in, [N, 12] features with return_features=True."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0, 2).flatten(1)


def batches(n: int, seed: int, shift: float = 0.0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return list((torch.rand(n, 3, 16, 16, generator=gen) * 1.6 - 0.8 + shift).clamp(-1, 1).split(16))


def test_scores_from_an_inception_path_or_skipped(tmp_path: Path) -> None:
    path = tmp_path / "inception.pt"
    torch.jit.save(torch.jit.script(TinyInception()), str(path))
    extractor = InceptionFeatures(path, batch_size=7)
    real = batches(64, 0)
    same = distribution_scores(real, real, extractor, num_subsets=10, max_subset_size=64)
    assert isinstance(same, DistributionScores) and same.fid == pytest.approx(0.0, abs=1e-6)
    assert (same.n_real, same.n_fake, same.feature_dim) == (64, 64, 12)
    moved = distribution_scores(real, batches(48, 1, shift=0.3), str(path), num_subsets=10, max_subset_size=64)
    assert moved.fid > 0.05 and moved.kid.mean > 0 and moved.kid.subset_size == 48
    assert moved.to_dict()["kid"]["num_subsets"] == 10 and moved.to_dict()["skipped"] is False
    # the features are what the detector gives for [-1, 1] images turned into uint8
    features = extractor(real[0])
    expected = torch.nn.functional.adaptive_avg_pool2d(((real[0] * 127.5 + 128).clamp(0, 255).to(torch.uint8)).float()
                                                       / 255.0, 2).flatten(1)
    np.testing.assert_allclose(features, expected.double().numpy(), atol=1e-6)

    skipped = distribution_scores(real, real, None)
    assert isinstance(skipped, Skipped) and "no Inception path" in skipped.reason
    assert skipped.to_dict() == {"reason": skipped.reason, "skipped": True}
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05"):
        distribution_scores(real, real, tmp_path / "missing.pt")


def test_bad_feature_sets_are_refused() -> None:
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="feature sizes differ"):
        fid_from_features(rng.normal(size=(10, 3)), rng.normal(size=(10, 4)))
    with pytest.raises(ValueError, match=r"\[N >= 2, D\]"):
        kid_from_features(rng.normal(size=(1, 3)), rng.normal(size=(10, 3)))
