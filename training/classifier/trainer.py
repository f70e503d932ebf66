"""The classifier's training step: balanced real faces plus fresh composites, BCE on one logit per attribute.

Implements `training.common.loop.Trainable`. Each step seeds its own torch / numpy generators from
(seed, rank, step), like the StyleGAN2 trainer: which faces, which composites, flips and jitter are a
function of the step alone, so a resumed run continues bit-for-bit (on the same machine and thread count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from data_catalog.loader import to_float_images
from training.classifier.config import TrainClassifierConfig
from training.classifier.data import (FaceSet, TemplatePool, choose_attributes, jitter_colours, make_composite,
                                      multi_hot)
from training.classifier.model import ATTRIBUTES, build_classifier
from training.classifier.scorer import AttributeScorer
from training.common.checkpoint import CheckpointError, load_state_strict
from training.common.distributed import DistContext, average_gradients, average_tensor, broadcast_module
from training.common.seeding import step_seed

StepStats = dict[str, torch.Tensor | float]


@dataclass
class TrainState:
    """Counters saved under "sdgan" in every checkpoint."""

    step: int = 0
    images_seen: int = 0  # all ranks together
    real_seen: int = 0
    composite_seen: int = 0
    ticks: dict[str, int] = field(default_factory=dict)


class ClassifierTrainer:
    """Model, AdamW, counters; `step(None)` draws and trains on one batch (the loop's batches are step ticks)."""

    def __init__(self, config: TrainClassifierConfig, faces: FaceSet, device: torch.device | str = "cpu",
                 ctx: DistContext | None = None) -> None:
        self.config = config
        self.ctx = ctx or DistContext()
        self.device = torch.device(device)
        self.local_batch = self.ctx.local_batch(config.optim.batch)
        if not len(faces):
            raise ValueError("the training split holds no samples")
        self.faces = faces
        self.weights = faces.sampling_weights(config.data.balance)
        self.arch = config.model.arch()
        torch.manual_seed(config.runtime.seed)
        self.model = build_classifier(**self.arch).to(self.device)
        broadcast_module(self.model, self.ctx)
        optim = config.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=optim.lr, betas=optim.betas,
                                           weight_decay=optim.weight_decay)
        self.state = TrainState()
        self.composites = config.data.composite_fraction > 0 and bool(faces.clean)
        self.pool: TemplatePool | None = None
        if self.composites:
            size = faces.clean[0].shape[0]
            self.pool = TemplatePool(config.runtime.seed, config.data.template_pool, max(64, min(size, 256)))
        self._last_inputs: torch.Tensor | None = None

    # ------------------------------------------------------------------ batches
    def draw_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(float images in [-1, 1] on the device, [B, A] targets, number of composites) for `step`."""
        cfg = self.config.data
        seed = step_seed("classifier", self.config.runtime.seed, self.ctx.rank, step)
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        n_comp = round(cfg.composite_fraction * self.local_batch) if self.composites else 0
        n_real = self.local_batch - n_comp
        index = torch.multinomial(self.weights, n_real, replacement=True, generator=gen)
        images = [self.faces.images[index]]
        targets = [multi_hot(self.faces.labels[index])]
        if n_comp:
            res = self.config.model.resolution
            made, labels = [], torch.zeros(n_comp, len(ATTRIBUTES))
            for i in range(n_comp):
                face = int(rng.integers(len(self.faces.clean)))
                attributes = choose_attributes(rng, cfg.combine_prob)
                made.append(torch.from_numpy(make_composite(self.faces.clean[face], self.faces.clean_landmarks[face],
                                                            attributes, self.pool, rng)))
                labels[i, [ATTRIBUTES.index(a) for a in attributes]] = 1.0
            stack = torch.stack(made).permute(0, 3, 1, 2).float()
            stack = F.interpolate(stack, size=(res, res), mode="area") if stack.shape[-1] != res else stack
            images.append(stack.round().clamp(0, 255).to(torch.uint8))
            targets.append(labels)
        batch = to_float_images(torch.cat(images)).to(self.device)
        if cfg.xflip:
            flip = (torch.rand(batch.shape[0], generator=gen) < 0.5).to(self.device)
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(3), batch)
        batch = jitter_colours(batch, gen, cfg.brightness, cfg.contrast, cfg.saturation)
        return batch, torch.cat(targets).to(self.device), n_comp

    def _lr(self) -> float:
        optim = self.config.optim
        warmup = optim.warmup_kimg * 1000
        return optim.lr * min(1.0, (self.state.images_seen + 1) / warmup) if warmup > 0 else optim.lr

    def step(self, _batch: Any = None) -> StepStats:
        """One optimisation step on this rank's freshly drawn batch."""
        state = self.state
        images, targets, n_comp = self.draw_batch(state.step)
        self._last_inputs = images.detach()
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        logits = self.model(images)
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.model, self.ctx)
        self.optimizer.step()
        accuracy = ((logits.detach() > 0).float() == targets).float().mean()
        state.step += 1
        state.images_seen += self.local_batch * self.ctx.world_size
        state.composite_seen += n_comp * self.ctx.world_size
        state.real_seen += (self.local_batch - n_comp) * self.ctx.world_size
        return {"loss": average_tensor(loss.detach(), self.ctx), "accuracy": average_tensor(accuracy, self.ctx)}

    # ------------------------------------------------------------------ what the loop reports
    def window_stats(self) -> dict[str, float]:
        return {"lr": self._lr(), "composite_share": self.state.composite_seen / max(self.state.images_seen, 1)}

    def sample_grid(self) -> torch.Tensor | None:
        """The last training inputs (augmented, composites at the end): what the classifier actually sees."""
        if self._last_inputs is None:
            return None
        return self._last_inputs[-self.config.schedule.grid_size:].cpu()

    # ------------------------------------------------------------------ checkpoints
    def scorer(self, temperature: float = 1.0) -> AttributeScorer:
        """The current weights as a scorer (shares the model; eval mode is set on use)."""
        scorer = AttributeScorer(self.model, ATTRIBUTES, self.config.model.resolution, temperature,
                                 device=self.device)
        scorer.arch = dict(self.arch)
        return scorer

    def counters(self) -> dict[str, Any]:
        state = self.state
        return {"step": state.step, "images_seen": state.images_seen, "real_seen": state.real_seen,
                "composite_seen": state.composite_seen, "ticks": dict(state.ticks)}

    def checkpoint(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The scorer's format plus the optimiser and counters a resume needs."""
        meta = {**self.counters(), "config": self.config.to_dict(), **(extra or {})}
        return self.scorer().to_checkpoint({"optim": self.optimizer.state_dict(), "sdgan": meta})

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for key in ("model", "arch"):
            if key not in checkpoint:
                raise CheckpointError(f"not a classifier checkpoint: it lacks {key!r}; it has {sorted(checkpoint)}")
        if dict(checkpoint["arch"]) != self.arch:
            raise CheckpointError(f"checkpoint arch {checkpoint['arch']} differs from the config's {self.arch}")
        load_state_strict(self.model, checkpoint["model"], "checkpoint['model']")
        if "optim" in checkpoint:
            try:
                self.optimizer.load_state_dict(checkpoint["optim"])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"checkpoint['optim'] does not fit this model: {exc}") from exc
        ours = checkpoint.get("sdgan")
        if ours:
            self.state = TrainState(step=int(ours["step"]), images_seen=int(ours["images_seen"]),
                                    real_seen=int(ours.get("real_seen", 0)),
                                    composite_seen=int(ours.get("composite_seen", 0)),
                                    ticks=dict(ours.get("ticks", {})))
