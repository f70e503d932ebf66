"""InterfaceGAN's boundary fitting (`train_boundary`) and conditional projection (`project_boundary`).

Same algorithm as genforce/interfacegan `utils/manipulator.py`: the top and bottom k samples by score are the
positive and negative classes, a linear SVM (C=1) separates them, and its normal (intercept dropped, unit norm)
is the boundary. Differences, all on purpose:

- the train/val split uses a seeded `numpy.random.Generator` (InterfaceGAN shuffles with the global, unseeded
  `np.random`, so two runs never give the same boundary); `split=` injects a split to compare with theirs;
- NaN scores are dropped along with `invalid_value`, scores may be [N] or [N, 1], and bad input raises a
  ValueError that names the problem (theirs uses asserts, or fails inside sklearn);
- ties in the scores are ordered by a stable sort (their `np.argsort` default is not guaranteed stable);
- metrics come back in a `BoundaryFit` instead of going to a logger that exits on a second call.

The SVM is sklearn's `SVC(kernel="linear", C=1)`, not `LinearSVC`: LinearSVC minimises the squared hinge and
penalises the intercept, so its normal is a different vector (a few degrees apart on real data), and the time is
not in the SVM anyway (about a second for 10,000 x 512 points; sampling and scoring dominate).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

logger = logging.getLogger("sdgan.fit-boundaries")

__all__ = ["BoundaryFit", "choose_count", "fit_boundary", "project_boundary", "signed_distance", "train_boundary"]


@dataclass(frozen=True)
class BoundaryFit:
    """A fitted boundary and what InterfaceGAN logs about it (accuracies are None when their set is empty)."""

    normal: np.ndarray  # (1, D) float32, unit norm
    n_samples: int  # valid samples (after dropping invalid and NaN scores)
    n_invalid: int  # samples dropped
    chosen: int  # k per side
    n_train: int  # per side
    n_val: int  # per side
    n_remaining: int
    decision_value: float  # (max + min) / 2 of the valid scores: the label threshold for the remaining set
    train_accuracy: float
    val_accuracy: float | None
    remaining_accuracy: float | None

    def metrics(self) -> dict[str, Any]:
        """Everything but the normal, JSON-ready."""
        out = asdict(self)
        out.pop("normal")
        return out


def choose_count(num_samples: int, chosen_num_or_ratio: float) -> int:
    """k per side: int(N*r) for 0 < r <= 1, else int(r); at most N // 2 (InterfaceGAN's rule)."""
    if not chosen_num_or_ratio > 0:
        raise ValueError(f"chosen_num_or_ratio must be positive, got {chosen_num_or_ratio!r}")
    chosen = int(num_samples * chosen_num_or_ratio) if chosen_num_or_ratio <= 1 else int(chosen_num_or_ratio)
    return min(chosen, num_samples // 2)


def _check_inputs(latent_codes: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    latent_codes = np.asarray(latent_codes)
    scores = np.asarray(scores)
    if latent_codes.ndim != 2 or latent_codes.shape[0] == 0 or latent_codes.shape[1] == 0:
        raise ValueError(f"latent_codes must have shape [num_samples, latent_dim], got {latent_codes.shape}")
    if not np.issubdtype(latent_codes.dtype, np.number) or not np.issubdtype(scores.dtype, np.number):
        raise ValueError(f"latent_codes and scores must be numeric, got {latent_codes.dtype} and {scores.dtype}")
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1 or scores.shape[0] != latent_codes.shape[0]:
        raise ValueError(f"scores must have shape [{latent_codes.shape[0]}] or [{latent_codes.shape[0]}, 1] "
                         f"(one score per latent code), got {scores.shape}")
    if not np.isfinite(latent_codes).all():
        raise ValueError("latent_codes contain NaN or infinite values")
    return latent_codes, scores.astype(np.float64)


def _check_split(split: tuple[np.ndarray, np.ndarray], chosen: int) -> tuple[np.ndarray, np.ndarray]:
    """An injected split: two permutations of range(chosen) (positive side, negative side)."""
    if len(split) != 2:
        raise ValueError("split must be (positive permutation, negative permutation)")
    out = []
    for side in split:
        side = np.asarray(side)
        if side.shape != (chosen,) or not np.array_equal(np.sort(side), np.arange(chosen)):
            raise ValueError(f"each side of split must be a permutation of range({chosen}), got shape {side.shape}")
        out.append(side)
    return out[0], out[1]


def fit_boundary(latent_codes: Any, scores: Any, chosen_num_or_ratio: float = 0.02, split_ratio: float = 0.7,
                 invalid_value: float | None = None, seed: int = 0, *,
                 split: tuple[np.ndarray, np.ndarray] | None = None) -> BoundaryFit:
    """Fit one boundary: a (1, D) float32 unit normal pointing towards high scores, with its metrics.

    `split` replaces the seeded shuffle (two permutations of range(k): positives, then negatives), so a test
    can feed exactly the split InterfaceGAN drew from the global RNG. The seed alone decides the result.
    """
    from sklearn.svm import SVC

    latent_codes, scores = _check_inputs(latent_codes, scores)
    if not 0 < split_ratio <= 1:
        raise ValueError(f"split_ratio must be in (0, 1], got {split_ratio!r}")
    valid = ~np.isnan(scores)
    if invalid_value is not None:
        valid &= scores != invalid_value
    n_invalid = int((~valid).sum())
    latent_codes, scores = latent_codes[valid], scores[valid]
    num_samples, dim = latent_codes.shape
    order = np.argsort(scores, kind="stable")[::-1]
    latent_codes, scores = latent_codes[order], scores[order]
    chosen = choose_count(num_samples, chosen_num_or_ratio)
    train_num = int(chosen * split_ratio)
    if train_num < 1:
        raise ValueError(f"too few samples to fit a boundary: {num_samples} valid sample(s) ({n_invalid} dropped), "
                         f"k={chosen} per side and split_ratio={split_ratio} leave no training sample; "
                         "sample more or raise chosen_num_or_ratio")
    val_num = chosen - train_num
    if split is None:
        rng = np.random.default_rng(seed)
        positive_idx, negative_idx = rng.permutation(chosen), rng.permutation(chosen)
    else:
        positive_idx, negative_idx = _check_split(split, chosen)
    positives, negatives = latent_codes[:chosen], latent_codes[num_samples - chosen:]
    train_data = np.concatenate([positives[positive_idx[:train_num]], negatives[negative_idx[:train_num]]])
    train_label = np.concatenate([np.ones(train_num, np.int64), np.zeros(train_num, np.int64)])
    classifier = SVC(kernel="linear", C=1.0).fit(train_data, train_label)

    def accuracy(data: np.ndarray, labels: np.ndarray) -> float | None:
        return float(np.mean(classifier.predict(data) == labels)) if len(labels) else None

    val_data = np.concatenate([positives[positive_idx[train_num:]], negatives[negative_idx[train_num:]]])
    val_label = np.concatenate([np.ones(val_num, np.int64), np.zeros(val_num, np.int64)])
    remaining_data = latent_codes[chosen:num_samples - chosen]
    decision_value = float((scores[0] + scores[-1]) / 2)
    remaining_label = (scores[chosen:num_samples - chosen] >= decision_value).astype(np.int64)
    normal = classifier.coef_.reshape(1, dim).astype(np.float32)
    norm = np.linalg.norm(normal)
    if not norm > 0:
        raise ValueError("the SVM found no separating direction (all chosen samples identical?)")
    fit = BoundaryFit(normal=normal / norm, n_samples=num_samples, n_invalid=n_invalid, chosen=chosen,
                      n_train=train_num, n_val=val_num, n_remaining=len(remaining_label),
                      decision_value=decision_value, train_accuracy=float(accuracy(train_data, train_label)),
                      val_accuracy=accuracy(val_data, val_label),
                      remaining_accuracy=accuracy(remaining_data, remaining_label))
    logger.info("boundary: %d samples (%d invalid dropped), k=%d per side, train %d, val %d: val accuracy %s, "
                "remaining accuracy %s", num_samples, n_invalid, chosen, train_num, val_num,
                _percent(fit.val_accuracy), _percent(fit.remaining_accuracy))
    return fit


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def train_boundary(latent_codes: Any, scores: Any, chosen_num_or_ratio: float = 0.02, split_ratio: float = 0.7,
                   invalid_value: float | None = None, seed: int = 0) -> np.ndarray:
    """InterfaceGAN's `train_boundary`, seeded: the (1, D) float32 unit normal only (see `fit_boundary`)."""
    return fit_boundary(latent_codes, scores, chosen_num_or_ratio, split_ratio, invalid_value, seed).normal


def _as_row(boundary: Any, name: str, dim: int | None = None) -> np.ndarray:
    boundary = np.asarray(boundary)
    if boundary.ndim != 2 or boundary.shape[0] != 1 or boundary.shape[1] == 0:
        raise ValueError(f"{name} must have shape (1, latent_dim), got {boundary.shape}")
    if dim is not None and boundary.shape[1] != dim:
        raise ValueError(f"{name} has latent_dim {boundary.shape[1]}, the primal boundary has {dim}")
    if not np.isfinite(boundary).all() or not np.linalg.norm(boundary) > 0:
        raise ValueError(f"{name} must be a finite, non-zero vector")
    return boundary.astype(np.float64)


def project_boundary(primal: Any, *conditions: Any) -> np.ndarray:
    """The primal boundary with the conditions' directions removed, unit norm, shape (1, D) float32.

    Conditional editing: moving along the result changes the primal attribute while leaving the signed distance
    to every condition boundary unchanged. It is the orthogonal projection onto the complement of the conditions'
    span, which for 1 and 2 unit-norm conditions is InterfaceGAN's closed form (theirs adds 1e-8 to a
    denominator; here parallel conditions are an error instead). No conditions: the primal, normalised.
    """
    vector = _as_row(primal, "primal")
    dim = vector.shape[1]
    if not conditions:
        return (vector / np.linalg.norm(vector)).astype(np.float32)
    basis = np.concatenate([_as_row(c, f"condition {i + 1}", dim) for i, c in enumerate(conditions)])
    if len(basis) > dim:
        raise ValueError(f"{len(basis)} conditions in {dim} dimensions are linearly dependent")
    unit = basis / np.linalg.norm(basis, axis=1, keepdims=True)
    singular = np.linalg.svd(unit, compute_uv=False)
    if singular[-1] < 1e-6:
        raise ValueError("the condition boundaries are (nearly) parallel or linearly dependent: the direction to "
                         "keep fixed is ambiguous; drop the redundant condition")
    coefficients = np.linalg.solve(unit @ unit.T, unit @ vector.T)  # (C, 1)
    new = vector - coefficients.T @ unit
    norm = np.linalg.norm(new)
    if norm < 1e-6 * np.linalg.norm(vector):
        raise ValueError("the primal boundary lies in the span of the conditions: nothing is left to edit")
    return (new / norm).astype(np.float32)


def signed_distance(latents: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """w·n for each row of (N, D) latents: InterfaceGAN's signed distance to the boundary through the origin."""
    return np.asarray(latents, np.float64) @ np.asarray(normal, np.float64).reshape(-1)
