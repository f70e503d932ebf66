"""Fusion pairs for train-fusion: finding a fusion-pairs run, and a resumable, rank-sharded stream of one attribute.

A pair is large (origin, GT, template and region at the image size plus 9 canonical maps), so a run's pairs are
streamed from its shards, never held in memory. The stream is a sequence of passes; pass p deals the shards,
permuted by (seed, p), to the readers (rank x DataLoader worker) as `data_catalog.loader.assign_shards` does, and
each reader shuffles its pass through a buffer seeded by (seed, p, reader), flushed at the end of the pass. So
where a reader stands after n samples is known from the shard sizes alone: a resumed stream skips whole passes
without reading them and reads (without decoding) only the part of the current pass it already delivered. The
DataLoader's round-robin over workers is undone as in `training.stylegan2.data.ResumableShardStream`, whose
worker rotation this class inherits.

Workers ship uint8 images and float16 canonical maps; the trainer makes them float on its device.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_catalog.loader import ShardSplitError, assign_shards
from data_catalog.manifest import Manifest
from data_catalog.shards import read_stats, stats_path
from data_catalog.tar_reader import group_samples, iter_members, shard_samples
from data_catalog.workspace import RunNotFound, Workspace
from training.fusion_pairs.format import INDEX_FILE, FusionPair, PairsIndex, decode
from training.stylegan2.data import ResumableShardStream

__all__ = ["PairStream", "PairsNotFound", "PairsRun", "collate_pairs", "find_pairs_run", "held_out_batches",
           "pair_batches", "pair_tensors", "read_pairs"]

TENSOR_KEYS = ("w", "nb", "origin", "gt", "template", "region", "canonical")


class PairsNotFound(FileNotFoundError):
    """No fusion-pairs run was given and none is current, or the one given does not exist."""


@dataclass(frozen=True)
class PairsRun:
    """A fusion-pairs run folder, its `pairs.json` and the run that wrote it (None for a bare folder)."""

    folder: Path
    index: PairsIndex
    manifest: Manifest | None

    @property
    def run_id(self) -> str:
        return self.manifest.run_id if self.manifest is not None else self.folder.name

    def shards(self, split: str) -> list[Path]:
        """The split's shards in order; FileNotFoundError when the split has none or a file is missing."""
        names = self.index.shards.get(split, [])
        if not names:
            raise FileNotFoundError(f"fusion-pairs run {self.run_id} has no {split!r} shards "
                                    f"(splits: {sorted(k for k, v in self.index.shards.items() if v)})")
        paths = [self.folder / name for name in names]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"fusion-pairs run {self.run_id}: shards listed in {INDEX_FILE} are missing: "
                                    f"{missing[:3]}")
        return paths


def _load_index(folder: Path) -> PairsIndex:
    path = folder / INDEX_FILE
    if not path.is_file():
        raise PairsNotFound(f"{folder} is not a fusion-pairs run folder (no {INDEX_FILE})")
    return PairsIndex.from_json(path.read_text(encoding="utf-8"))


def _index_file(workspace: Workspace, manifest: Manifest) -> Path:
    for entry in manifest.files.values():
        if entry.path.rsplit("/", 1)[-1] == INDEX_FILE:
            return workspace.resolve(entry.path)
    raise PairsNotFound(f"fusion-pairs run {manifest.run_id} lists no {INDEX_FILE} among its outputs")


def find_pairs_run(workspace: Workspace, pairs: str | None, inputs: Sequence[Manifest] = ()) -> PairsRun:
    """The pairs to train on: a run id, a run folder holding pairs.json, else the upstream / current run."""
    if pairs is not None and Path(pairs).expanduser().is_dir():
        folder = Path(pairs).expanduser().resolve()
        producer = next((m for m in reversed(workspace.manifests("fusion-pairs"))
                         if _safe_index_folder(workspace, m) == folder), None)
        return PairsRun(folder, _load_index(folder), producer)
    try:
        manifest = workspace.chosen_run("fusion-pairs", pairs, inputs)
    except RunNotFound as exc:
        raise PairsNotFound(str(exc)) from None
    if manifest is None:
        raise PairsNotFound(f"no fusion-pairs run given and none completed in {workspace.root}; run "
                            "fusion-pairs first (sdgan fusion-pairs) or pass --pairs RUN_ID")
    index_file = _index_file(workspace, manifest)
    return PairsRun(index_file.parent, _load_index(index_file.parent), manifest)


def _safe_index_folder(workspace: Workspace, manifest: Manifest) -> Path | None:
    try:
        return _index_file(workspace, manifest).parent.resolve()
    except PairsNotFound:
        return None


def shard_counts(shards: Sequence[Path]) -> list[int]:
    """Samples per shard from each `_stats.json`, counted from the tar when a shard has none."""
    counts = []
    for shard in shards:
        if stats_path(shard).is_file():
            counts.append(read_stats(shard).count)
        else:
            with open(shard, "rb") as stream:
                counts.append(sum(1 for _ in group_samples(iter_members(stream, str(shard)), str(shard))))
    return counts


# ---------------------------------------------------------------------------------------------- decoding
def _chw(image: np.ndarray) -> torch.Tensor:
    image = image[:, :, None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def pair_tensors(pair: FusionPair, attribute: str) -> dict[str, Any]:
    """One attribute of a decoded pair as tensors: w, nb float32; origin, gt, template uint8 (3, S, S); region
    uint8 (1, S, S); canonical float16 (9, Sc, Sc); and the key."""
    item = pair.attributes[attribute]
    return {"key": pair.key, "w": torch.from_numpy(pair.w.copy()), "nb": torch.from_numpy(item.nb.copy()),
            "origin": _chw(pair.origin), "gt": _chw(item.gt), "template": _chw(item.template),
            "region": _chw(item.region), "canonical": torch.from_numpy(pair.canonical.copy())}


def collate_pairs(batch: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {key: torch.stack([sample[key] for sample in batch]) for key in TENSOR_KEYS}
    out["key"] = [sample["key"] for sample in batch]
    return out


def iter_pairs(shards: Sequence[Path], attribute: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The first `limit` pairs of the shards (all when None), in shard and key order, as `pair_tensors`."""
    if limit == 0:
        return
    samples = shard_samples({"url": str(shard)} for shard in shards)
    for sample in itertools.islice(samples, limit):
        yield pair_tensors(decode(sample, [attribute]), attribute)


def read_pairs(shards: Sequence[Path], attribute: str, limit: int | None = None) -> list[dict[str, Any]]:
    """`iter_pairs` as a list (the grid's few fixed pairs)."""
    return list(iter_pairs(shards, attribute, limit))


def held_out_batches(shards: Sequence[Path], attribute: str, limit: int, batch_size: int) -> Iterator[dict[str, Any]]:
    """Collated batches of the first `limit` pairs, decoded as they are used (evaluation)."""
    pairs = iter_pairs(shards, attribute, limit)
    while chunk := list(itertools.islice(pairs, batch_size)):
        yield collate_pairs(chunk)


# ---------------------------------------------------------------------------------------------- the stream
def _buffer_shuffle(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle through a buffer of `size` (raw samples): fill, then emit a random one per arrival, then drain."""
    buffer: list[Any] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            pick = rng.randrange(len(buffer))
            buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


class PairStream(ResumableShardStream):
    """Endless pairs of one attribute for one rank, starting after `start_batch` batches of `batch_size`."""

    def __init__(self, shards: Sequence[str | Path], counts: Sequence[int], attribute: str, batch_size: int,
                 start_batch: int = 0, **kwargs: Any) -> None:
        super().__init__(shards, batch_size, start_batch, **kwargs)
        if len(counts) != len(self.shards) or any(c < 1 for c in counts):
            raise ValueError(f"need one positive sample count per shard, got {list(counts)} for "
                             f"{len(self.shards)} shards")
        self.counts = dict(zip(self.shards, (int(c) for c in counts)))
        self.attribute = attribute

    def pass_shards(self, pass_index: int, reader: tuple[int, int, int, int]) -> list[str]:
        """The shards `reader` reads in pass `pass_index`: a (seed, pass) permutation, dealt to the readers."""
        order = list(self.shards)
        if self.shuffle_buffer > 0:
            random.Random(f"{self.seed}:{pass_index}").shuffle(order)
        return assign_shards(order, *reader)

    def start(self, reader: tuple[int, int, int, int], delivered: int) -> tuple[int, int]:
        """(pass, samples into it) after `delivered` samples of this reader: whole passes cost no reading."""
        pass_index = 0
        while True:
            size = sum(self.counts[s] for s in self.pass_shards(pass_index, reader))
            if delivered < size:
                return pass_index, delivered
            delivered -= size
            pass_index += 1

    def samples(self) -> Iterator[dict[str, Any]]:
        """This reader's decoded samples, from where the resumed stream stands."""
        reader = self._reader()
        pass_index, skip = self.start(reader, self.samples_to_skip(reader))
        reader_id = reader[0] * reader[3] + reader[2]
        for p in itertools.count(pass_index):
            raw: Iterator[dict[str, Any]] = shard_samples({"url": s} for s in self.pass_shards(p, reader))
            if self.shuffle_buffer > 0:
                raw = _buffer_shuffle(raw, self.shuffle_buffer, random.Random(f"{self.seed}:{p}:reader{reader_id}"))
            if skip:
                raw, skip = itertools.islice(raw, skip, None), 0
            for sample in raw:
                yield pair_tensors(decode(sample, [self.attribute]), self.attribute)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.samples()


def pair_batches(shards: Sequence[Path], counts: Sequence[int], attribute: str, batch_size: int,
                 start_batch: int = 0, *, num_workers: int = 0, shuffle_buffer: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> Iterator[dict[str, Any]]:
    """Endless collated batches (`collate_pairs`) of one attribute for one rank, after `start_batch` batches.

    Every reader (rank x worker) needs a shard of its own: ShardSplitError here, before any worker starts.
    """
    readers = world_size * max(num_workers, 1)
    if len(shards) < readers:
        raise ShardSplitError(f"{len(shards)} fusion-pairs shards cannot feed world_size x num_workers = {readers} "
                              "readers; use fewer data.num_workers or make more shards in fusion-pairs")
    dataset = PairStream(shards, counts, attribute, batch_size, start_batch, rank=rank, world_size=world_size,
                         shuffle_buffer=shuffle_buffer, seed=seed, image_dtype="uint8")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=collate_pairs, persistent_workers=False,
                                         pin_memory=torch.cuda.is_available())
    return iter(loader)
