"""Per-step seeds keep the values the trainers drew before they shared this function (exact resume of old runs)."""

from __future__ import annotations

from training.common.seeding import step_seed


def test_step_seeds_are_the_recorded_values_and_differ_by_namespace_rank_and_step() -> None:
    # recorded with the trainers' earlier private step_seed functions (sha256 of "stylegan2:0:1:5", ...)
    assert step_seed("stylegan2", 0, 1, 5) == 7822412622939727258
    assert step_seed("unsup3d:epoch", 3, 0, 2) == 7195161079085654686
    seeds = {step_seed(ns, 0, rank, step) for ns in ("stylegan2", "classifier") for rank in (0, 1) for step in (0, 1)}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)
