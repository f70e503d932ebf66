"""Sampling for the boundaries: seeded z -> w -> G(w) -> classifier logits, in resumable chunk files.

InterfaceGAN practice is 500,000 samples: hours on a GPU, so a kill must not lose them. The work is cut into
chunks of `chunk_size` rows; chunk c holds samples [c·chunk_size, (c+1)·chunk_size) and is written as
`chunks/latents-<c>.npy` then `chunks/scores-<c>.npy`, each atomically (temp file, then rename). A chunk counts
as done only when both files exist with the expected shapes, so a rerun recomputes exactly the missing ones.

Bytes never depend on how the work was cut: sample i has its own z seed (`seed + i`), and batches lie on a
global grid of `batch_size` (chunk_size is a multiple of it), so every sample is always rendered and scored in
the same batch, whether the run was one pass, resumed, sharded over torchrun ranks or fanned out as tasks.

Chunks fan out as independent work items (`ChunkJob`, plain data), so a Prefect process pool or Dask can run
them: each worker loads the generator and classifier once (cached per process).
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_catalog.atomic import atomic_write_bytes, is_temp_file
from data_catalog.runs import MapBatches, map_in_process

logger = logging.getLogger("sdgan.fit-boundaries")

CHUNKS_DIR = "chunks"
PLAN_FILE = "plan.json"
LATENTS_FILE = "latents.npy"
SCORES_FILE = "scores.npy"
NOISE_SEED_OFFSET = 1 << 40  # random noise of sample seed s comes from s + this: never another sample's z stream

__all__ = ["ChunkJob", "SamplingPlan", "chunk_done", "chunk_paths", "concatenate_chunks", "run_chunk_job",
           "sample", "score_latents"]


@dataclass(frozen=True)
class SamplingPlan:
    """Everything that decides the bytes of the chunks (stored as chunks/plan.json; a change restarts them)."""

    n_samples: int
    chunk_size: int
    batch_size: int
    truncation: float
    noise_mode: str
    seed: int
    style_dim: int
    attributes: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict)  # what generator / classifier produced them

    @property
    def n_chunks(self) -> int:
        return -(-self.n_samples // self.chunk_size)

    def rows(self, index: int) -> range:
        """Sample indices of chunk `index`."""
        return range(index * self.chunk_size, min((index + 1) * self.chunk_size, self.n_samples))

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "attributes": list(self.attributes)}, indent=2, sort_keys=True) + "\n"


def chunk_paths(folder: Path, index: int) -> tuple[Path, Path]:
    chunks = Path(folder) / CHUNKS_DIR
    return chunks / f"latents-{index:05d}.npy", chunks / f"scores-{index:05d}.npy"


def _shape_of(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return array.shape, array.dtype


def chunk_done(folder: Path, plan: SamplingPlan, index: int) -> bool:
    """Both files of the chunk exist with the expected shapes (a half-written pair is not done)."""
    latents, scores = chunk_paths(folder, index)
    rows = len(plan.rows(index))
    return (_shape_of(latents) == ((rows, plan.style_dim), np.dtype(np.float32))
            and _shape_of(scores) == ((rows, len(plan.attributes)), np.dtype(np.float32)))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def prepare_folder(folder: Path, plan: SamplingPlan) -> list[int]:
    """Make chunks/ match `plan` (stale chunks of another plan are removed); returns the chunks still to do."""
    chunks = Path(folder) / CHUNKS_DIR
    chunks.mkdir(parents=True, exist_ok=True)
    plan_path = chunks / PLAN_FILE
    if not plan_path.is_file() or plan_path.read_text(encoding="utf-8") != plan.to_json():
        for stale in chunks.iterdir():
            stale.unlink()
        atomic_write_bytes(plan_path, plan.to_json().encode("utf-8"))
    for leftover in chunks.iterdir():  # temp files of a write that a kill interrupted
        if is_temp_file(leftover):
            leftover.unlink(missing_ok=True)
    return [index for index in range(plan.n_chunks) if not chunk_done(folder, plan, index)]


@torch.no_grad()
def score_latents(handle: Any, scorer: Any, seeds: Sequence[int], plan: SamplingPlan) -> tuple[np.ndarray, np.ndarray]:
    """(w, logits) of one batch of sample seeds: untruncated w [B, D]; logits of G(w) at the plan's psi [B, A]."""
    w = handle.z_to_w(handle.z(seeds), truncation=1.0, batch_size=len(seeds))
    noise = [seed + NOISE_SEED_OFFSET for seed in seeds] if plan.noise_mode == "random" else None
    images = handle.synthesize(w, truncation=plan.truncation, noise_mode=plan.noise_mode, seed=noise,
                               batch_size=len(seeds))
    logits = scorer.logits(images)
    return w.float().cpu().numpy(), logits.float().cpu().numpy()


def compute_chunk(handle: Any, scorer: Any, folder: Path, plan: SamplingPlan, index: int) -> int:
    """Sample, score and write one chunk (latents first, scores last: scores mark it complete)."""
    rows = plan.rows(index)
    latents, scores = [], []
    for start in range(rows.start, rows.stop, plan.batch_size):
        seeds = [plan.seed + i for i in range(start, min(start + plan.batch_size, rows.stop))]
        w, logits = score_latents(handle, scorer, seeds, plan)
        latents.append(w)
        scores.append(logits)
    latents_path, scores_path = chunk_paths(folder, index)
    atomic_write_bytes(latents_path, _npy_bytes(np.concatenate(latents).astype(np.float32)))
    atomic_write_bytes(scores_path, _npy_bytes(np.concatenate(scores).astype(np.float32)))
    return len(rows)


@dataclass(frozen=True)
class ChunkJob:
    """One fan-out item: plain data (paths and the plan), so any task runner can ship it to a worker."""

    folder: str
    generator: str
    classifier: str
    device: str
    threads: int | None
    plan: dict[str, Any]
    chunks: tuple[int, ...]


_MODELS: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_MODELS_LOCK = threading.Lock()


def load_models(generator: str, classifier: str, device: str, batch_size: int) -> tuple[Any, Any]:
    """The generator handle and the attribute scorer, loaded once per process and device."""
    from training.classifier.scorer import AttributeScorer
    from training.stylegan2.handle import GeneratorHandle

    key = (generator, classifier, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            handle = GeneratorHandle.load(generator, device=device)
            scorer = AttributeScorer.load(classifier, device=device)
            _MODELS[key] = (handle, scorer)
        handle, scorer = _MODELS[key]
    scorer.batch_size = max(scorer.batch_size, batch_size)  # a grid batch is scored as one batch
    return handle, scorer


def run_chunk_job(batch: ChunkJob) -> dict[str, Any]:
    """Worker side of the fan-out: compute the job's chunks that are not done yet."""
    if batch.threads:
        torch.set_num_threads(batch.threads)
    plan = SamplingPlan(**{**batch.plan, "attributes": tuple(batch.plan["attributes"])})
    handle, scorer = load_models(batch.generator, batch.classifier, batch.device, plan.batch_size)
    folder = Path(batch.folder)
    done = 0
    for index in batch.chunks:
        if not chunk_done(folder, plan, index):
            done += compute_chunk(handle, scorer, folder, plan, index)
    return {"chunks": list(batch.chunks), "samples": done}


def sample(folder: Path, plan: SamplingPlan, *, handle: Any = None, scorer: Any = None,
           generator: str | None = None, classifier: str | None = None, device: str = "cpu",
           threads: int | None = None, rank: int = 0, world_size: int = 1,
           map_batches: MapBatches[ChunkJob] | None = None,
           progress: Callable[[float, str], None] | None = None, prepare: bool = True) -> dict[str, int]:
    """Compute this rank's missing chunks (chunk c belongs to rank c % world_size).

    In process (no `map_batches`) with the given `handle`/`scorer` (or loaded from the paths), reporting
    `progress(fraction, line)` after every chunk; with `map_batches`, one job per chunk (workers load the
    models from the paths). Returns counts: chunks done before, computed now, samples computed now.
    `prepare=False` when the caller already ran `prepare_folder` (under torchrun rank 0 does, then a barrier:
    a rank cleaning the folder while another writes would delete its temp files).
    """
    todo = (prepare_folder(folder, plan) if prepare
            else [index for index in range(plan.n_chunks) if not chunk_done(folder, plan, index)])
    mine = [index for index in todo if index % world_size == rank]
    before = plan.n_chunks - len(todo)
    if before:
        logger.info("fit-boundaries: resuming: %d of %d chunk(s) already done", before, plan.n_chunks)
    plan_dict = {**asdict(plan), "attributes": list(plan.attributes)}
    if map_batches is not None:
        if generator is None or classifier is None:
            raise ValueError("fanning chunks out needs the generator and classifier paths")
        jobs = [ChunkJob(str(folder), generator, classifier, device, threads, plan_dict, (index,)) for index in mine]
        results = map_batches(run_chunk_job, jobs) if jobs else map_in_process(run_chunk_job, [])
        computed = sum(int(r["samples"]) for r in results)
        if progress is not None:
            progress(1.0, f"fit-boundaries: sampled {plan.n_samples} (w, scores) pairs in {plan.n_chunks} chunk(s)")
        return {"chunks_before": before, "chunks_now": len(mine), "samples_now": computed}
    if handle is None or scorer is None:
        if generator is None or classifier is None:
            raise ValueError("sample() needs a handle and scorer, or the generator and classifier paths")
        handle, scorer = load_models(generator, classifier, device, plan.batch_size)
    scorer.batch_size = max(scorer.batch_size, plan.batch_size)
    computed = 0
    for position, index in enumerate(mine, 1):
        computed += compute_chunk(handle, scorer, folder, plan, index)
        done = before + position * world_size if world_size > 1 else before + position
        line = (f"fit-boundaries: chunk {index + 1}/{plan.n_chunks} done "
                f"({min(done, plan.n_chunks)}/{plan.n_chunks} chunks, {computed} samples this run)")
        logger.info(line)
        if progress is not None:
            progress(min(done, plan.n_chunks) / plan.n_chunks, line)
    return {"chunks_before": before, "chunks_now": len(mine), "samples_now": computed}


def concatenate_chunks(folder: Path, plan: SamplingPlan) -> tuple[Path, Path]:
    """latents.npy [N, D] and scores.npy [N, A] (float32) from complete chunks, written atomically."""
    missing = [index for index in range(plan.n_chunks) if not chunk_done(folder, plan, index)]
    if missing:
        raise RuntimeError(f"{len(missing)} chunk(s) missing in {folder / CHUNKS_DIR} (first: {missing[0]})")
    out = []
    for name, which in ((LATENTS_FILE, 0), (SCORES_FILE, 1)):
        parts = [np.load(chunk_paths(folder, index)[which]) for index in range(plan.n_chunks)]
        path = Path(folder) / name
        atomic_write_bytes(path, _npy_bytes(np.concatenate(parts)))
        out.append(path)
    return out[0], out[1]
