"""The train-stylegan2 stage: MEGN shards -> a StyleGAN2 run folder and a catalog manifest.

`run(config, workspace, inputs)` is the stage function (what the Prefect flow and `sdgan train-stylegan2`
call). Under `torchrun` every process calls it: rank 0 does the catalog bookkeeping and writes the run
folder, all ranks train. Resume, dataset resolution and the loop itself are generic (`training.common`);
this module wires StyleGAN2's trainer, data stream and FID hook into them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from data_catalog.loader import list_shards, make_loader, to_float_images
from data_catalog.manifest import Manifest
from data_catalog.workspace import Workspace
from training.common.distributed import barrier, setup_runtime
from training.common.loop import PeriodicHook, ProgressCallback, Schedule, TrainingLoop
from training.common.resume import DatasetNotFound, plan_run, resumed_config
from training.common.run_folder import RunFolder
from training.stylegan2.checkpoint import ALLOWED_GLOBALS
from training.stylegan2.config import TrainStyleGAN2Config
from training.stylegan2.data import fit_resolution, real_batches
from training.stylegan2.trainer import StyleGAN2Trainer

__all__ = ["MODELS_DIR", "RESUMABLE_CHANGES", "STAGE", "DatasetNotFound", "make_fid_hook", "run"]

STAGE = "train-stylegan2"
MODELS_DIR = Path("models") / "stylegan2"
# Config sections a resumed run may change; the rest must equal the run's saved config.
RESUMABLE_CHANGES = ("schedule", "fid", "runtime")
# Stats shown on each progress tick, with their labels (stylegan2-ada calls ADA's p "augment").
TICK_FIELDS = {"loss_d": "loss_d", "loss_g": "loss_g", "ada_p": "augment"}


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


def _schedule(config: TrainStyleGAN2Config) -> Schedule:
    cfg = config.schedule
    return Schedule(total_kimg=cfg.total_kimg, tick_kimg=cfg.tick_kimg, log_steps=cfg.log_steps,
                    checkpoint_kimg=cfg.checkpoint_kimg, keep_checkpoints=cfg.keep_checkpoints,
                    sample_kimg=cfg.sample_kimg)


def _batches(trainer: StyleGAN2Trainer, shards: list[Path]) -> Iterator[torch.Tensor]:
    """This rank's real batches, continuing exactly after the ones a resumed run already consumed."""
    config, state = trainer.config, trainer.state
    data = config.data
    start = state.step if data.exact_resume else 0
    seed = config.runtime.seed if data.exact_resume or state.step == 0 else config.runtime.seed + state.step
    return real_batches(shards, trainer.local_batch, start_batch=start, num_workers=data.num_workers,
                        shuffle_buffer=data.shuffle_buffer, seed=seed, rank=trainer.ctx.rank,
                        world_size=trainer.ctx.world_size)


def run(config: TrainStyleGAN2Config, workspace: Workspace, inputs: list[Manifest] | tuple = (), *,
        progress: ProgressCallback | None = None) -> Manifest | None:
    """Train (or resume) and return the stage manifest (None on ranks other than 0).

    `progress(fraction, line)` is called on rank 0 at every tick (`schedule.tick_kimg`) and once at the end
    with 1.0; the same lines go to the logger `sdgan.train-stylegan2`.
    """
    config = resumed_config(workspace, MODELS_DIR, config, RESUMABLE_CHANGES)  # a resume trains on the run's config
    device, ctx = setup_runtime(config.runtime.device, config.runtime.threads)
    plan = plan_run(workspace, STAGE, MODELS_DIR, config, list(inputs), ctx, allowed_changes=RESUMABLE_CHANGES)
    shards = list_shards(plan.dataset_folder, config.data.split)
    folder = plan.folder

    with plan.bookkeeping(workspace, STAGE, config, ctx) as run_ctx:
        trainer = StyleGAN2Trainer(config, device, ctx)
        fid_hook = make_fid_hook(config, folder, shards, plan.dataset_version)
        hooks = [PeriodicHook("fid", config.fid.every_kimg, lambda t: {"fid": fid_hook(t)})] if fid_hook else []
        loop = TrainingLoop(trainer, folder, _schedule(config), lambda: _batches(trainer, shards), name=STAGE,
                            hooks=hooks, checkpoint_extra={"dataset_version": plan.dataset_version},
                            tick_fields=TICK_FIELDS, progress=progress, allowed_globals=ALLOWED_GLOBALS)
        plan.start(loop, config, config.data.split, shards, ctx)
        result = loop.run()
        if run_ctx is not None:
            plan.record_training(run_ctx, loop, result)
    # Every rank leaves together: a rank that tears its process group down while rank 0 still books the run
    # can abort gloo's connection threads ("terminate called without an active exception").
    barrier(ctx)
    return run_ctx.manifest if run_ctx is not None else None
