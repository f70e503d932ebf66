"""The trainer's batch stream: a resumed stream continues exactly where the interrupted one stopped."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from tests.training.stylegan2.stylegan2_helpers import VERSION, toy_workspace
from training.stylegan2.data import fit_resolution, real_batches


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    workspace = toy_workspace(tmp_path_factory.mktemp("data") / "ws", n=24, size=8, shards=4)
    return sorted((workspace.root / "primary" / "megn" / VERSION).glob("*.tar"))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("start", [1, 3, 8])
def test_a_resumed_stream_yields_the_batches_an_uninterrupted_one_yields_next(shards: list[Path], num_workers: int,
                                                                             start: int) -> None:
    options = {"num_workers": num_workers, "shuffle_buffer": 8, "seed": 3}
    uninterrupted = list(itertools.islice(real_batches(shards, 4, **options), start + 4))
    resumed = list(itertools.islice(real_batches(shards, 4, start_batch=start, **options), 4))
    for expected, actual in zip(uninterrupted[start:], resumed):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_the_stream_repeats_past_the_end_of_the_data(shards: list[Path]) -> None:
    batches = list(itertools.islice(real_batches(shards, 5), 12))  # 60 images from 24
    assert all(b.shape == (5, 3, 8, 8) for b in batches)
    assert all(b.dtype == torch.uint8 for b in batches)  # bytes cross the worker boundary, floats are made later


def test_fit_resolution_area_downsamples_and_refuses_impossible_sizes() -> None:
    images = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    torch.testing.assert_close(fit_resolution(images, 2)[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    assert fit_resolution(images, 4) is images
    with pytest.raises(ValueError, match="cannot train a 8 px model"):
        fit_resolution(images, 8)
    with pytest.raises(ValueError, match="multiple"):
        fit_resolution(torch.zeros(1, 3, 12, 12), 8)
