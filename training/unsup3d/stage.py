"""The train-unsup3d stage: MEGN shards (resized to 64 px) -> an Unsup3d run folder and a catalog manifest.

`run(config, workspace, inputs)` is the stage function. Under `torchrun` every process calls it: rank 0 does
the catalog bookkeeping and writes the run folder, all ranks train. Resume, dataset resolution and the loop
are generic (`training.common`). After training, rank 0 also exports what a person looks at: the sample grid
(input | reconstruction | canonical depth | normal | shading | albedo), the canonical depth of the first grid
face as a vertex-coloured `.obj` mesh, and a yaw animation (GIF) of its canonical image on that mesh.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_catalog.atomic import atomic_write_bytes
from data_catalog.loader import list_shards
from data_catalog.manifest import Manifest
from data_catalog.workspace import Workspace
from training.common.distributed import barrier, setup_runtime
from training.common.images import to_uint8
from training.common.loop import ProgressCallback, Schedule, TrainingLoop
from training.common.resume import DatasetNotFound, plan_run, resumed_config
from training.unsup3d.config import TrainUnsup3dConfig
from training.unsup3d.renderer import Renderer
from training.unsup3d.trainer import Unsup3dTrainer, load_faces

__all__ = ["MODELS_DIR", "RESUMABLE_CHANGES", "STAGE", "DatasetNotFound", "export_mesh", "export_yaw_gif", "run"]

STAGE = "train-unsup3d"
MODELS_DIR = Path("models") / "unsup3d"
RESUMABLE_CHANGES = ("schedule", "runtime")
TICK_FIELDS = {"loss": "loss", "loss_recon_l1": "recon_l1", "epoch": "epoch"}
YAW_DEGREES = 60.0
YAW_FRAMES = 13


def _schedule(config: TrainUnsup3dConfig) -> Schedule:
    cfg = config.schedule
    return Schedule(total_kimg=cfg.total_kimg, tick_kimg=cfg.tick_kimg, log_steps=cfg.log_steps,
                    checkpoint_kimg=cfg.checkpoint_kimg, keep_checkpoints=cfg.keep_checkpoints,
                    sample_kimg=cfg.sample_kimg)


def export_mesh(renderer: Renderer, depth: torch.Tensor, albedo: torch.Tensor, path: Path) -> Path:
    """Canonical depth [H, W] as a grid mesh `.obj` (y up, facing +z) with albedo [3, H, W] as vertex colours."""
    h, w = depth.shape
    points = renderer.depth_to_3d_grid(depth[None].float())[0].reshape(-1, 3).cpu().numpy()
    points = points * np.array([1.0, -1.0, -1.0]) + np.array([0.0, 0.0, renderer.rot_center_depth])
    colours = ((albedo.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).reshape(-1, 3).cpu().numpy()
    lines = [f"# Unsup3d canonical depth mesh, {h}x{w} vertices, albedo as vertex colours"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f} {r:.4f} {g:.4f} {b:.4f}" for (x, y, z), (r, g, b) in zip(points, colours)]
    idx = np.arange(h * w).reshape(h, w) + 1
    a, b_, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    lines += [f"f {p} {q} {r}" for p, q, r in zip(a, c, b_)]
    lines += [f"f {p} {q} {r}" for p, q, r in zip(b_, c, d)]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def export_yaw_gif(renderer: Renderer, image: torch.Tensor, depth: torch.Tensor, path: Path,
                   degrees: float = YAW_DEGREES, frames: int = YAW_FRAMES, scale: int = 2) -> Path:
    """A looping GIF of `image` [3, H, W] on its canonical depth mesh, turned from -degrees to +degrees and back."""
    yaws = torch.linspace(-math.radians(degrees), math.radians(degrees), frames)
    with torch.no_grad():
        rendered = renderer.render_yaw(image[None].float(), depth[None].float(), yaws)[0]  # [T, 3, H, W]
    pixels = to_uint8(rendered)  # canonical image in [-1, 1], background white
    pictures = [Image.fromarray(p).resize((p.shape[1] * scale, p.shape[0] * scale), Image.NEAREST) for p in pixels]
    pictures = pictures + pictures[-2:0:-1]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=80, loop=0)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def export_views(trainer: Unsup3dTrainer, folder: Path) -> dict[str, Path]:
    """The mesh and the yaw animation of the first grid face, from the current weights."""
    images = trainer.faces[trainer.grid_index[:1]]
    from data_catalog.loader import to_float_images

    model = trainer.model
    model.eval()
    with torch.no_grad():
        out = model(to_float_images(images).to(trainer.device))
    model.train()
    depth, albedo, canon = out.canon_depth[0].cpu(), out.canon_albedo[0].cpu(), out.canon_image[0].cpu()
    renderer = Renderer(trainer.config.model.size, trainer.config.camera.min_depth, trainer.config.camera.max_depth,
                        trainer.config.camera.rot_center_depth, trainer.config.camera.fov)
    folder.mkdir(parents=True, exist_ok=True)
    return {"mesh": export_mesh(renderer, depth, albedo, folder / "canonical_mesh.obj"),
            "animation": export_yaw_gif(renderer, canon, depth, folder / "yaw.gif")}


def run(config: TrainUnsup3dConfig, workspace: Workspace, inputs: list[Manifest] | tuple = (), *,
        progress: ProgressCallback | None = None) -> Manifest | None:
    """Train (or resume) Unsup3d and return the stage manifest (None on ranks other than 0).

    `progress(fraction, line)` is called on rank 0 at every tick and once at the end; the same lines go to
    the logger `sdgan.train-unsup3d`.
    """
    config = resumed_config(workspace, MODELS_DIR, config, RESUMABLE_CHANGES)  # a resume trains on the run's config
    device, ctx = setup_runtime(config.runtime.device, config.runtime.threads)
    plan = plan_run(workspace, STAGE, MODELS_DIR, config, list(inputs), ctx, allowed_changes=RESUMABLE_CHANGES)
    shards = list_shards(plan.dataset_folder, config.data.split)
    folder = plan.folder

    with plan.bookkeeping(workspace, STAGE, config, ctx) as run_ctx:
        faces = load_faces(shards, config.model.size, config.data.num_workers)
        trainer = Unsup3dTrainer(config, faces, device, ctx)
        loop = TrainingLoop(trainer, folder, _schedule(config), lambda: iter(lambda: None, 0), name=STAGE,
                            checkpoint_extra={"dataset_version": plan.dataset_version}, tick_fields=TICK_FIELDS,
                            progress=progress)
        plan.start(loop, config, config.data.split, shards, ctx)
        result = loop.run()
        if run_ctx is not None:
            plan.record_training(run_ctx, loop, result)
            for name, path in export_views(trainer, folder.root / "exports").items():
                run_ctx.add_file(name, path)
            run_ctx.count("faces", len(faces))
    barrier(ctx)
    return run_ctx.manifest if run_ctx is not None else None
