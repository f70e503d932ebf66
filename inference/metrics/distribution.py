"""Distribution metrics of edited faces against real ones: FID and KID on features of an Inception network.

The Fréchet maths, the streaming statistics and the detector loader are training/stylegan2's (`fid.py`): the
same numbers as the training FID hook, from the same TorchScript file (NVlabs' `inception-2015-12-05.pt`, or
any module mapping float [0, 1] images to [N, D] with `convention="float01"`). Nothing is downloaded: with no
path the result is a `Skipped` record that says so, which a report prints instead of a number.

KID is stylegan2-ada-pytorch's `kernel_inception_distance`: the unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / D + 1)^3, averaged over `num_subsets` random subsets of `min(n_real, n_fake, max_subset_size)`
features drawn without replacement from each set. We also return the standard deviation over the subsets
(torch-fidelity's `kid_std`), and draw the subsets from a seeded generator so a report is reproducible.
KID is unbiased, so on two samples of one distribution it is ~0 and can come out slightly negative (a set
against itself gives a small negative O(1/m) value, not 0: the tests check its exact form).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from inference.metrics.skipped import Skipped
from training.stylegan2.fid import CONVENTIONS, NVLABS, FeatureStats, extract_features, frechet_distance, load_detector

__all__ = ["KID_MAX_SUBSET_SIZE", "KID_NUM_SUBSETS", "DistributionScores", "InceptionFeatures", "KidResult",
           "distribution_scores", "fid_from_features", "kid_from_features"]

KID_NUM_SUBSETS = 100  # stylegan2-ada-pytorch's defaults
KID_MAX_SUBSET_SIZE = 1000
NO_INCEPTION = "skipped: no Inception path given (pass a local inception-2015-12-05.pt to compute FID and KID)"


@dataclass(frozen=True)
class KidResult:
    mean: float
    std: float  # over the subsets
    num_subsets: int
    subset_size: int


@dataclass(frozen=True)
class DistributionScores:
    fid: float
    kid: KidResult
    n_real: int
    n_fake: int
    feature_dim: int
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _features(array: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(array, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} features must be [N >= 2, D], got shape {x.shape}")
    return x


def fid_from_features(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits (mean, unbiased covariance) of two feature sets [N, D]."""
    stats = []
    for name, features in (("real", real), ("fake", fake)):
        s = FeatureStats()
        s.append(_features(features, name))
        stats.append(s)
    if stats[0].mean().shape != stats[1].mean().shape:
        raise ValueError(f"feature sizes differ: {stats[0].mean().shape[0]} vs {stats[1].mean().shape[0]}")
    return frechet_distance(stats[0].mean(), stats[0].cov(), stats[1].mean(), stats[1].cov())


def kid_from_features(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor,
                      num_subsets: int = KID_NUM_SUBSETS, max_subset_size: int = KID_MAX_SUBSET_SIZE,
                      seed: int = 0) -> KidResult:
    """Unbiased MMD^2 (cubic polynomial kernel) over seeded random subsets: mean and std over the subsets."""
    y, x = _features(real, "real"), _features(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {y.shape[1]} vs {x.shape[1]}")
    if num_subsets < 1 or max_subset_size < 2:
        raise ValueError(f"need num_subsets >= 1 and max_subset_size >= 2, got {num_subsets}, {max_subset_size}")
    dim = x.shape[1]
    m = min(x.shape[0], y.shape[0], max_subset_size)
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)]
        ys = y[rng.choice(y.shape[0], m, replace=False)]
        a = (xs @ xs.T / dim + 1) ** 3 + (ys @ ys.T / dim + 1) ** 3
        b = (xs @ ys.T / dim + 1) ** 3
        values[i] = ((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m
    return KidResult(mean=float(values.mean()), std=float(values.std()), num_subsets=num_subsets, subset_size=m)


class InceptionFeatures:
    """A TorchScript feature extractor loaded once from a local path; images in [-1, 1] -> features [N, D]."""

    def __init__(self, path: str | os.PathLike, convention: str = NVLABS, device: str | torch.device = "cpu",
                 batch_size: int = 64) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown detector convention {convention!r}, expected one of {CONVENTIONS}")
        self.path, self.convention, self.device = str(path), convention, torch.device(device)
        self.batch_size = batch_size
        self.detector = load_detector(path, self.device)  # FileNotFoundError naming where to get the file

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | Iterable[torch.Tensor]) -> np.ndarray:
        """Features of one batch [N, 3, H, W] or of an iterable of batches, float64 on CPU."""
        batches = [images] if isinstance(images, torch.Tensor) else images
        out = []
        for batch in batches:
            for chunk in batch.split(self.batch_size):
                features = extract_features(self.detector, chunk.to(self.device, torch.float32), self.convention)
                out.append(features.to("cpu", torch.float64).numpy())
        if not out:
            raise ValueError("no images to extract features from")
        return np.concatenate(out)


def distribution_scores(real: torch.Tensor | Iterable[torch.Tensor], fake: torch.Tensor | Iterable[torch.Tensor],
                        inception: InceptionFeatures | str | os.PathLike | None, *,
                        num_subsets: int = KID_NUM_SUBSETS, max_subset_size: int = KID_MAX_SUBSET_SIZE,
                        seed: int = 0) -> DistributionScores | Skipped:
    """FID and KID of `fake` against `real` images in [-1, 1]; `Skipped` when no Inception path is given."""
    if inception is None or (isinstance(inception, str) and not inception.strip()):
        return Skipped(NO_INCEPTION)
    extractor = inception if isinstance(inception, InceptionFeatures) else InceptionFeatures(inception)
    real_features, fake_features = extractor(real), extractor(fake)
    return DistributionScores(fid=fid_from_features(real_features, fake_features),
                              kid=kid_from_features(real_features, fake_features, num_subsets, max_subset_size, seed),
                              n_real=len(real_features), n_fake=len(fake_features),
                              feature_dim=int(real_features.shape[1]))
