"""The StyleGAN2 training loop: one `StyleGAN2Trainer.step` per batch, checkpoints that resume exactly.

Per step (as stylegan2-pytorch / stylegan2-ada): D on real vs fake (ADA-augmented both), lazy R1 every
`d_reg_every` steps, G non-saturating with style mixing, lazy path-length every `g_reg_every` steps, then
the EMA of G (half-life in images, with ramp-up) and the ADA strength update.

Determinism: every step reseeds torch and `random` from (seed, rank, step). A resumed run therefore draws
the same latents, noise, flips and augmentations as the uninterrupted one without carrying RNG states,
and each rank draws different ones.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from data_catalog.loader import to_float_images
from training.common.checkpoint import CheckpointError, load_state_strict
from training.common.distributed import DistContext, average_gradients, average_tensor, broadcast_module
from training.common.seeding import step_seed
from training.stylegan2.augment import AdaptiveAugment
from training.stylegan2.config import TrainStyleGAN2Config
from training.stylegan2.data import fit_resolution
from training.stylegan2.losses import (
    d_logistic_loss,
    ema_beta,
    g_nonsaturating_loss,
    lazy_regularization_adjust,
    path_length_penalty,
    r1_penalty,
    update_ema,
)
from training.stylegan2.networks import Discriminator, Generator
from training.stylegan2.samples import generate_images, seeded_z

# A step's statistics: detached tensors on the device (reading one, `float(...)`, waits for the GPU, so
# the training loop does it when it logs, not in every step), and ADA's p as a float.
StepStats = dict[str, torch.Tensor | float]


@dataclass
class TrainState:
    """Counters saved in every checkpoint (under "sdgan") and restored on resume."""

    step: int = 0  # optimisation steps = per-rank batches consumed
    images_seen: int = 0  # real images shown to D, all ranks together
    mean_path_length: float = 0.0
    ticks: dict[str, int] = field(default_factory=dict)  # images_seen at the last checkpoint / grid / fid

    @property
    def kimg(self) -> float:
        return self.images_seen / 1000


class StyleGAN2Trainer:
    """G, D, G_ema, their optimisers, ADA and the counters; `step(real)` does one iteration.

    Implements `training.common.loop.Trainable`, so the generic TrainingLoop drives it.
    """

    def __init__(self, config: TrainStyleGAN2Config, device: torch.device | str = "cpu",
                 ctx: DistContext | None = None):
        self.config = config
        self.ctx = ctx or DistContext()
        self.device = torch.device(device)
        optim, loss = config.optim, config.loss
        self.local_batch = self.ctx.local_batch(optim.batch)
        torch.manual_seed(config.runtime.seed)  # the same initial weights on every rank (then broadcast anyway)
        self.g = Generator(**config.model.generator_kwargs()).to(self.device)
        self.d = Discriminator(**config.model.discriminator_kwargs()).to(self.device)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        for module in (self.g, self.d, self.g_ema):
            broadcast_module(module, self.ctx)
        g_lr, g_betas = lazy_regularization_adjust(optim.lr, optim.betas, loss.g_reg_every)
        d_lr, d_betas = lazy_regularization_adjust(optim.lr, optim.betas, loss.d_reg_every)
        self.g_optim = torch.optim.Adam(self.g.parameters(), lr=g_lr, betas=g_betas)
        self.d_optim = torch.optim.Adam(self.d.parameters(), lr=d_lr, betas=d_betas)
        aug = config.augment
        self.augment = (AdaptiveAugment(p=aug.initial_p, target=aug.target, adjust_kimg=aug.adjust_kimg).to(self.device)
                        if aug.ada else None)
        self.state = TrainState()
        self.amp = config.runtime.amp and self.device.type == "cuda"
        self.g_fast: nn.Module = torch.compile(self.g) if config.runtime.compile else self.g
        self.d_fast: nn.Module = torch.compile(self.d) if config.runtime.compile else self.d
        self._grid_z: torch.Tensor | None = None

    # ------------------------------------------------------------------ one iteration
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _latents(self, batch: int) -> list[torch.Tensor]:
        """One z, or two for style mixing with probability `loss.mixing`."""
        count = 2 if self.config.loss.mixing > 0 and random.random() < self.config.loss.mixing else 1
        return [torch.randn(batch, self.config.model.style_dim, device=self.device) for _ in range(count)]

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        return self.augment(images) if self.augment is not None else images

    def prepare_real(self, real: torch.Tensor) -> torch.Tensor:
        """To the device and the model resolution, x-flipped per sample when data.xflip is on."""
        real = real.to(self.device, non_blocking=True)
        real = to_float_images(real) if real.dtype == torch.uint8 else real.float()
        real = fit_resolution(real, self.config.model.size)
        if self.config.data.xflip:
            flip = torch.rand(real.shape[0], device=self.device) < 0.5
            real = torch.where(flip.view(-1, 1, 1, 1), real.flip(3), real)
        return real

    # Each phase computes one loss, backpropagates it and averages the gradients over ranks; `step` draws
    # the latents and applies the optimisers. Tests call the phases with explicit latents.
    def d_backward(self, real: torch.Tensor, latents: list[torch.Tensor]) -> StepStats:
        """Logistic loss of D on (augmented) real vs fake images."""
        self.g.requires_grad_(False)
        self.d.requires_grad_(True)
        with self._autocast():
            with torch.no_grad():
                fake, _ = self.g_fast(latents)
            fake_logits = self.d_fast(self._augment(fake.float()))
            real_logits = self.d_fast(self._augment(real))
            loss = d_logistic_loss(real_logits.float(), fake_logits.float())
        self.d.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.d, self.ctx)
        if self.augment is not None:
            self.augment.accumulate(real_logits.detach().float())
        return {"loss_d": loss.detach(), "real_score": real_logits.detach().float().mean(),
                "fake_score": fake_logits.detach().float().mean()}

    def r1_backward(self, real: torch.Tensor) -> StepStats:
        """Lazy R1: gamma / 2 * ||grad D(x)||^2, scaled by the interval it is applied at."""
        cfg = self.config.loss
        self.d.requires_grad_(True)
        real = real.detach().requires_grad_(True)
        logits = self.d(self._augment(real))
        penalty = r1_penalty(logits, real)
        self.d.zero_grad(set_to_none=True)
        (cfg.r1_gamma / 2 * penalty * cfg.d_reg_every + 0 * logits[0, 0]).backward()
        average_gradients(self.d, self.ctx)
        return {"r1": penalty.detach()}

    def g_backward(self, latents: list[torch.Tensor]) -> StepStats:
        """Non-saturating loss of G through the frozen D."""
        self.g.requires_grad_(True)
        self.d.requires_grad_(False)
        with self._autocast():
            fake, _ = self.g_fast(latents)
            loss = g_nonsaturating_loss(self.d_fast(self._augment(fake.float())).float())
        self.g.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.g, self.ctx)
        self.d.requires_grad_(True)
        return {"loss_g": loss.detach()}

    def path_backward(self, latents: list[torch.Tensor]) -> StepStats:
        """Lazy path-length regularisation; updates the running mean path length (averaged over ranks)."""
        cfg = self.config.loss
        self.g.requires_grad_(True)
        fake, w_plus = self.g(latents, return_latents=True)
        mean = torch.tensor(self.state.mean_path_length, device=self.device)
        penalty, new_mean, lengths = path_length_penalty(fake, w_plus, mean, cfg.path_decay)
        self.g.zero_grad(set_to_none=True)
        (cfg.path_regularize * cfg.g_reg_every * penalty + 0 * fake[0, 0, 0, 0]).backward()
        average_gradients(self.g, self.ctx)
        self.state.mean_path_length = float(average_tensor(new_mean, self.ctx).item())
        return {"path": penalty.detach(), "path_length": lengths.detach().mean()}

    def step(self, real: torch.Tensor) -> StepStats:
        """One iteration on this rank's batch of real images in [-1, 1]; returns its losses."""
        state, cfg = self.state, self.config.loss
        seed = step_seed("stylegan2", self.config.runtime.seed, self.ctx.rank, state.step)
        torch.manual_seed(seed)
        random.seed(seed)
        real = self.prepare_real(real)
        batch = real.shape[0]
        stats = self.d_backward(real, self._latents(batch))
        self.d_optim.step()
        if cfg.d_reg_every and cfg.r1_gamma > 0 and state.step % cfg.d_reg_every == 0:
            stats.update(self.r1_backward(real))
            self.d_optim.step()
        stats.update(self.g_backward(self._latents(batch)))
        self.g_optim.step()
        if cfg.g_reg_every and cfg.path_regularize > 0 and state.step % cfg.g_reg_every == 0:
            stats.update(self.path_backward(self._latents(max(1, batch // cfg.path_batch_shrink))))
            self.g_optim.step()

        state.images_seen += batch * self.ctx.world_size
        state.step += 1
        beta = ema_beta(self.config.optim.batch, state.images_seen, self.config.optim.ema_kimg,
                        self.config.optim.ema_rampup)
        update_ema(self.g_ema, self.g, beta)
        if self.augment is not None:
            if state.step % self.config.augment.interval == 0:
                self.augment.adjust(self.local_batch * self.config.augment.interval, self.ctx.world_size)
            stats["ada_p"] = float(self.augment.p)
        return stats

    # ------------------------------------------------------------------ what the training loop reports
    def window_stats(self) -> dict[str, float]:
        """Current values logged with each stats window: the path-length mean and ADA's r_t."""
        stats = {"mean_path_length": self.state.mean_path_length}
        if self.augment is not None:
            stats["ada_rt"] = self.augment.rt
        return stats

    def sample_grid(self) -> torch.Tensor:
        """G_ema's images for the fixed seeds 0..grid_seeds-1 (constant noise: grids compare across a run)."""
        if self._grid_z is None:
            self._grid_z = seeded_z(range(self.config.schedule.grid_seeds), self.config.model.style_dim, self.device)
        return generate_images(self.g_ema, self._grid_z, noise_mode="const")

    # ------------------------------------------------------------------ checkpoints
    def rosinality_args(self) -> argparse.Namespace:
        """The `args` entry: rosinality train.py's option names, so its tools read our checkpoints."""
        cfg = self.config
        return argparse.Namespace(
            size=cfg.model.size, latent=cfg.model.style_dim, n_mlp=cfg.model.n_mlp,
            channel_multiplier=cfg.model.channel_multiplier, channel_max=cfg.model.channel_max,
            channel_base=cfg.model.channel_base, lr_mlp=cfg.model.lr_mlp, batch=cfg.optim.batch, lr=cfg.optim.lr,
            r1=cfg.loss.r1_gamma, path_regularize=cfg.loss.path_regularize,
            path_batch_shrink=cfg.loss.path_batch_shrink, d_reg_every=cfg.loss.d_reg_every,
            g_reg_every=cfg.loss.g_reg_every, mixing=cfg.loss.mixing, augment=cfg.augment.ada,
            ada_target=cfg.augment.target, ada_length=int(cfg.augment.adjust_kimg * 1000),
            ada_every=cfg.augment.interval,
        )

    def checkpoint(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint dict: rosinality's keys plus "sdgan" (counters, ADA state, config) for resume."""
        state = self.state
        return {
            "g": self.g.state_dict(), "d": self.d.state_dict(), "g_ema": self.g_ema.state_dict(),
            "g_optim": self.g_optim.state_dict(), "d_optim": self.d_optim.state_dict(),
            "args": self.rosinality_args(),
            "ada_aug_p": float(self.augment.p) if self.augment is not None else 0.0,
            "sdgan": {
                "step": state.step, "images_seen": state.images_seen, "mean_path_length": state.mean_path_length,
                "ticks": dict(state.ticks), "config": self.config.to_dict(),
                "augment": self.augment.state_dict() if self.augment is not None else None,
                **(extra or {}),
            },
        }

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore weights, optimisers, EMA and (when present) counters and ADA state.

        A plain rosinality checkpoint (no "sdgan" entry) starts a fine-tuning run from its weights with the
        counters at zero.
        """
        for key in ("g", "d", "g_ema"):
            if key not in checkpoint:
                raise CheckpointError(f"checkpoint lacks {key!r}; it has {sorted(checkpoint)}")
        load_state_strict(self.g, checkpoint["g"], "checkpoint['g']")
        load_state_strict(self.d, checkpoint["d"], "checkpoint['d']")
        load_state_strict(self.g_ema, checkpoint["g_ema"], "checkpoint['g_ema']")
        for key, optimizer in (("g_optim", self.g_optim), ("d_optim", self.d_optim)):
            if key in checkpoint:
                try:
                    optimizer.load_state_dict(checkpoint[key])
                except (ValueError, KeyError) as exc:
                    raise CheckpointError(f"checkpoint[{key!r}] does not fit this model: {exc}") from exc
        ours = checkpoint.get("sdgan")
        if ours:
            self.state = TrainState(step=int(ours["step"]), images_seen=int(ours["images_seen"]),
                                    mean_path_length=float(ours["mean_path_length"]), ticks=dict(ours.get("ticks", {})))
            if self.augment is not None and ours.get("augment") is not None:
                self.augment.load_state_dict(ours["augment"])
        elif self.augment is not None and "ada_aug_p" in checkpoint:
            self.augment.set_p(float(checkpoint["ada_aug_p"]))
