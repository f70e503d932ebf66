"""The trainer's endless, resumable stream of real batches from MEGN shards.

Exact resume: with an infinite per-worker stream, a DataLoader hands out batches round-robin (batch b
comes from worker b % N, as its (b // N)-th batch). After `start_batch` batches were consumed, a fresh
loader whose worker k plays the part of worker (k + start_batch) % N, and skips the samples that worker
already delivered, yields exactly the batches an uninterrupted run would have yielded next. Skipped samples
are read from the tar but never decoded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from data_catalog.loader import MegnDataset, collate_samples


class ResumableShardStream(MegnDataset):
    """MegnDataset repeated forever, starting after `start_batch` per-rank batches of `batch_size`."""

    def __init__(self, shards: Sequence[str | Path], batch_size: int, start_batch: int = 0, **kwargs):
        super().__init__(shards, repeat=True, **kwargs)
        if batch_size < 1 or start_batch < 0:
            raise ValueError(f"batch_size must be >= 1 and start_batch >= 0, got {batch_size}, {start_batch}")
        self.batch_size = batch_size
        self.start_batch = start_batch

    def _reader(self) -> tuple[int, int, int, int]:
        rank, world_size, worker, num_workers = super()._reader()
        return rank, world_size, (worker + self.start_batch) % num_workers, num_workers

    def samples_to_skip(self, reader: tuple[int, int, int, int]) -> int:
        _, _, logical_worker, num_workers = reader
        delivered = (self.start_batch - logical_worker + num_workers - 1) // num_workers
        return max(delivered, 0) * self.batch_size


def real_batches(shards: Sequence[str | Path], batch_size: int, start_batch: int = 0, num_workers: int = 0,
                 shuffle_buffer: int = 0, seed: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[torch.Tensor]:
    """Endless uint8 image batches (NCHW) for one rank; the trainer makes them float on its device."""
    dataset = ResumableShardStream(shards, batch_size, start_batch, rank=rank, world_size=world_size,
                                   shuffle_buffer=shuffle_buffer, seed=seed, image_dtype="uint8")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=collate_samples, persistent_workers=False,
                                         pin_memory=torch.cuda.is_available())
    for batch in loader:
        yield batch["image"]


def fit_resolution(images: torch.Tensor, size: int) -> torch.Tensor:
    """Area-downsample square images to the model resolution (shards are stored at the aligned size)."""
    height, width = images.shape[-2:]
    if height != width:
        raise ValueError(f"training images must be square, got {height}x{width}")
    if height == size:
        return images
    if height < size or height % size:
        raise ValueError(f"shard images are {height} px: cannot train a {size} px model from them "
                         f"(needs a multiple of {size}; rebuild the shards with a larger align output_size)")
    return F.interpolate(images, size=(size, size), mode="area")
