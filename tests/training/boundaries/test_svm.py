"""`train_boundary` / `project_boundary` against InterfaceGAN's recorded outputs and hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.boundaries.svm import choose_count, fit_boundary, project_boundary, signed_distance, train_boundary

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "interfacegan" / "train_boundary.npz"
CASES = ("r05_s07", "r02_s07", "r02_s10", "n50_s07")


@pytest.fixture(scope="module")
def recorded() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _params(recorded: dict[str, np.ndarray], name: str) -> tuple[float, float]:
    ratio, split_ratio, _ = recorded[f"{name}_params"]
    return (float(ratio) if ratio <= 1 else int(ratio)), float(split_ratio)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("name", CASES)
def test_same_split_as_interfacegan_gives_its_boundary(recorded: dict[str, np.ndarray], name: str) -> None:
    ratio, split_ratio = _params(recorded, name)
    split = (recorded[f"{name}_positive"], recorded[f"{name}_negative"])
    fit = fit_boundary(recorded["latents"], recorded["scores"], ratio, split_ratio, split=split)
    assert fit.normal.shape == (1, 16) and fit.normal.dtype == np.float32
    assert cosine(fit.normal, recorded[f"{name}_boundary"]) > 1 - 1e-4
    np.testing.assert_allclose(fit.normal, recorded[f"{name}_boundary"], atol=1e-4)


def test_split_ratio_one_needs_no_shuffle_to_match(recorded: dict[str, np.ndarray]) -> None:
    ratio, _ = _params(recorded, "r02_s10")
    for seed in (0, 1, 99):  # every sample is a training sample: the seed only reorders them
        normal = train_boundary(recorded["latents"], recorded["scores"], ratio, 1.0, seed=seed)
        assert cosine(normal, recorded["r02_s10_boundary"]) > 1 - 1e-4


def test_own_seeded_split_points_the_same_way(recorded: dict[str, np.ndarray]) -> None:
    ratio, split_ratio = _params(recorded, "r05_s07")
    for seed in (0, 1, 2):
        normal = train_boundary(recorded["latents"], recorded["scores"], ratio, split_ratio, seed=seed)
        assert cosine(normal, recorded["r05_s07_boundary"]) > 0.99


def test_recovers_a_planted_direction_and_reports_accuracies() -> None:
    rng = np.random.default_rng(7)
    latents = rng.standard_normal((4000, 64)).astype(np.float32)
    direction = rng.standard_normal(64)
    direction /= np.linalg.norm(direction)
    scores = latents @ direction + 0.2 * rng.standard_normal(4000)
    fit = fit_boundary(latents, scores, chosen_num_or_ratio=0.1, seed=3)
    assert cosine(fit.normal, direction) > 0.95
    assert abs(np.linalg.norm(fit.normal) - 1) < 1e-6
    assert (fit.chosen, fit.n_train, fit.n_val, fit.n_remaining) == (400, 280, 120, 3200)
    assert fit.val_accuracy > 0.95 and fit.remaining_accuracy > 0.8
    assert fit.metrics()["n_samples"] == 4000 and "normal" not in fit.metrics()


def test_same_seed_same_bytes_other_seed_other_split(recorded: dict[str, np.ndarray]) -> None:
    args = (recorded["latents"], recorded["scores"], 0.2, 0.7)
    first = train_boundary(*args, seed=5)
    assert first.tobytes() == train_boundary(*args, seed=5).tobytes()
    np.random.seed(1)  # the global RNG has no say
    assert first.tobytes() == train_boundary(*args, seed=5).tobytes()
    assert first.tobytes() != train_boundary(*args, seed=6).tobytes()


def test_invalid_values_and_nan_are_dropped(recorded: dict[str, np.ndarray]) -> None:
    latents, scores = recorded["latents"], recorded["scores"][:, 0].astype(np.float64)
    clean = fit_boundary(latents, scores, 0.2, 0.7, seed=4)
    # extra rows whose scores are invalid, with latents that would dominate the top of the ranking
    junk = np.full((30, 16), 50.0, np.float32)
    bad_scores = np.concatenate([np.full(20, -1.0), np.full(10, np.nan)])
    dirty = fit_boundary(np.concatenate([latents, junk]), np.concatenate([scores, bad_scores]), 0.2, 0.7,
                         invalid_value=-1.0, seed=4)
    assert dirty.n_invalid == 30 and dirty.n_samples == 600
    assert dirty.normal.tobytes() == clean.normal.tobytes()


def test_choose_count_follows_interfacegan() -> None:
    assert choose_count(1000, 0.02) == 20
    assert choose_count(1000, 1.0) == 500  # capped at N // 2
    assert choose_count(1000, 30) == 30
    assert choose_count(1000, 2000) == 500
    with pytest.raises(ValueError, match="positive"):
        choose_count(1000, 0)


@pytest.mark.parametrize(("latents", "scores", "match"), [
    (np.zeros(10), np.zeros(10), "latent_codes must have shape"),
    (np.zeros((10, 4, 2)), np.zeros(10), "latent_codes must have shape"),
    (np.zeros((10, 4)), np.zeros(9), r"scores must have shape \[10\]"),
    (np.zeros((10, 4)), np.zeros((10, 2)), r"scores must have shape \[10\]"),
    (np.full((10, 4), np.nan), np.zeros(10), "NaN"),
])
def test_wrong_shapes_are_clear_errors(latents: np.ndarray, scores: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_boundary(latents, scores)


def test_too_few_samples_and_bad_ratios_are_clear_errors() -> None:
    rng = np.random.default_rng(0)
    latents, scores = rng.standard_normal((20, 4)), rng.standard_normal(20)
    with pytest.raises(ValueError, match="too few samples"):
        train_boundary(latents, scores, chosen_num_or_ratio=0.02)
    with pytest.raises(ValueError, match="split_ratio"):
        train_boundary(latents, scores, chosen_num_or_ratio=0.5, split_ratio=0)
    with pytest.raises(ValueError, match="permutation"):
        fit_boundary(latents, scores, 0.5, split=(np.arange(3), np.arange(10)))


def e(i: int, dim: int = 4) -> np.ndarray:
    out = np.zeros((1, dim), np.float32)
    out[0, i] = 1
    return out


def test_project_boundary_hand_computed_cases() -> None:
    primal = np.array([[1.0, 1.0, 1.0, 1.0]]) / 2
    np.testing.assert_allclose(project_boundary(primal), primal, atol=1e-7)
    np.testing.assert_allclose(project_boundary(primal, e(0)), [[0, 1, 1, 1] / np.sqrt(3)], atol=1e-6)
    np.testing.assert_allclose(project_boundary(primal, e(0), e(1)), [[0, 0, 1, 1] / np.sqrt(2)], atol=1e-6)
    np.testing.assert_allclose(project_boundary(primal, e(0), e(1), e(2)), e(3), atol=1e-6)
    # non-orthogonal conditions: the result is orthogonal to both and keeps what is outside their span
    c1 = np.array([[1.0, 1.0, 0.0, 0.0]]) / np.sqrt(2)
    out = project_boundary(primal, c1, e(0))
    np.testing.assert_allclose(out, [[0, 0, 1, 1] / np.sqrt(2)], atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (1, 4)


def test_project_boundary_matches_interfacegans_closed_forms() -> None:
    rng = np.random.default_rng(1)
    unit = [v / np.linalg.norm(v) for v in rng.standard_normal((4, 1, 32))]
    primal, c1, c2, c3 = unit
    one = primal - primal @ c1.T * c1  # InterfaceGAN's 1-condition form
    np.testing.assert_allclose(project_boundary(primal, c1), one / np.linalg.norm(one), atol=1e-6)
    p1, p2, c12 = (primal @ c1.T).item(), (primal @ c2.T).item(), (c1 @ c2.T).item()
    alpha, beta = (p1 - p2 * c12) / (1 - c12**2), (p2 - p1 * c12) / (1 - c12**2)
    two = primal - alpha * c1 - beta * c2  # its 2-condition form (without the 1e-8)
    np.testing.assert_allclose(project_boundary(primal, c1, c2), two / np.linalg.norm(two), atol=1e-6)
    three = project_boundary(primal, c1, c2, c3)
    for cond in (c1, c2, c3):
        assert abs((three @ cond.T).item()) < 1e-6
    assert abs(np.linalg.norm(three) - 1) < 1e-6


def test_project_boundary_errors() -> None:
    with pytest.raises(ValueError, match=r"primal must have shape \(1, latent_dim\)"):
        project_boundary(np.ones(4))
    with pytest.raises(ValueError, match="condition 1 has latent_dim 3"):
        project_boundary(e(0), np.ones((1, 3)))
    with pytest.raises(ValueError, match="parallel"):
        project_boundary(e(0), e(1), -2 * e(1))
    with pytest.raises(ValueError, match="span"):
        project_boundary(e(0), e(0) + e(1), e(1))
    with pytest.raises(ValueError, match="non-zero"):
        project_boundary(e(0), np.zeros((1, 4)))


def test_signed_distance_is_the_dot_product() -> None:
    latents = np.array([[3.0, 4.0], [-1.0, 0.0]])
    np.testing.assert_allclose(signed_distance(latents, np.array([[1.0, 0.0]])), [3.0, -1.0])
