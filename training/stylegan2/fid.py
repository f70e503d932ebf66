"""Frechet Inception Distance with a user-supplied TorchScript feature extractor (never downloaded here).

The usual detector is NVlabs' `inception-2015-12-05.pt` (the TF Inception port that StyleGAN2-ADA/3 report FID
with): it takes uint8 NCHW images of any size, resizes them to 299 itself, and returns pool3 features [N, 2048]
when called with `return_features=True`. Any other TorchScript module mapping float images in [0, 1] to [N, D]
works with `convention="float01"`. Real-data statistics are cached in an .npz keyed by the detector file's sha256,
a dataset id and the image count, so they are computed once per (detector, dataset) pair.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from data_catalog.atomic import atomic_writer
from data_catalog.hashing import sha256_file

NVLABS = "nvlabs"
FLOAT01 = "float01"
CONVENTIONS = (NVLABS, FLOAT01)
NVLABS_INCEPTION_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                        "inception-2015-12-05.pt")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

    sqrtm of a product of (near-)singular covariances can come back non-finite or with small imaginary parts from
    round-off; the first is retried with eps * I added to both covariances, the second is dropped (an imaginary
    diagonal larger than 1e-3 means something is really wrong, so that raises).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component: {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


class FeatureStats:
    """Streaming mean / covariance of feature vectors in float64 (Chan et al. pairwise merge, stable)."""

    def __init__(self) -> None:
        self.n = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None  # sum of outer products of deviations from the mean

    def append(self, features: torch.Tensor | np.ndarray) -> None:
        """Add a batch [N, D] of feature vectors."""
        if isinstance(features, torch.Tensor):
            features = features.detach().to("cpu", torch.float64).numpy()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {x.shape}")
        nb = x.shape[0]
        if nb == 0:
            return
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        if self._mean is None:
            self.n, self._mean, self._m2 = nb, mean_b, m2_b
            return
        if x.shape[1] != self._mean.shape[0]:
            raise ValueError(f"feature dim {x.shape[1]} != {self._mean.shape[0]} seen before")
        total = self.n + nb
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (nb / total)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (self.n * nb / total)
        self.n = total

    def mean(self) -> np.ndarray:
        if self._mean is None:
            raise ValueError("no features appended")
        return self._mean.copy()

    def cov(self) -> np.ndarray:
        """Unbiased sample covariance (divides by n - 1, as np.cov and pytorch-fid)."""
        if self._m2 is None or self.n < 2:
            raise ValueError(f"covariance needs at least 2 samples, have {self.n}")
        return self._m2 / (self.n - 1)

    def save_npz(self, path: str | os.PathLike, key: str = "") -> None:
        """Write mu, sigma, n (and an optional cache key) atomically (the catalog's atomic writer)."""
        with atomic_writer(path) as handle:
            np.savez(handle, mu=self.mean(), sigma=self.cov(), n=np.int64(self.n), key=np.str_(key))

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> FeatureStats:
        stats, _ = cls._load_with_key(path)
        return stats

    @classmethod
    def _load_with_key(cls, path: str | os.PathLike) -> tuple[FeatureStats, str]:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma, n = data["mu"].astype(np.float64), data["sigma"].astype(np.float64), int(data["n"])
            key = str(data["key"]) if "key" in data.files else ""
        stats = cls()
        stats.n, stats._mean, stats._m2 = n, mu, sigma * max(n - 1, 1)
        return stats, key


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript feature extractor from a local file; nothing is ever downloaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"FID feature extractor not found at {path}. Download NVlabs' TorchScript Inception "
            f"(inception-2015-12-05.pt) yourself from {NVLABS_INCEPTION_URL} and pass its local path, "
            f"or pass any TorchScript module mapping float [0, 1] NCHW images to [N, D] with convention='float01'.")
    detector = torch.jit.load(str(path), map_location=device)
    detector.eval()
    return detector


def extract_features(detector: torch.nn.Module, images: torch.Tensor, convention: str = NVLABS) -> torch.Tensor:
    """Features [N, D] of float images in [-1, 1], converted to what the detector expects."""
    if convention == NVLABS:
        pixels = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.repeat(1, 3, 1, 1)
        features = detector(pixels, return_features=True)
    elif convention == FLOAT01:
        features = detector(((images + 1) / 2).clamp(0, 1))
    else:
        raise ValueError(f"unknown detector convention {convention!r}, expected one of {CONVENTIONS}")
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"detector must return [N, D] features, got {shape}")
    return features


@torch.no_grad()
def compute_stats(detector: torch.nn.Module, batches: Iterable[torch.Tensor], convention: str = NVLABS,
                  device: str | torch.device = "cpu", max_images: int | None = None) -> FeatureStats:
    """Feature statistics over batches of float images in [-1, 1] (at most `max_images` of them)."""
    stats = FeatureStats()
    for batch in batches:
        if max_images is not None:
            batch = batch[: max_images - stats.n]
        if batch.shape[0] == 0:
            break
        stats.append(extract_features(detector, batch.to(device, torch.float32), convention))
        if max_images is not None and stats.n >= max_images:
            break
    return stats


def real_stats_cached(cache_path: str | os.PathLike, detector_path: str | os.PathLike, dataset_id: str,
                      make_batches: Callable[[], Iterable[torch.Tensor]], n_images: int | None = None,
                      convention: str = NVLABS, device: str | torch.device = "cpu",
                      detector: torch.nn.Module | None = None) -> FeatureStats:
    """Real-data statistics, reused from `cache_path` when its key (detector sha256, dataset id, image count and
    convention) matches, otherwise computed from `make_batches()` (called only then) and written back atomically.

    `n_images` caps the number of images (None = all the batches give); `detector` skips reloading if the caller
    already holds the module loaded from `detector_path`.
    """
    key = json.dumps({"detector_sha256": sha256_file(detector_path), "dataset_id": str(dataset_id),
                      "n_images": n_images, "convention": convention}, sort_keys=True)
    cache_path = Path(cache_path)
    if cache_path.is_file():
        try:
            stats, stored_key = FeatureStats._load_with_key(cache_path)
            if stored_key == key:
                return stats
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign cache: recompute and overwrite
    if detector is None:
        detector = load_detector(detector_path, device)
    stats = compute_stats(detector, make_batches(), convention, device, max_images=n_images)
    if n_images is not None and stats.n < n_images:
        raise ValueError(f"dataset {dataset_id!r} gave {stats.n} images, fewer than the {n_images} requested")
    stats.save_npz(cache_path, key=key)
    return stats


@torch.no_grad()
def fid_for_generator(generator_fn: Callable[[int], torch.Tensor], n_images: int, batch_size: int,
                      detector: torch.nn.Module, real_stats: FeatureStats, convention: str = NVLABS,
                      device: str | torch.device = "cpu") -> float:
    """FID of `n_images` samples from `generator_fn(batch)` (float images in [-1, 1]) against `real_stats`."""
    def batches() -> Iterable[torch.Tensor]:
        done = 0
        while done < n_images:
            size = min(batch_size, n_images - done)
            yield generator_fn(size)
            done += size

    fake = compute_stats(detector, batches(), convention, device, max_images=n_images)
    return frechet_distance(fake.mean(), fake.cov(), real_stats.mean(), real_stats.cov())
