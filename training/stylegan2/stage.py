"""The train-stylegan2 stage: MEGN shards -> a StyleGAN2 run folder and a catalog manifest.

`run(config, workspace, inputs)` is the stage function (what the Prefect flow and `sdgan train-stylegan2`
call). Under `torchrun` every process calls it: rank 0 does the catalog bookkeeping and writes the run
folder, all ranks train.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from data_catalog.atomic import atomic_write_text
from data_catalog.config import ConfigError
from data_catalog.dataset import version_folder
from data_catalog.loader import list_shards, make_loader, to_float_images
from data_catalog.manifest import Manifest
from data_catalog.runs import new_run_id, stage_run
from data_catalog.workspace import Workspace
from training.stylegan2.checkpoint import load_checkpoint, save_checkpoint
from training.stylegan2.config import TrainStyleGAN2Config
from training.stylegan2.data import fit_resolution, real_batches
from training.stylegan2.distributed import DistContext, barrier, init_distributed
from training.stylegan2.run_folder import RunFolder
from training.stylegan2.samples import generate_images, save_grid, seeded_z
from training.common.device import select_device
from training.stylegan2.trainer import StepStats, StyleGAN2Trainer

STAGE = "train-stylegan2"
MODELS_DIR = Path("models") / "stylegan2"
# Config sections a resumed run may change; the rest must equal the run's saved config.
RESUMABLE_CHANGES = {"schedule", "fid", "runtime", "resume"}
log = logging.getLogger(__name__)


class DatasetNotFound(FileNotFoundError):
    pass


def resolve_dataset(workspace: Workspace, version: str | None, inputs: list[Manifest]) -> tuple[str, Path, Manifest | None]:
    """(version id, version folder, the shard run that wrote it): explicit version, else the upstream one."""
    shard_runs = [m for m in inputs if m.stage == "shard"] or [m for m in [workspace.current("shard")] if m]
    if version is None:
        if not shard_runs or (folder := version_folder(workspace, shard_runs[0])) is None:
            raise DatasetNotFound(f"no dataset version given and no completed shard run in {workspace.root}; "
                                  f"build one (sdgan run build-megn) or pass --dataset")
        return folder.name, folder, shard_runs[0]
    folder = workspace.dataset_dir(version)
    if not (folder / "version.json").is_file():
        known = ", ".join(workspace.dataset_versions()) or "none"
        raise DatasetNotFound(f"dataset version {version!r} not found in {workspace.root} (versions: {known})")
    producer = next((m for m in reversed(workspace.manifests("shard")) if version_folder(workspace, m) == folder),
                    None)
    return version, folder, producer


def _check_resume_config(saved: dict[str, Any], config: TrainStyleGAN2Config) -> None:
    current = config.to_dict()
    if current.get("dataset") is None:
        current["dataset"] = saved.get("dataset")  # no dataset given: the run's own (see dataset.json)
    changed = sorted(k for k in set(saved) | set(current)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
    if changed:
        raise ConfigError(f"cannot resume: the config differs from the run's in {changed}; only "
                          f"{sorted(RESUMABLE_CHANGES - {'resume'})} may change on resume")


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class TrainingLoop:
    """Drives a trainer to `schedule.total_kimg`: logging, grids, FID, checkpoints (rank 0 writes)."""

    def __init__(self, trainer: StyleGAN2Trainer, folder: RunFolder, shards: list[Path], dataset_version: str,
                 fid_hook: Callable[[StyleGAN2Trainer], float] | None = None):
        self.trainer = trainer
        self.folder = folder
        self.shards = shards
        self.dataset_version = dataset_version
        self.fid_hook = fid_hook
        self.config = trainer.config
        self.main = trainer.ctx.is_main
        self.writer = None
        self.grid_z = seeded_z(range(self.config.schedule.grid_seeds), self.config.model.style_dim, trainer.device)
        self.final_checkpoint: Path | None = None

    def _batches(self) -> Iterator[torch.Tensor]:
        trainer, data = self.trainer, self.config.data
        state = trainer.state
        start = state.step if data.exact_resume else 0
        seed = self.config.runtime.seed if data.exact_resume or state.step == 0 else self.config.runtime.seed + state.step
        return real_batches(self.shards, trainer.local_batch, start_batch=start, num_workers=data.num_workers,
                            shuffle_buffer=data.shuffle_buffer, seed=seed, rank=trainer.ctx.rank,
                            world_size=trainer.ctx.world_size)

    def _due(self, name: str, every_kimg: float) -> bool:
        state = self.trainer.state
        return state.images_seen - state.ticks.get(name, 0) >= every_kimg * 1000

    def _tick(self, name: str) -> None:
        self.trainer.state.ticks[name] = self.trainer.state.images_seen

    def save_grid(self) -> Path | None:
        if not self.main:
            return None
        images = generate_images(self.trainer.g_ema, self.grid_z, noise_mode="const")
        return save_grid(images, self.folder.grid_path(self.trainer.state.images_seen))

    def save_checkpoint(self) -> Path | None:
        """Atomic checkpoint on rank 0; the newest `keep_checkpoints` are kept."""
        path = None
        if self.main:
            payload = self.trainer.checkpoint({"dataset_version": self.dataset_version})
            path = save_checkpoint(self.folder.checkpoint_path(self.trainer.state.images_seen), payload)
            self.folder.prune_checkpoints(self.config.schedule.keep_checkpoints)
        barrier(self.trainer.ctx)
        return path

    def _log(self, window: list[StepStats], started: float, images_at_start: int) -> None:
        state = self.trainer.state
        keys = sorted({k for stats in window for k in stats})
        means = {k: float(sum(s[k] for s in window if k in s) / sum(1 for s in window if k in s)) for k in keys}
        elapsed = time.perf_counter() - started
        images = state.images_seen - images_at_start
        record = {"step": state.step, "images_seen": state.images_seen, "kimg": state.kimg,
                  "sec_per_kimg": elapsed / max(images / 1000, 1e-9), "memory_mb": _memory_mb(self.trainer.device),
                  "mean_path_length": state.mean_path_length, **means}
        if self.trainer.augment is not None:
            record["ada_rt"] = self.trainer.augment.rt
        self.folder.append_stats(record)
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "images_seen"):
                    self.writer.add_scalar(f"train/{key}", value, state.step)
            self.writer.flush()
        log.info("kimg %.2f step %d loss_d %.3f loss_g %.3f", state.kimg, state.step, means.get("loss_d", float("nan")),
                 means.get("loss_g", float("nan")))

    def run(self) -> dict[str, Any]:
        trainer, schedule = self.trainer, self.config.schedule
        state = trainer.state
        total_images = int(schedule.total_kimg * 1000)
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a killed run logged after the checkpoint this run resumed from
            self.writer = SummaryWriter(str(self.folder.events), purge_step=state.step or None)
            if state.step == 0:
                self._tick("grid")
                self.save_grid()
        batches = self._batches()
        window: list[StepStats] = []
        started, images_at_start = time.perf_counter(), state.images_seen
        fid = None
        try:
            while state.images_seen < total_images:
                window.append(trainer.step(next(batches)))
                if self.main and (state.step % schedule.log_steps == 0 or state.images_seen >= total_images):
                    self._log(window, started, images_at_start)
                    window, started, images_at_start = [], time.perf_counter(), state.images_seen
                if self._due("grid", schedule.sample_kimg):
                    self._tick("grid")
                    self.save_grid()
                if self.fid_hook is not None and self._due("fid", self.config.fid.every_kimg):
                    self._tick("fid")
                    fid = self.fid_hook(trainer)
                    if self.main:
                        self.folder.append_stats({"step": state.step, "images_seen": state.images_seen,
                                                  "kimg": state.kimg, "fid": fid})
                if self._due("checkpoint", schedule.checkpoint_kimg) and state.images_seen < total_images:
                    self._tick("checkpoint")
                    self.save_checkpoint()
            self._tick("checkpoint")
            self.final_checkpoint = self.save_checkpoint()
            if self.main and state.ticks.get("grid") != state.images_seen:
                self._tick("grid")
                self.save_grid()
        finally:
            if self.writer is not None:
                self.writer.close()
        return {"steps": state.step, "images_seen": state.images_seen, "fid": fid}


def _resume_folder(workspace: Workspace, resume: str) -> tuple[RunFolder, Path | None]:
    """A run id, a run folder or a checkpoint file -> (folder to continue in, checkpoint to load)."""
    path = Path(resume)
    if path.suffix == ".pt":
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint not found: {path}")
        inside = path.parent.name == "checkpoints" and (path.parent.parent / "config.json").is_file()
        return (RunFolder(path.parent.parent) if inside else None), path  # type: ignore[return-value]
    folder = RunFolder(path if path.is_dir() else workspace.root / MODELS_DIR / resume)
    if not folder.root.is_dir():
        raise FileNotFoundError(f"no run {resume!r}: {folder.root} does not exist")
    return folder, folder.latest_checkpoint()


def _shared_run_id(ctx: DistContext) -> str:
    run_id = [new_run_id(STAGE)]
    if ctx.enabled:
        dist.broadcast_object_list(run_id, src=0)
    return run_id[0]


def make_fid_hook(config: TrainStyleGAN2Config, folder: RunFolder, shards: list[Path],
                  dataset_version: str) -> Callable[[StyleGAN2Trainer], float] | None:
    """FID of G_ema every `fid.every_kimg` when an Inception path is configured (rank 0 computes)."""
    if config.fid.inception is None:
        return None
    from training.stylegan2 import fid

    cfg = config.fid
    detector = fid.load_detector(cfg.inception)  # now: a wrong path fails before any training, not hours in
    cache = folder.root.parent / ".fid-cache" / f"{dataset_version}-{config.data.split}-{config.model.size}.npz"

    def real_images(device: torch.device) -> Iterator[torch.Tensor]:
        """One pass over the split (no x-flips), at most fid.n_images images."""
        seen = 0
        for batch in make_loader(shards, cfg.batch, rank=0, world_size=1, image_dtype="uint8"):
            images = fit_resolution(to_float_images(batch["image"].to(device)), config.model.size)
            images = images[: cfg.n_images - seen]
            yield images
            seen += images.shape[0]
            if seen >= cfg.n_images:
                return

    def hook(trainer: StyleGAN2Trainer) -> float:
        value = torch.tensor(0.0)
        if trainer.ctx.is_main:
            detector.to(trainer.device)
            real = fid.real_stats_cached(cache, cfg.inception, f"{dataset_version}:{config.data.split}",
                                         lambda: real_images(trainer.device), detector=detector,
                                         convention=cfg.convention, device=trainer.device)

            def fakes(count: int) -> torch.Tensor:
                z = torch.randn(count, config.model.style_dim, device=trainer.device)
                with torch.no_grad():
                    return trainer.g_ema([z])[0]

            value = torch.tensor(fid.fid_for_generator(fakes, cfg.n_images, cfg.batch, detector, real,
                                                       convention=cfg.convention, device=trainer.device))
        if trainer.ctx.enabled:
            dist.broadcast(value, src=0)
        return float(value)

    return hook


def run(config: TrainStyleGAN2Config, workspace: Workspace, inputs: list[Manifest] | tuple = ()) -> Manifest | None:
    """Train (or resume) and return the stage manifest (None on ranks other than 0)."""
    device = select_device(config.runtime.device)
    ctx = init_distributed(device.type)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    resume_from: Path | None = None
    folder: RunFolder | None = None
    dataset = config.dataset
    if config.resume:
        folder, resume_from = _resume_folder(workspace, config.resume)
        if folder is not None and (folder.root / "config.json").is_file():
            saved = json.loads((folder.root / "config.json").read_text(encoding="utf-8"))["config"]
            _check_resume_config(saved, config)
        if folder is not None and (folder.root / "dataset.json").is_file():
            # A resumed run keeps its dataset even if a newer shard run became current meanwhile.
            dataset = json.loads((folder.root / "dataset.json").read_text(encoding="utf-8"))["dataset_version"]
    version, version_folder, producer = resolve_dataset(workspace, dataset, list(inputs))
    shards = list_shards(version_folder, config.data.split)
    run_id = _shared_run_id(ctx)
    if folder is None:
        folder = RunFolder(workspace.root / MODELS_DIR / run_id)
    if ctx.is_main:
        folder.create()
    barrier(ctx)

    bookkeeping = (stage_run(workspace, STAGE, config, [producer] if producer else [],
                             packages=("data_catalog", "alignment", "training"), run_id=run_id)
                   if ctx.is_main else contextlib.nullcontext())
    with bookkeeping as run_ctx:
        trainer = StyleGAN2Trainer(config, device, ctx)
        if resume_from is not None:
            trainer.load_checkpoint(load_checkpoint(resume_from, map_location=device))
            if ctx.is_main:
                dropped = folder.truncate_stats(trainer.state.images_seen)
                log.info("resumed from %s at kimg %.3f (dropped %d stats lines logged after it)", resume_from,
                         trainer.state.kimg, dropped)
        if ctx.is_main and not (folder.root / "config.json").is_file():
            config.save(folder.root)
            atomic_write_text(folder.root / "dataset.json", json.dumps(
                {"dataset_version": version, "split": config.data.split,
                 "shards": [p.name for p in shards], "shard_run": producer.run_id if producer else None},
                indent=2) + "\n")
        loop = TrainingLoop(trainer, folder, shards, version, make_fid_hook(config, folder, shards, version))
        result = loop.run()
        if run_ctx is not None:
            for name in ("config.json", "dataset.json", "stats.jsonl"):
                run_ctx.add_file(name, folder.root / name)
            run_ctx.add_file("checkpoint", loop.final_checkpoint)
            grids = sorted(folder.grids.glob("fakes-*.png"))
            if grids:
                run_ctx.add_file("grid", grids[-1])
            run_ctx.manifest.counts.update({"steps": result["steps"], "images_seen": result["images_seen"],
                                            "kimg": int(result["images_seen"] // 1000)})
    # Every rank leaves together: a rank that tears its process group down while rank 0 still books the run
    # can abort gloo's connection threads ("terminate called without an active exception").
    barrier(ctx)
    return run_ctx.manifest if run_ctx is not None else None
