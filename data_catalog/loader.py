"""The training reader: MEGN shards through webdataset, split across DDP ranks and DataLoader workers.

Every reader (rank x worker) takes a disjoint subset of whole shards, chosen by `assign_shards` from a
shard order that every rank computes identically, so one pass with `repeat=False` yields each sample
exactly once across the job. Shuffling happens on the raw bytes (before decoding), which keeps a large
shuffle buffer cheap.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from data_catalog.shards import IMAGE_EXTS, ShardSample
from data_catalog.tar_reader import shard_samples

IMAGE_DTYPES = ("float", "uint8")


class ShardSplitError(ValueError):
    """Fewer shards than readers: some rank or worker would get nothing, and DDP would hang or skew."""


def list_shards(folder: str | Path, split: str, prefix: str = "megn") -> list[Path]:
    """The split's shards in index order; temp files from an interrupted write are never listed."""
    folder = Path(folder)
    pattern = re.compile(rf"^{re.escape(prefix)}-{re.escape(split)}-\d{{6}}\.tar$")
    shards = sorted(p for p in folder.iterdir() if pattern.match(p.name)) if folder.is_dir() else []
    if not shards:
        raise FileNotFoundError(f"no {prefix}-{split}-NNNNNN.tar shards in {folder}")
    return shards


def _check_readers(n_shards: int, world_size: int, num_workers: int) -> None:
    readers = world_size * num_workers
    if n_shards < readers:
        raise ShardSplitError(f"{n_shards} shards cannot feed world_size x num_workers = {readers} readers; "
                              "write more shards (shard.max_count) or use fewer workers")


def assign_shards(shards: Sequence, rank: int, world_size: int, worker: int = 0, num_workers: int = 1) -> list:
    """Shard i goes to global reader `rank * num_workers + worker` when i % (world_size * num_workers) is it."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..world_size-1, got rank={rank}, world_size={world_size}")
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise ValueError(f"worker must be in 0..num_workers-1, got worker={worker}, num_workers={num_workers}")
    _check_readers(len(shards), world_size, num_workers)
    readers = world_size * num_workers
    reader = rank * num_workers + worker
    return [shard for i, shard in enumerate(shards) if i % readers == reader]


def distributed_context() -> tuple[int, int]:
    """(rank, world_size): the initialised process group wins, then torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    try:
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise ValueError(f"RANK/WORLD_SIZE must be integers: {exc}") from exc
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"environment RANK={rank} does not fit WORLD_SIZE={world_size}")
    return rank, world_size


def _image_ext(sample: dict) -> str:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return ext
    raise ValueError(f"sample {sample.get('__key__')!r} in {sample.get('__url__')} has no image "
                     f"(one of {IMAGE_EXTS}); members: {sorted(k for k in sample if not k.startswith('__'))}")


def _check_complete(sample: dict) -> None:
    missing = [name for name in ("cls", "json") if name not in sample]
    if missing:
        raise ValueError(f"sample {sample.get('__key__')!r} in {sample.get('__url__')} lacks {missing}")


def decode_image(data: bytes, image_dtype: str = "float") -> torch.Tensor:
    """RGB CHW tensor: uint8 as stored, or float32 in [-1, 1] (the GAN convention)."""
    with Image.open(io.BytesIO(data)) as image:
        array = np.array(image.convert("RGB"), dtype=np.uint8)
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return tensor if image_dtype == "uint8" else to_float_images(tensor)


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [-1, 1]; on the GPU when the loader ships uint8 (4x fewer bytes between
    processes, and no float work in the workers)."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def _decode(sample: dict, image_dtype: str) -> dict[str, Any]:
    _check_complete(sample)
    return {"image": decode_image(sample[_image_ext(sample)], image_dtype), "label": int(sample["cls"]),
            "key": sample["__key__"], "metadata": json.loads(sample["json"])}


def _shard_urls(shards: Sequence[str], order_seed: str | None, reader: tuple[int, int, int, int],
                repeat: bool) -> Iterator[dict[str, str]]:
    """Yield dict(url=...) for this reader's shards, pass after pass when repeating.

    Pass p shuffles the full shard list with a seed built from (seed, epoch, p) only, so every rank and
    worker draws the same permutation before taking its slice: the slices stay disjoint and complete.
    """
    rank, world_size, worker, num_workers = reader
    for pass_index in itertools.count():
        order = list(shards)
        if order_seed is not None:
            random.Random(f"{order_seed}:{pass_index}").shuffle(order)
        for url in assign_shards(order, rank, world_size, worker, num_workers):
            yield {"url": url}
        if not repeat:
            return


class MegnDataset(torch.utils.data.IterableDataset):
    """MEGN samples as {"image", "label", "key", "metadata"} dicts, split across ranks and workers.

    `rank`/`world_size` default to `distributed_context()` at construction (in the main process, where
    the process group lives). With `shuffle_buffer > 0` shard order and sample order change with
    `set_epoch`, deterministically for a given seed; with 0 samples come in shard/key order. Call
    `set_epoch` before creating each epoch's iterator (DataLoader workers copy the dataset then, so use
    `persistent_workers=False`).
    """

    def __init__(self, shards: Sequence[str | Path], rank: int | None = None, world_size: int | None = None,
                 shuffle_buffer: int = 0, seed: int = 0, repeat: bool = False, image_dtype: str = "float"):
        super().__init__()
        self.shards = [str(shard) for shard in shards]
        if not self.shards:
            raise ValueError("MegnDataset needs at least one shard")
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype must be one of {IMAGE_DTYPES}, got {image_dtype!r}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        if rank is None or world_size is None:
            env_rank, env_world = distributed_context()
            rank = env_rank if rank is None else rank
            world_size = env_world if world_size is None else world_size
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank={rank}, world_size={world_size}")
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.repeat = repeat
        self.image_dtype = image_dtype
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _reader(self) -> tuple[int, int, int, int]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        _check_readers(len(self.shards), self.world_size, num_workers)
        return self.rank, self.world_size, worker, num_workers

    def samples_to_skip(self, reader: tuple[int, int, int, int]) -> int:
        """Samples this reader drops from the start of its stream, before decoding (resuming subclasses)."""
        return 0

    def pipeline(self) -> wds.DataPipeline:
        """The webdataset pipeline for the calling reader (call inside the worker that iterates it)."""
        reader = self._reader()
        shuffling = self.shuffle_buffer > 0
        order_seed = f"{self.seed}:{self.epoch}" if shuffling else None
        stages: list[Any] = [
            lambda: _shard_urls(self.shards, order_seed, reader, self.repeat),
            shard_samples,
        ]
        if shuffling:
            rng = random.Random(f"{self.seed}:{self.epoch}:reader{reader[0] * reader[3] + reader[2]}")
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        if skip := self.samples_to_skip(reader):
            stages.append(wds.slice(skip, None))
        stages.append(wds.map(lambda sample: _decode(sample, self.image_dtype)))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.pipeline())


def collate_samples(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and labels; keys and metadata stay lists (metadata dicts differ in their fields)."""
    return {"image": torch.stack([sample["image"] for sample in batch]),
            "label": torch.tensor([sample["label"] for sample in batch], dtype=torch.int64),
            "key": [sample["key"] for sample in batch],
            "metadata": [sample["metadata"] for sample in batch]}


def make_loader(shards: Sequence[str | Path], batch_size: int, num_workers: int = 0,
                **dataset_kwargs: Any) -> torch.utils.data.DataLoader:
    """A DataLoader over MegnDataset; the shard count is checked here, before any worker starts."""
    dataset = MegnDataset(shards, **dataset_kwargs)
    _check_readers(len(dataset.shards), dataset.world_size, max(num_workers, 1))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                       collate_fn=collate_samples, persistent_workers=False,
                                       prefetch_factor=4 if num_workers > 0 else None)


def read_samples(shards: Sequence[str | Path]) -> Iterator[ShardSample]:
    """Every sample of the shards, in shard then key order, as stored (no decoding): for exports and checks."""
    urls = [str(shard) for shard in shards]
    if not urls:
        return
    for sample in shard_samples({"url": url} for url in urls):
        _check_complete(sample)
        ext = _image_ext(sample)
        yield ShardSample(key=sample["__key__"], image=sample[ext], image_ext=ext,
                          metadata=json.loads(sample["json"]), label=int(sample["cls"]))
