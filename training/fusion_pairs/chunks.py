"""Making the pairs in resumable chunks: one chunk = one shard, an independent job for any task runner.

Split "train" holds `n_train` pairs (pair i: z seed `seed + i`), split "test" the boundaries' held-out w (pair i:
row i of test_w.npy, z seed test_set.seed + i). Chunk c of a split holds pairs [c·chunk_size, (c+1)·chunk_size)
and becomes `shards/fusion-<split>-<c>.tar` (plus its stats), then `chunks/<split>-<c>.json` (the catalog rows),
each written atomically; the rows file comes last and marks the chunk done. A killed run is continued by the
next one with the same plan: done chunks are kept, the others written from scratch (never appended to).

Bytes never depend on how the work was cut: a pair's w, template and seeds follow from its index, and batches
lie on a global grid of `batch_size` (chunk_size is a multiple of it), so every pair is rendered in the same
batch whether the run was one pass, resumed, sharded over torchrun ranks or fanned out.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from data_catalog.atomic import atomic_write_text, is_temp_file
from data_catalog.runs import MapBatches, map_in_process
from data_catalog.shards import shard_name, stats_path, write_member_shard
from training.fusion_pairs.format import SHARD_PREFIX, SHARDS_DIR, AttributePair, FusionPair, encode

logger = logging.getLogger("sdgan.fusion-pairs")

CHUNKS_DIR = "chunks"
PLAN_FILE = "plan.json"
MEAN_FILE = "mean_w.npy"
Tick = Callable[[int, dict[str, int]], None]  # (pairs just made, landmark-source counts of them)


@dataclass(frozen=True)
class PairsPlan:
    """Everything that decides the bytes of the shards (chunks/plan.json; a change restarts the chunks)."""

    generator: str
    generator_sha256: str
    unsup3d: str
    unsup3d_sha256: str
    canonical_crop: str  # aligned | demo (resolved)
    attributes: tuple[str, ...]
    boundary_names: dict[str, str]
    normals: dict[str, str]  # attribute -> boundary .npy
    test_w: str | None
    test_nb: dict[str, str]  # attribute -> the boundaries' test_nb_<kind>.npy
    input_sha256: dict[str, str]  # of the boundary and test files, and of the mean w
    n_train: int
    seed: int
    n_test: int
    test_seed: int
    distance: float
    test_distance: float
    truncation: float
    mean_w: str  # .npy of the truncation centre, in the run folder
    noise_mode: str
    image_size: int
    canonical_size: int
    canonical_channels: tuple[str, ...]
    detector: str
    detector_threshold: float | None
    detector_model_dir: str | None
    max_landmark_offset: float
    templates: dict[str, dict[str, Any]]  # attribute -> TemplateSpec fields
    shadow: bool
    chunk_size: int
    batch_size: int
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, split: str) -> int:
        return self.n_train if split == "train" else self.n_test

    def n_chunks(self, split: str) -> int:
        return -(-self.count(split) // self.chunk_size)

    def chunks(self) -> list[tuple[str, int]]:
        """Every chunk, train first."""
        return [(split, index) for split in ("train", "test") for index in range(self.n_chunks(split))]

    def rows(self, split: str, index: int) -> range:
        return range(index * self.chunk_size, min((index + 1) * self.chunk_size, self.count(split)))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "attributes": list(self.attributes),
                "canonical_channels": list(self.canonical_channels)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairsPlan:
        return cls(**{**data, "attributes": tuple(data["attributes"]),
                      "canonical_channels": tuple(data["canonical_channels"])})


def chunk_key(split: str, index: int) -> str:
    return f"{split}-{index:06d}"


def pair_key(split: str, index: int) -> str:
    """`train_00000012`: sortable, so shard order is key order."""
    return f"{split}_{index:08d}"


def shard_path(folder: Path, split: str, index: int) -> Path:
    return Path(folder) / SHARDS_DIR / shard_name(SHARD_PREFIX, split, index)


def record_path(folder: Path, split: str, index: int) -> Path:
    return Path(folder) / CHUNKS_DIR / f"{chunk_key(split, index)}.json"


def read_record(folder: Path, plan: PairsPlan, split: str, index: int) -> dict[str, Any] | None:
    """The chunk's rows file when the chunk is complete (rows file, shard of the recorded size, stats), else None."""
    path = record_path(folder, split, index)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    shard = shard_path(folder, split, index)
    if (record.get("count") != len(plan.rows(split, index)) or not shard.is_file()
            or shard.stat().st_size != record.get("bytes") or not stats_path(shard).is_file()):
        return None
    return record


def prepare_folder(folder: Path, plan: PairsPlan) -> list[tuple[str, int]]:
    """Make chunks/ and shards/ match `plan` (everything of another plan is removed); returns the chunks to do."""
    chunks, shards = Path(folder) / CHUNKS_DIR, Path(folder) / SHARDS_DIR
    chunks.mkdir(parents=True, exist_ok=True)
    shards.mkdir(parents=True, exist_ok=True)
    plan_path = chunks / PLAN_FILE
    if not plan_path.is_file() or plan_path.read_text(encoding="utf-8") != plan.to_json():
        for stale in [*chunks.rglob("*"), *shards.rglob("*")]:
            if stale.is_file():
                stale.unlink()
        atomic_write_text(plan_path, plan.to_json())
    for leftover in [*chunks.rglob("*"), *shards.rglob("*")]:  # temp files of writes a kill interrupted
        if leftover.is_file() and is_temp_file(leftover):
            leftover.unlink(missing_ok=True)
    return [chunk for chunk in plan.chunks() if read_record(folder, plan, *chunk) is None]


# ---------------------------------------------------------------------------------------------- models
@dataclass
class Models:
    """What a worker needs, loaded once per process: generator, mean w, Unsup3d, landmarks, templates, vectors."""

    handle: Any
    mean: torch.Tensor
    nets: Any
    finder: Any
    book: Any
    normals: dict[str, np.ndarray]
    test_w: np.ndarray | None
    test_nb: dict[str, np.ndarray]


_MODELS: dict[tuple[str, str], Models] = {}
_MODELS_LOCK = threading.Lock()


def load_models(plan: PairsPlan, folder: Path, device: str) -> Models:
    from training.fusion_pairs.landmarks import LandmarkFinder
    from training.fusion_pairs.templates import TemplateBook, TemplateSpec
    from training.stylegan2.handle import GeneratorHandle
    from training.unsup3d.checkpoint import load_unsup3d

    key = (plan.to_json() + str(folder), device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            handle = GeneratorHandle.load(plan.generator, device=device)
            mean = torch.from_numpy(np.load(Path(folder) / plan.mean_w, allow_pickle=False)).to(handle.device)
            nets = load_unsup3d(plan.unsup3d, device=device).eval()
            finder = LandmarkFinder(plan.detector, plan.image_size, plan.detector_threshold, plan.detector_model_dir,
                                    plan.max_landmark_offset)
            book = TemplateBook({a: TemplateSpec(**{**spec, "anchors": {k: tuple(v) for k, v in
                                                                          spec.get("anchors", {}).items()}})
                                 for a, spec in plan.templates.items()})
            normals = {a: np.load(path, allow_pickle=False) for a, path in plan.normals.items()}
            test_w = np.load(plan.test_w, allow_pickle=False) if plan.test_w else None
            test_nb = {a: np.load(path, allow_pickle=False) for a, path in plan.test_nb.items()}
            _MODELS[key] = Models(handle, mean, nets, finder, book, normals, test_w, test_nb)
        return _MODELS[key]


# ---------------------------------------------------------------------------------------------- one chunk
def _resize(origins: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, s, s, 3) at `size` (Lanczos, as FFHQ's own downsizing): only when image_size != the generator's."""
    if origins.shape[1] == size:
        return origins
    return np.stack([np.asarray(Image.fromarray(o).resize((size, size), Image.Resampling.LANCZOS)) for o in origins])


@torch.no_grad()
def _batch_latents(models: Models, plan: PairsPlan, split: str, rows: range
                   ) -> tuple[list[int], np.ndarray, dict[str, np.ndarray]]:
    """(z seeds, raw w (B, D) float32, n_b per attribute (B, D) float32) of a batch of pairs."""
    from training.boundaries.stage import basis_for

    if split == "train":
        seeds = [plan.seed + i for i in rows]
        w = models.handle.z_to_w(models.handle.z(seeds), truncation=1.0, batch_size=len(seeds))
        latents = w.float().cpu().numpy()
        nb = {a: basis_for(latents, models.normals[a], plan.distance) for a in plan.attributes}
        return seeds, latents, nb
    seeds = [plan.test_seed + i for i in rows]
    latents = np.ascontiguousarray(models.test_w[rows.start:rows.stop], np.float32)
    nb = {a: np.ascontiguousarray(models.test_nb[a][rows.start:rows.stop], np.float32) for a in plan.attributes}
    return seeds, latents, nb


def _pairs(models: Models, plan: PairsPlan, split: str, index: int, records: list[dict[str, Any]],
           tick: Tick | None) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """The chunk's samples as (key, members), made batch by batch; rows for the catalog go to `records`."""
    from training.fusion_pairs.compose import canonical_input, place

    rows = plan.rows(split, index)
    shard = f"{SHARDS_DIR}/{shard_name(SHARD_PREFIX, split, index)}"
    for start in range(rows.start, rows.stop, plan.batch_size):
        batch = range(start, min(start + plan.batch_size, rows.stop))
        seeds, latents, nb = _batch_latents(models, plan, split, batch)
        origins = models.handle.synthesize(torch.from_numpy(latents), truncation=plan.truncation,
                                           truncation_latent=models.mean, noise_mode=plan.noise_mode,
                                           batch_size=len(batch), output="uint8").numpy()
        origins = _resize(origins, plan.image_size)
        found = [models.finder.find(origin) for origin in origins]
        canonical = canonical_input(models.nets, origins, [f.landmarks for f in found], plan.canonical_crop,
                                    plan.canonical_size, plan.canonical_channels)
        sources: dict[str, int] = {}
        for j, i in enumerate(batch):
            attributes, used, areas = {}, {}, {}
            for attribute in plan.attributes:
                template, used[attribute] = models.book.get(attribute, seeds[j])
                placed = place(origins[j], found[j].landmarks, template, plan.shadow)
                attributes[attribute] = AttributePair(nb=nb[attribute][j], gt=placed.gt, template=placed.template,
                                                      region=placed.region)
                areas[attribute] = round(placed.area, 6)
            key = pair_key(split, i)
            meta = {"seed": seeds[j], "split": split, "index": i, "landmark_source": found[j].source,
                    "truncation": plan.truncation, "noise_mode": plan.noise_mode,
                    "distance": plan.distance if split == "train" else plan.test_distance,
                    "boundary": {a: plan.boundary_names[a] for a in plan.attributes},
                    "templates": used, "region_area": areas}
            pair = FusionPair(key=key, w=latents[j], origin=origins[j], canonical=canonical[j],
                              landmarks=found[j].landmarks, meta=meta, attributes=attributes)
            records.append({"key": key, "split": split, "seed": seeds[j], "shard": shard,
                            "landmark_source": found[j].source,
                            **{f"area_{a}": areas[a] for a in plan.attributes}})
            sources[found[j].source] = sources.get(found[j].source, 0) + 1
            yield key, encode(pair)
        if tick is not None:
            tick(len(batch), sources)


def compute_chunk(models: Models, folder: Path, plan: PairsPlan, split: str, index: int,
                  tick: Tick | None = None) -> dict[str, Any]:
    """Make and write one chunk: the shard (and its stats), then the rows file that marks it done."""
    records: list[dict[str, Any]] = []
    info = write_member_shard(Path(folder) / SHARDS_DIR, SHARD_PREFIX, split, index,
                              _pairs(models, plan, split, index, records, tick))
    sources = {s: sum(r["landmark_source"] == s for r in records) for s in sorted({r["landmark_source"]
                                                                                    for r in records})}
    record = {"split": split, "index": index, "count": info.count, "shard": f"{SHARDS_DIR}/{info.name}",
              "bytes": info.bytes, "sha256": info.sha256, "landmark_sources": sources, "rows": records}
    atomic_write_text(record_path(folder, split, index), json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


# ---------------------------------------------------------------------------------------------- fan-out
@dataclass(frozen=True)
class ChunkJob:
    """One fan-out item: plain data (the folder, the plan, which chunks), so any task runner can ship it."""

    folder: str
    plan: dict[str, Any]
    device: str
    threads: int | None
    chunks: tuple[tuple[str, int], ...]


def run_chunk_job(batch: ChunkJob) -> dict[str, Any]:
    """Worker side of the fan-out: make the job's chunks that are not done yet."""
    if batch.threads:
        torch.set_num_threads(batch.threads)
    plan = PairsPlan.from_dict(batch.plan)
    folder = Path(batch.folder)
    models = load_models(plan, folder, batch.device)
    made = 0
    for split, index in batch.chunks:
        if read_record(folder, plan, split, index) is None:
            made += compute_chunk(models, folder, plan, split, index)["count"]
    return {"chunks": [list(c) for c in batch.chunks], "pairs": made}


def make_pairs(folder: Path, plan: PairsPlan, *, device: str = "cpu", threads: int | None = None, rank: int = 0,
               world_size: int = 1, map_batches: MapBatches[ChunkJob] | None = None, tick: Tick | None = None,
               on_chunk: Callable[[int, int], None] | None = None, prepare: bool = True) -> dict[str, int]:
    """Make this rank's missing chunks (the c-th chunk of `plan.chunks()` belongs to rank c % world_size).

    In process (no `map_batches`): `tick(pairs, sources)` after every batch and `on_chunk(done, total)` after
    every chunk; with `map_batches`, one job per chunk. Returns chunks done before, made now, pairs made now.
    `prepare=False` when the caller already ran `prepare_folder` (under torchrun rank 0 does, then a barrier).
    """
    every = plan.chunks()
    todo = prepare_folder(folder, plan) if prepare else [c for c in every if read_record(folder, plan, *c) is None]
    mine = [chunk for chunk in todo if every.index(chunk) % world_size == rank]
    before = len(every) - len(todo)
    if before:
        logger.info("fusion-pairs: resuming: %d of %d chunk(s) already done", before, len(every))
    if map_batches is not None:
        jobs = [ChunkJob(str(folder), plan.to_dict(), device, threads, (chunk,)) for chunk in mine]
        results = map_batches(run_chunk_job, jobs) if jobs else map_in_process(run_chunk_job, [])
        return {"chunks_before": before, "chunks_now": len(mine), "pairs_now": sum(int(r["pairs"]) for r in results)}
    models = load_models(plan, folder, device)
    made = 0
    for position, (split, index) in enumerate(mine, 1):
        made += compute_chunk(models, folder, plan, split, index, tick)["count"]
        if on_chunk is not None:
            on_chunk(before + position * world_size if world_size > 1 else before + position, len(every))
    return {"chunks_before": before, "chunks_now": len(mine), "pairs_now": made}


__all__ = ["CHUNKS_DIR", "MEAN_FILE", "PLAN_FILE", "ChunkJob", "Models", "PairsPlan", "compute_chunk", "load_models",
           "make_pairs", "pair_key", "prepare_folder", "read_record", "record_path", "run_chunk_job", "shard_path"]
