"""The Unsup3d training step (implements `training.common.loop.Trainable`) and the faces it trains on.

Faces are decoded once into memory as uint8 at 64 px (12 KiB a face). Each step's batch is a function of
(seed, rank, step) alone: positions step * batch + rank * local + i of an endless stream of per-epoch
permutations, and flips from a generator seeded by the step. A resumed run therefore sees exactly the batches
the uninterrupted one would, with no reader state to carry; the rest of a step is deterministic.

Checkpoints use Unsup3d's official layout (netD, netA, netL, netV, netC, optimizerD ... optimizerC, epoch)
plus our counters under "sdgan" (training.unsup3d.checkpoint: `load_unsup3d` reads them, `save_unsup3d`
writes the same layout), so a checkpoint of this trainer loads wherever an official one does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from data_catalog.loader import make_loader, to_float_images
from training.common.checkpoint import CheckpointError, load_state_strict
from training.common.distributed import DistContext, average_gradients, average_tensor, broadcast_module
from training.common.seeding import step_seed
from training.unsup3d.config import TrainUnsup3dConfig
from training.unsup3d.model import PhotoGeoAutoencoder, build_networks, load_vgg16

__all__ = ["TrainState", "Unsup3dTrainer", "checkpoint_dict", "load_faces"]

log = logging.getLogger("sdgan.train-unsup3d")
SDGAN_KEY = "sdgan"  # as training.unsup3d.checkpoint


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NCHW -> uint8 at `size` x `size` (area when shrinking, bilinear when growing)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    mode = "area" if images.shape[-1] > size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(images.float(), size=(size, size), mode=mode, **kwargs)
    return out.round().clamp(0, 255).to(torch.uint8)


def load_faces(shards: Sequence[Path], size: int, num_workers: int = 0, batch: int = 256) -> torch.Tensor:
    """Every face of the shards as uint8 [N, 3, size, size], in shard order (one decoding pass)."""
    chunks = []
    for item in make_loader(list(shards), batch, num_workers=num_workers, rank=0, world_size=1,
                            image_dtype="uint8"):
        chunks.append(resize_uint8(item["image"], size))
    if not chunks:
        raise ValueError("the training split holds no samples")
    return torch.cat(chunks)


@dataclass
class TrainState:
    """Counters saved under "sdgan" in every checkpoint."""

    step: int = 0
    images_seen: int = 0  # all ranks together
    ticks: dict[str, int] = field(default_factory=dict)


def checkpoint_dict(nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], epoch: int,
                    extra: dict[str, Any]) -> dict[str, Any]:
    """The official layout (what `training.unsup3d.checkpoint.save_unsup3d` writes), as a dict for the loop."""
    out: dict[str, Any] = {name: {k: v.detach().cpu() for k, v in net.state_dict().items()}
                           for name, net in nets.items()}
    for name, optimizer in optimizers.items():
        out[name.replace("net", "optimizer")] = optimizer.state_dict()
    out["epoch"] = int(epoch)
    out[SDGAN_KEY] = {"format": 1, **extra}
    return out


class Unsup3dTrainer:
    """Networks, one Adam per network (as Unsup3d), counters; `step(None)` draws and trains on one batch."""

    def __init__(self, config: TrainUnsup3dConfig, faces: torch.Tensor, device: torch.device | str = "cpu",
                 ctx: DistContext | None = None, perceptual: nn.Module | None = None) -> None:
        self.config = config
        self.ctx = ctx or DistContext()
        self.device = torch.device(device)
        self.local_batch = self.ctx.local_batch(config.optim.batch)
        if not len(faces):
            raise ValueError("the training split holds no samples")
        self.faces = faces
        if perceptual is None and config.perceptual.vgg16:
            perceptual = load_vgg16(config.perceptual.vgg16)
        self.perceptual_on = perceptual is not None
        if self.ctx.is_main:
            log.info("perceptual loss %s", f"on ({config.perceptual.vgg16})" if self.perceptual_on
                     else "off (no perceptual.vgg16 weights configured)")
        torch.manual_seed(config.runtime.seed)
        nets = build_networks(config.model)
        self.model = PhotoGeoAutoencoder(nets, config.camera, config.loss, config.model.size, perceptual).to(self.device)
        self.nets = {name: getattr(self.model, name) for name in self.model.net_names}
        optim = config.optim
        self.optimizers = {name: torch.optim.Adam(net.parameters(), lr=optim.lr, betas=optim.betas,
                                                  weight_decay=optim.weight_decay)
                           for name, net in self.nets.items()}
        for net in self.nets.values():
            broadcast_module(net, self.ctx)
        self.state = TrainState()
        gen = torch.Generator().manual_seed(step_seed("unsup3d:grid", config.runtime.seed, 0, 0))
        count = min(config.schedule.grid_seeds, len(faces))
        self.grid_index = torch.randperm(len(faces), generator=gen)[:count]
        self._perm: tuple[int, torch.Tensor] | None = None

    # ------------------------------------------------------------------ batches
    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(step_seed("unsup3d:epoch", self.config.runtime.seed, 0, epoch))
            self._perm = (epoch, torch.randperm(len(self.faces), generator=gen))
        return self._perm[1]

    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of this rank's faces at `step`: a slice of the stream of per-epoch permutations."""
        n = len(self.faces)
        start = step * self.config.optim.batch + self.ctx.rank * self.local_batch
        positions = torch.arange(start, start + self.local_batch)
        epochs = positions // n
        out = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            where = epochs == epoch
            out[where] = self._permutation(epoch)[positions[where] % n]
        return out

    def draw_batch(self, step: int) -> torch.Tensor:
        """Float images in [-1, 1] on the device for `step` (randomly x-flipped when data.xflip)."""
        images = to_float_images(self.faces[self.batch_indices(step)]).to(self.device)
        if self.config.data.xflip:
            gen = torch.Generator().manual_seed(step_seed("unsup3d:step", self.config.runtime.seed, self.ctx.rank, step))
            flip = (torch.rand(images.shape[0], generator=gen) < 0.5).to(self.device)
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
        return images.contiguous()

    # ------------------------------------------------------------------ one step
    def step(self, _batch: Any = None) -> dict[str, torch.Tensor | float]:
        """One optimisation step of every network on this rank's freshly drawn batch."""
        state = self.state
        images = self.draw_batch(state.step)
        self.model.train()
        out = self.model(images)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        out.losses["total"].backward()
        for name, optimizer in self.optimizers.items():
            average_gradients(self.nets[name], self.ctx)
            optimizer.step()
        state.step += 1
        state.images_seen += self.local_batch * self.ctx.world_size
        return {f"loss_{key}" if key != "total" else "loss": average_tensor(value.detach(), self.ctx)
                for key, value in out.losses.items()}

    # ------------------------------------------------------------------ what the loop reports
    def window_stats(self) -> dict[str, float]:
        return {"epoch": self.state.images_seen / len(self.faces)}

    @torch.no_grad()
    def grid_rows(self) -> torch.Tensor:
        """[n, 6, 3, H, W]: input | reconstruction | canonical depth | normal | shading | albedo of the grid faces."""
        images = to_float_images(self.faces[self.grid_index]).to(self.device)
        self.model.eval()
        rows = self.model.visual_rows(images)
        self.model.train()
        return rows.cpu()

    def sample_grid(self) -> torch.Tensor:
        """The grid as one image [1, 3, n H, 6 W] (one face a row, six maps a row)."""
        rows = self.grid_rows()
        n, cols, c, h, w = rows.shape
        return rows.permute(2, 0, 3, 1, 4).reshape(1, c, n * h, cols * w)

    # ------------------------------------------------------------------ checkpoints
    def counters(self) -> dict[str, Any]:
        return {"step": self.state.step, "images_seen": self.state.images_seen, "ticks": dict(self.state.ticks)}

    def checkpoint(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        meta = {**self.counters(), "config": self.config.to_dict(), "faces": len(self.faces), **(extra or {})}
        return checkpoint_dict(self.nets, self.optimizers, self.state.images_seen // len(self.faces), meta)

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Networks (strict), optimisers and counters from an Unsup3d checkpoint (ours or official)."""
        missing = [name for name in self.nets if name not in checkpoint]
        if missing:
            raise CheckpointError(f"not an Unsup3d checkpoint of this model: it lacks {missing}; "
                                  f"it has {sorted(map(str, checkpoint))[:12]}")
        for name, net in self.nets.items():
            load_state_strict(net, checkpoint[name], f"checkpoint[{name!r}]")
        for name, optimizer in self.optimizers.items():
            key = name.replace("net", "optimizer")
            if key in checkpoint:
                try:
                    optimizer.load_state_dict(checkpoint[key])
                except (ValueError, KeyError) as exc:
                    raise CheckpointError(f"checkpoint[{key!r}] does not fit this model: {exc}") from exc
        ours = checkpoint.get(SDGAN_KEY)
        if ours and "step" in ours:
            self.state = TrainState(step=int(ours["step"]), images_seen=int(ours["images_seen"]),
                                    ticks=dict(ours.get("ticks", {})))
