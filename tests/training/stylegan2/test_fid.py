"""FID: the Frechet distance against closed forms, streaming statistics, detector loading and the stats cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import special_ortho_group

from training.stylegan2 import fid


class TinyDetector(torch.nn.Module):
    """NVlabs-style: uint8 NCHW in, [N, 12] features out (2x2 average pool per channel)."""

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0, 2)
        return pooled.flatten(1)


class FloatDetector(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


class BadDetector(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return x.float()


def save_scripted(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def batches(n: int, seed: int, shift: float = 0.0, batch: int = 50) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, 8, 8, generator=gen) * 1.6 - 0.8 + shift).clamp(-1, 1)
    return list(images.split(batch))


# ---------------------------------------------------------------- frechet_distance


def test_identical_gaussians_give_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 5))
    sigma = a.T @ a / 20
    assert fid.frechet_distance(np.ones(5), sigma, np.ones(5), sigma) == pytest.approx(0.0, abs=1e-6)


def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert fid.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_one_dimensional_case():
    # N(0, 4) vs N(3, 1): 9 + 4 + 1 - 2 * 2 = 10
    assert fid.frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == \
        pytest.approx(10.0)
    assert fid.frechet_distance(0.0, 4.0, 3.0, 1.0) == pytest.approx(10.0)


def test_full_covariances_match_an_eigendecomposition():
    rng = np.random.default_rng(2)
    d = 7
    rot = special_ortho_group.rvs(d, random_state=3)
    s1 = rot @ np.diag(rng.uniform(0.2, 2, d)) @ rot.T
    a = rng.normal(size=(d, d))
    s2 = a @ a.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2): the latter is symmetric PSD, so use eigenvalues.
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None)))
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_singular_covariances_stay_finite():
    sigma = np.diag([1.0, 0.0, 0.0])
    value = fid.frechet_distance(np.zeros(3), sigma, np.zeros(3), sigma)
    assert np.isfinite(value) and value == pytest.approx(0.0, abs=1e-4)


# ---------------------------------------------------------------- FeatureStats


def test_streaming_stats_match_numpy_and_converge():
    rng = np.random.default_rng(4)
    mu = np.array([1.0, -2.0, 0.5])
    a = rng.normal(size=(3, 3))
    sigma = a @ a.T
    samples = rng.multivariate_normal(mu, sigma, size=20_000)
    stats = fid.FeatureStats()
    for chunk in np.array_split(samples, 37):
        stats.append(torch.from_numpy(chunk).float() if len(chunk) % 2 else chunk)
    assert stats.n == 20_000
    np.testing.assert_allclose(stats.mean(), samples.astype(np.float32).mean(0), atol=1e-5)
    np.testing.assert_allclose(stats.cov(), np.cov(samples.astype(np.float32), rowvar=False), rtol=1e-4, atol=1e-5)
    assert fid.frechet_distance(stats.mean(), stats.cov(), mu, sigma) < 0.05


def test_npz_round_trip(tmp_path):
    stats = fid.FeatureStats()
    stats.append(torch.randn(40, 4))
    path = tmp_path / "sub" / "stats.npz"
    stats.save_npz(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["stats.npz"]  # no temp file left behind
    with np.load(path) as data:
        assert {"mu", "sigma", "n"} <= set(data.files)
    loaded = fid.FeatureStats.load_npz(path)
    assert loaded.n == 40
    np.testing.assert_allclose(loaded.mean(), stats.mean())
    np.testing.assert_allclose(loaded.cov(), stats.cov())


# ---------------------------------------------------------------- detector, compute_stats, cache, FID


def test_load_detector_and_compute_stats(tmp_path):
    detector = fid.load_detector(save_scripted(TinyDetector(), tmp_path / "det.pt"))
    stats = fid.compute_stats(detector, batches(120, seed=0), "nvlabs", "cpu")
    assert stats.n == 120 and stats.mean().shape == (12,) and stats.cov().shape == (12, 12)
    capped = fid.compute_stats(detector, batches(120, seed=0), "nvlabs", "cpu", max_images=70)
    assert capped.n == 70


def test_float01_convention(tmp_path):
    detector = fid.load_detector(save_scripted(FloatDetector(), tmp_path / "float.pt"))
    stats = fid.compute_stats(detector, [torch.full((4, 3, 8, 8), -1.0), torch.ones(4, 3, 8, 8)], "float01")
    np.testing.assert_allclose(stats.mean(), np.full(12, 0.5), atol=1e-7)


def test_missing_detector_and_bad_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        fid.load_detector(tmp_path / "nope.pt")
    bad = fid.load_detector(save_scripted(BadDetector(), tmp_path / "bad.pt"))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        fid.compute_stats(bad, batches(10, seed=0), "nvlabs")
    with pytest.raises(ValueError, match="convention"):
        fid.compute_stats(bad, batches(10, seed=0), "rgb255")


def test_real_stats_cache_reuse_and_invalidation(tmp_path):
    det_path = save_scripted(TinyDetector(), tmp_path / "det.pt")
    cache = tmp_path / "cache" / "real.npz"
    calls = []

    def make_batches():
        calls.append(1)
        return batches(100, seed=0)

    first = fid.real_stats_cached(cache, det_path, "ds-v1", make_batches, n_images=100)
    second = fid.real_stats_cached(cache, det_path, "ds-v1", make_batches, n_images=100)
    assert len(calls) == 1 and cache.is_file()
    np.testing.assert_allclose(second.mean(), first.mean())
    np.testing.assert_allclose(second.cov(), first.cov())
    fid.real_stats_cached(cache, det_path, "ds-v2", make_batches, n_images=100)  # new dataset id
    assert len(calls) == 2
    fid.real_stats_cached(cache, det_path, "ds-v2", make_batches, n_images=80)  # new image count
    assert len(calls) == 3
    save_scripted(FloatDetector(), det_path)  # different detector file
    fid.real_stats_cached(cache, det_path, "ds-v2", make_batches, n_images=80, convention="float01")
    assert len(calls) == 4
    with pytest.raises(ValueError, match="fewer"):
        fid.real_stats_cached(cache, det_path, "ds-v3", make_batches, n_images=500, convention="float01")


def test_fid_of_a_distribution_with_itself_and_with_a_shift(tmp_path):
    detector = fid.load_detector(save_scripted(TinyDetector(), tmp_path / "det.pt"))
    real = fid.compute_stats(detector, batches(400, seed=0), "nvlabs")
    pool = torch.cat(batches(400, seed=0))
    shifted_pool = torch.cat(batches(400, seed=1, shift=0.3))

    def from_pool(source: torch.Tensor):
        state = {"i": 0}

        def generate(n: int) -> torch.Tensor:
            out = source[state["i"]:state["i"] + n]
            state["i"] += n
            return out
        return generate

    same = fid.fid_for_generator(from_pool(pool), 400, 64, detector, real)
    shifted = fid.fid_for_generator(from_pool(shifted_pool), 400, 64, detector, real)
    assert same == pytest.approx(0.0, abs=1e-6)
    assert shifted > 0.05
    fresh = fid.fid_for_generator(from_pool(torch.cat(batches(400, seed=2))), 400, 64, detector, real)
    assert 0 < fresh < shifted
