"""The fusion-pairs stage: generator + boundaries + Unsup3d + templates -> fusion training pairs as WebDataset shards.

For each w (split "train": fresh seeded samples; split "test": the boundaries' held-out test set, kept apart)
`run` renders the origin G(trunc(w)), finds its 68 landmarks (or FFHQ's canonical ones), composites each
attribute's template by them (GT, placed template, region), computes the Unsup3d canonical maps and n_b, and
writes `format.encode`d samples into `primary/fusion_pairs/<run-id>/shards/fusion-<split>-NNNNNN.tar` (one per
chunk; see `chunks`), with `pairs.json` (format.PairsIndex), `mean_w.npy` (the truncation centre, so train-fusion
renders with the same one), a report, a sample grid and one `fusion_pairs` catalog row per pair.

Truncation follows the official generator: psi pulls towards the mean w *after* offsets are added, so w is
stored raw, the origin is G(trunc(w)) and train-fusion renders G(trunc(w + n_b + n_o)) with the same psi and mean.

A killed run is continued by the next run with the same plan (config and input files): it reuses the killed
run's id and folder and makes only the missing chunks. Under torchrun chunks are shared out by rank; rank 0
does the bookkeeping.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_catalog.atomic import atomic_write_bytes, atomic_write_text
from data_catalog.hashing import json_hash
from data_catalog.manifest import Manifest, TableOutput, table_digest
from data_catalog.progress import Progress
from data_catalog.runs import MapBatches, new_run_id, stage_run
from data_catalog.shards import stats_path
from data_catalog.workspace import Workspace
from training.common.device import kept_torch_threads
from training.common.distributed import DistContext, barrier, setup_runtime
from training.common.resume import find_interrupted_run, shared_value
from training.fusion_pairs.chunks import (
    MEAN_FILE,
    ChunkJob,
    PairsPlan,
    make_pairs,
    prepare_folder,
    read_record,
)
from training.fusion_pairs.config import FusionPairsConfig
from training.fusion_pairs.format import ATTRIBUTES, INDEX_FILE, PairsIndex
from training.fusion_pairs.landmarks import CANONICAL, DETECTED
from training.fusion_pairs.sources import (
    KIND_OF,
    BoundariesRun,
    SourceError,
    find_boundaries,
    resolve_generator,
    resolve_unsup3d,
)
from training.fusion_pairs.summary import save_pairs_grid
from training.fusion_pairs.templates import template_specs

__all__ = ["PAIRS_DIR", "STAGE", "TABLE", "FusionPairsConfig", "find_interrupted", "resume_key", "run"]

STAGE = "fusion-pairs"
PAIRS_DIR = Path("primary") / "fusion_pairs"
RESUME_FILE = "resume.json"
TABLE = "fusion_pairs"
GRID_ROWS = 4
logger = logging.getLogger("sdgan.fusion-pairs")
ProgressCallback = Callable[[float, str], None]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _check_seeds(config: FusionPairsConfig, boundaries: BoundariesRun) -> None:
    """Training w must be fresh: none of the boundaries' sampled or held-out seeds."""
    train = range(config.seed, config.seed + config.n_train)
    for name, other in (("sampling", boundaries.sampling_seeds), ("test_set", boundaries.test_seeds)):
        if other and train.start < other.stop and other.start < train.stop:
            raise ValueError(f"fusion-pairs seeds {train.start}..{train.stop - 1} overlap the {name} seeds "
                             f"{other.start}..{other.stop - 1} of fit-boundaries run {boundaries.manifest.run_id}: "
                             "set `seed` so that the training w are fresh samples")


def _canonical_crop(config: FusionPairsConfig, kind: str) -> str:
    """auto: our train-unsup3d networks learnt on whole aligned faces; official ones on the demo's tight crop."""
    if config.canonical_crop != "auto":
        return config.canonical_crop
    return "aligned" if kind == "sdgan" else "demo"


def build_plan(config: FusionPairsConfig, boundaries: BoundariesRun, generator: Path, generator_sha: str,
               unsup3d: Path, unsup3d_kind: str, handle: Any, mean_bytes: bytes, same_generator: bool) -> PairsPlan:
    """The plan of a run: config values and every input file (paths and sha256) that decides the bytes."""
    from data_catalog.hashing import sha256_file

    attributes = config.attributes
    names = {a: boundaries.boundary_name(a) for a in attributes}
    normals = {a: str(boundaries.file(f"boundary_{names[a]}")) for a in attributes}
    hashes = {f"boundary_{names[a]}": boundaries.sha256(f"boundary_{names[a]}") for a in attributes}
    test_w, test_nb, n_test, test_seed = None, {}, 0, boundaries.test_seeds.start
    if config.test:
        test_w = str(boundaries.file("test_w"))
        hashes["test_w"] = boundaries.sha256("test_w")
        n_test = int(np.load(test_w, mmap_mode="r").shape[0])
        for a in attributes:
            name = f"test_nb_{KIND_OF[a]}"
            test_nb[a] = str(boundaries.file(name))
            hashes[name] = boundaries.sha256(name)
    hashes[MEAN_FILE] = _sha256(mean_bytes)
    specs = template_specs(config.templates)
    return PairsPlan(
        generator=str(generator), generator_sha256=generator_sha, unsup3d=str(unsup3d),
        unsup3d_sha256=sha256_file(unsup3d), canonical_crop=_canonical_crop(config, unsup3d_kind),
        attributes=attributes, boundary_names=names, normals=normals, test_w=test_w, test_nb=test_nb,
        input_sha256=hashes, n_train=config.n_train, seed=config.seed, n_test=n_test, test_seed=test_seed,
        distance=config.distance if config.distance is not None else boundaries.test_distance,
        test_distance=boundaries.test_distance, truncation=config.truncation, mean_w=MEAN_FILE,
        noise_mode=config.noise_mode, image_size=config.image_size or handle.size,
        canonical_size=config.canonical_size, canonical_channels=tuple(config.canonical_channels),
        detector=config.detector, detector_threshold=config.detector_threshold,
        detector_model_dir=config.detector_model_dir, max_landmark_offset=config.max_landmark_offset,
        templates={a: {**spec.__dict__, "anchors": {k: list(v) for k, v in spec.anchors.items()}}
                   for a, spec in specs.items()},
        shadow=config.templates.shadow, chunk_size=config.chunk_size, batch_size=config.batch_size,
        extra={"boundaries_run": boundaries.manifest.run_id, "unsup3d_kind": unsup3d_kind,
               "generator_size": handle.size, "w_dim": handle.style_dim, "num_ws": handle.n_latent,
               "generator_matches_boundaries": same_generator})


def resume_key(plan: PairsPlan) -> str:
    """What must match for a new run to continue a killed one: the whole plan (config and input files)."""
    return json_hash(plan.to_dict())


def find_interrupted(workspace: Workspace, key: str) -> str | None:
    """The newest pairs folder with the same resume key whose run never completed, if any."""
    return find_interrupted_run(workspace, STAGE, workspace.root / PAIRS_DIR, key, RESUME_FILE)


# ---------------------------------------------------------------------------------------------- the stage
def run(config: FusionPairsConfig, workspace: Workspace, inputs: Sequence[Manifest] = (), *,
        map_batches: MapBatches[ChunkJob] | None = None, progress: ProgressCallback | None = None) -> Manifest | None:
    """Make and shard the pairs; the manifest on rank 0, None on other torchrun ranks.

    `map_batches` (from flows) fans the chunks out as tasks; `progress(fraction, line)` is called as chunks
    complete, and tick lines with rate and ETA go to the logger `sdgan.fusion-pairs`.
    """
    with kept_torch_threads():
        return _run(config, workspace, inputs, map_batches, progress)


def _run(config: FusionPairsConfig, workspace: Workspace, inputs: Sequence[Manifest],
         map_batches: MapBatches[ChunkJob] | None, progress: ProgressCallback | None) -> Manifest | None:
    from training.stylegan2.handle import GeneratorHandle
    from training.unsup3d.checkpoint import load_unsup3d

    device, ctx = setup_runtime(config.runtime.device, config.runtime.threads)
    boundaries = find_boundaries(workspace, config, inputs)
    _check_seeds(config, boundaries)
    generator, generator_sha, same_generator = resolve_generator(workspace, config, boundaries)
    unsup3d, unsup3d_manifest = resolve_unsup3d(workspace, config, inputs)
    handle = GeneratorHandle.load(generator, device=device)
    normal_dim = np.load(boundaries.file(f"boundary_{boundaries.boundary_name(config.attributes[0])}")).shape[-1]
    if normal_dim != handle.style_dim:
        raise SourceError(f"the boundaries of run {boundaries.manifest.run_id} are {normal_dim}-d but the generator "
                          f"{generator} has style_dim {handle.style_dim}: they belong to another generator")
    kind = load_unsup3d(unsup3d, device="cpu").kind  # a wrong file fails here, before any work
    mean = handle.mean_w(config.mean_samples, config.mean_seed).float().cpu().numpy()
    mean_bytes = _npy(mean.reshape(1, handle.style_dim).astype(np.float32))
    plan = build_plan(config, boundaries, generator, generator_sha, unsup3d, kind, handle, mean_bytes, same_generator)
    key = resume_key(plan)
    run_id = shared_value((find_interrupted(workspace, key) or new_run_id(STAGE)) if ctx.is_main else None, ctx)
    folder = workspace.root / PAIRS_DIR / run_id
    used = [boundaries.manifest] + ([unsup3d_manifest] if unsup3d_manifest is not None else [])
    used += [m for m in inputs if m.run_id not in {u.run_id for u in used}]
    bookkeeping = (stage_run(workspace, STAGE, config, used, run_id=run_id) if ctx.is_main
                   else contextlib.nullcontext())
    with bookkeeping as run_ctx:
        started = time.perf_counter()
        todo: list[tuple[str, int]] = []
        if ctx.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            config.save(folder)
            atomic_write_text(folder / RESUME_FILE, json.dumps({"key": key}, indent=2) + "\n")
            atomic_write_bytes(folder / MEAN_FILE, mean_bytes)
            todo = prepare_folder(folder, plan)
        barrier(ctx)
        counts = _make(folder, plan, str(device), config.runtime.threads, ctx, map_batches, progress, todo)
        barrier(ctx)
        if run_ctx is not None:
            _finish(run_ctx, workspace, folder, plan, counts, time.perf_counter() - started, progress)
    barrier(ctx)
    return run_ctx.manifest if run_ctx is not None else None


def _make(folder: Path, plan: PairsPlan, device: str, threads: int | None, ctx: DistContext,
          map_batches: MapBatches[ChunkJob] | None, progress: ProgressCallback | None,
          todo: list[tuple[str, int]]) -> dict[str, int]:
    """This rank's chunks, with a bar and tick lines (rate, ETA, landmark sources) on rank 0."""
    remaining = sum(len(plan.rows(*chunk)) for chunk in todo)
    bar = Progress("fusion-pairs", "pair", logger, total=remaining) if ctx.is_main else None
    sources = {DETECTED: 0, CANONICAL: 0}

    def tick(made: int, found: dict[str, int]) -> None:
        for name, count in found.items():
            sources[name] = sources.get(name, 0) + count
        if bar is not None:
            bar.update(made, detected=sources[DETECTED], canonical=sources[CANONICAL])

    def on_chunk(done: int, total: int) -> None:
        if progress is not None and bar is not None:
            progress(min(done, total) / total, bar.line())

    fan_out = map_batches if ctx.is_main and not ctx.enabled else None
    try:
        counts = make_pairs(folder, plan, device=device, threads=threads, rank=ctx.rank, world_size=ctx.world_size,
                            map_batches=fan_out, tick=tick, on_chunk=on_chunk, prepare=False)
        if fan_out is not None and bar is not None:  # the tasks reported nothing while they ran
            bar.update(counts["pairs_now"])
        return counts
    finally:
        if bar is not None:
            bar.close()


def _append_rows(run_ctx: Any, workspace: Workspace, frame: pd.DataFrame) -> None:
    """One append per run; a finish that a kill interrupted after it is not appended twice.

    The digest leaves out `shard`: its path names the run folder, and the shards' bytes are in the manifest's
    files already, so a rerun that made the same pairs keeps the same content hash.
    """
    columns = [c for c in frame.columns if c not in ("run_id", "shard")]
    if run_ctx.run_id not in workspace.tables.run_ids(TABLE):
        run_ctx.append(TABLE, frame, content_columns=columns)
        return
    run_ctx.manifest.tables[TABLE] = TableOutput(table=TABLE, rows=len(frame), digest=table_digest(frame, columns))


def _finish(run_ctx: Any, workspace: Workspace, folder: Path, plan: PairsPlan, counts: dict[str, int],
            seconds: float, progress: ProgressCallback | None) -> None:
    """Rank 0: catalog rows, manifest entries, pairs.json, grid and report from the finished chunks."""
    records = []
    for chunk in plan.chunks():
        record = read_record(folder, plan, *chunk)
        if record is None:
            raise RuntimeError(f"chunk {chunk} of {folder} is missing after the run: make_pairs did not finish it")
        records.append(record)
    rows = [dict(row, shard=workspace.relative(folder / row["shard"])) for record in records
            for row in record["rows"]]
    frame = pd.DataFrame(rows)
    for attribute in ATTRIBUTES:
        if f"area_{attribute}" not in frame:
            frame[f"area_{attribute}"] = None
    _append_rows(run_ctx, workspace, frame)
    for record in records:
        shard = folder / record["shard"]
        run_ctx.add_file(record["shard"], shard)
        run_ctx.add_file(stats_path(shard).relative_to(folder).as_posix(), stats_path(shard))
    shards = {split: [r["shard"] for r in records if r["split"] == split] for split in ("train", "test")}
    sources = {name: int((frame["landmark_source"] == name).sum()) for name in (DETECTED, CANONICAL)}
    index = PairsIndex(
        generator=plan.generator, generator_sha256=plan.generator_sha256, truncation=plan.truncation,
        truncation_mean=plan.mean_w, attributes=list(plan.attributes), image_size=plan.image_size,
        canonical_size=plan.canonical_size, w_dim=int(plan.extra["w_dim"]), num_ws=int(plan.extra["num_ws"]),
        counts={split: plan.count(split) for split in shards if shards[split]},
        shards={split: names for split, names in shards.items() if names},
        extra={"noise_mode": plan.noise_mode, "canonical_channels": list(plan.canonical_channels),
               "canonical_crop": plan.canonical_crop, "unsup3d": plan.unsup3d, "unsup3d_sha256": plan.unsup3d_sha256,
               "boundaries_run": plan.extra["boundaries_run"], "boundary_names": plan.boundary_names,
               "generator_matches_boundaries": plan.extra["generator_matches_boundaries"],
               "distance": plan.distance, "test_distance": plan.test_distance, "seed": plan.seed,
               "test_seed": plan.test_seed, "detector": plan.detector, "landmark_sources": sources,
               "templates": {a: _template_record(spec) for a, spec in plan.templates.items()},
               "template_layer": "premultiplied", "shadow": plan.shadow})
    atomic_write_text(folder / INDEX_FILE, index.to_json())
    grid = save_pairs_grid(folder / shards["train"][0], plan.attributes, folder / "grid.png", GRID_ROWS)
    report = _report(plan, frame, sources)
    atomic_write_text(folder / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    atomic_write_text(folder / "report.md", _report_markdown(report))
    timings = {"seconds": seconds, "pairs_made_this_run": counts["pairs_now"],
               "chunks_done_before": counts["chunks_before"],
               "pairs_per_second": counts["pairs_now"] / seconds if seconds > 0 else None}
    atomic_write_text(folder / "timings.json", json.dumps(timings, indent=2) + "\n")
    for name in (INDEX_FILE, MEAN_FILE, "config.json", "report.json", "report.md"):
        run_ctx.add_file(name, folder / name)
    run_ctx.add_file("grid.png", grid)
    run_ctx.add_file("timings.json", folder / "timings.json", volatile=True)
    run_ctx.manifest.counts.update({"n_train": plan.n_train, "n_test": plan.n_test, "shards": len(records),
                                    "landmarks_detected": sources[DETECTED],
                                    "landmarks_ffhq_canonical": sources[CANONICAL]})
    line = (f"fusion-pairs: {plan.n_train} train + {plan.n_test} test pairs in {len(records)} shard(s); landmarks "
            f"detected {sources[DETECTED]}, ffhq_canonical {sources[CANONICAL]}")
    logger.info(line)
    if progress is not None:
        progress(1.0, line)


def _template_record(spec: dict[str, Any]) -> dict[str, Any]:
    out = {"kind": spec["kind"], "name": spec["name"]}
    if spec["kind"] == "png":
        out.update(path=spec["path"], sha256=spec["sha256"], anchors=spec["anchors"])
    else:
        out["size"] = spec["size"]
    return out


def _report(plan: PairsPlan, frame: pd.DataFrame, sources: dict[str, int]) -> dict[str, Any]:
    areas = {}
    for attribute in plan.attributes:
        values = frame[f"area_{attribute}"].astype(float)
        areas[attribute] = {"mean": round(float(values.mean()), 6), "min": round(float(values.min()), 6),
                            "max": round(float(values.max()), 6)}
    return {"n_train": plan.n_train, "n_test": plan.n_test, "seed": plan.seed, "test_seed": plan.test_seed,
            "generator": plan.generator, "generator_sha256": plan.generator_sha256,
            "generator_matches_boundaries": plan.extra["generator_matches_boundaries"],
            "boundaries_run": plan.extra["boundaries_run"], "boundary_names": plan.boundary_names,
            "unsup3d": plan.unsup3d, "canonical_crop": plan.canonical_crop, "truncation": plan.truncation,
            "distance": plan.distance, "test_distance": plan.test_distance, "image_size": plan.image_size,
            "canonical_size": plan.canonical_size, "detector": plan.detector, "landmark_sources": sources,
            "templates": {a: _template_record(spec) for a, spec in plan.templates.items()}, "region_area": areas}


def _report_markdown(report: dict[str, Any]) -> str:
    """No run id or timing in it: a rerun that made the same pairs keeps the same content hash."""
    sources = report["landmark_sources"]
    lines = ["# fusion-pairs", "",
             (f"{report['n_train']} train pairs (z seeds {report['seed']}..{report['seed'] + report['n_train'] - 1}) "
             f"and {report['n_test']} test pairs (the held-out w of fit-boundaries run {report['boundaries_run']}); "
             f"{report['image_size']} px origins G(trunc(w)) at psi {report['truncation']}, canonical maps "
             f"{report['canonical_size']} px ({report['canonical_crop']} crop)."), "",
             f"Generator `{report['generator']}`" + ("" if report["generator_matches_boundaries"] else
                                                     " (**not** the generator the boundaries were fitted on)")
             + f"; Unsup3d `{report['unsup3d']}`; n_b = (d - w·n)·n with d = {report['distance']} (train), "
             f"{report['test_distance']} (test).", "",
             f"Landmarks: {sources[DETECTED]} detected ({report['detector']}), {sources[CANONICAL]} FFHQ canonical.",
             "", "| attribute | boundary | template | region area mean | min | max |", "|---|---|---|---|---|---|"]
    for attribute, area in report["region_area"].items():
        template = report["templates"][attribute]
        lines.append(f"| {attribute} | {report['boundary_names'][attribute]} | {template['kind']} "
                     f"{template['name']} | {area['mean']:.4f} | {area['min']:.4f} | {area['max']:.4f} |")
    lines += ["", "![origin | template | GT | region per attribute](grid.png)"]
    return "\n".join(lines) + "\n"
