"""The fusion training step (implements `training.common.loop.Trainable`): one network for one attribute.

Per step: the network predicts n_o (B, num_ws, w_dim) from (origin, placed template, canonical maps); the frozen
generator renders x = G(trunc(w + n_b + n_o)) with trunc(v) = mean + psi (v - mean) applied to the *sum*, as the
official generator applies truncation after the offsets are added; `training.fusion.losses.FusionLoss` compares
x with the GT composite; Adam updates the network only. G and D are frozen (eval mode, no parameter requires
grad), so the gradient reaches n_o through them and nothing else moves.

Determinism instead of RNG checkpoints: every step reseeds torch and `random` from (attribute, seed, rank, step),
and the data stream resumes by position (`training.fusion.data`), so a resumed run repeats exactly what the
uninterrupted run would have done. Checkpoints are the official layout (`save_fusion_checkpoint`: {"model":
DataParallel-style state dict, "arch", ...}) plus "optimizer" and "sdgan" (counters, attribute, config), so
the official test.py loads them and the same file resumes.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data_catalog.loader import to_float_images
from training.common.checkpoint import CheckpointError, load_state_strict
from training.common.distributed import DistContext, average_gradients, average_tensor, broadcast_module
from training.common.seeding import step_seed
from training.fusion.checkpoint import load_fusion_checkpoint, save_fusion_checkpoint
from training.fusion.config import ArchConfig, TrainFusionConfig
from training.fusion.losses import FusionLoss
from training.fusion.network import FusionArch, SemanticFusionNetwork
from training.fusion_pairs.format import PairsIndex
from training.stylegan2.handle import GeneratorHandle

__all__ = ["Editor", "FusionTrainer", "Inputs", "TrainState", "canonical_size", "prepare_inputs", "resolve_arch"]

log = logging.getLogger("sdgan.train-fusion")
SDGAN_KEY = "sdgan"
OPTIMIZER_KEY = "optimizer"
NOISE_MODES = ("const", "none")
OFFSET_SCALE = "regre.in3.weight"  # the affine scale of the final InstanceNorm1d: n_o's std per W+ row


@dataclass
class TrainState:
    """Counters saved under "sdgan" in every checkpoint."""

    step: int = 0
    images_seen: int = 0  # all ranks together
    ticks: dict[str, int] = field(default_factory=dict)


def resolve_arch(config: ArchConfig, index: PairsIndex, generator: GeneratorHandle) -> FusionArch:
    """The network's FusionArch: config values, the pairs' image size and G's W+ shape where the config says null.

    num_ws and w_dim must be G's (n_o is added to G's W+ latent); a config that says otherwise is an error.
    """
    for name, value, wanted in (("w_dim", config.w_dim, generator.style_dim),
                                ("num_ws", config.num_ws, generator.n_latent)):
        if value is not None and value != wanted:
            raise ValueError(f"arch.{name}={value} does not fit the generator of the pairs run ({generator.size} px, "
                             f"style_dim {generator.style_dim}, n_latent {generator.n_latent}): n_o is added to its "
                             f"W+ latent, so arch.{name} must be {wanted} (or null)")
    if index.w_dim != generator.style_dim or index.num_ws != generator.n_latent:
        raise ValueError(f"pairs.json says w_dim {index.w_dim}, num_ws {index.num_ws}, but its generator has "
                         f"style_dim {generator.style_dim}, n_latent {generator.n_latent}")
    values = config.model_dump()
    values.update(image_size=config.image_size or index.image_size, w_dim=generator.style_dim,
                  num_ws=generator.n_latent, widths=tuple(config.widths))
    return FusionArch(**values)


class Editor(nn.Module):
    """The frozen generator as an edit operator: images of G(trunc(w + n_b + n_o)), differentiable in n_o.

    The truncation centre is the mean w the fusion pairs used; noise is the generator's stored maps ("const",
    what the pairs rendered with) or zero ("none").
    """

    def __init__(self, generator: nn.Module, mean_w: Tensor, truncation: float, noise_mode: str = "const"):
        super().__init__()
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"fusion pairs rendered with noise mode {noise_mode!r}; train-fusion reproduces "
                             f"{' or '.join(NOISE_MODES)} only (random noise cannot be rendered again)")
        self.generator = generator.eval().requires_grad_(False)
        self.register_buffer("mean_w", mean_w.detach().float().reshape(1, 1, -1).clone())
        self.truncation = float(truncation)
        self.noise_mode = noise_mode
        self.render_fn: Any = self.generator

    def train(self, mode: bool = True) -> Editor:
        super().train(False)
        return self

    def latent(self, w: Tensor, nb: Tensor, offset: Tensor | None = None) -> Tensor:
        """W+ (B, num_ws, w_dim): trunc(w + n_b + n_o), truncation after the sum (as the official G)."""
        num_ws = self.generator.n_latent
        total = (w + nb)[:, None].expand(-1, num_ws, -1)
        if offset is not None:
            total = total + offset
        if self.truncation >= 1:
            return total
        return self.mean_w + self.truncation * (total - self.mean_w)

    def forward(self, latent: Tensor) -> Tensor:
        if self.noise_mode == "none":
            g = self.generator
            noise = [torch.zeros_like(getattr(g.noises, f"noise_{i}")) for i in range(g.num_layers)]
            image, _ = self.render_fn([latent], input_is_latent=True, noise=noise)
        else:
            image, _ = self.render_fn([latent], input_is_latent=True, randomize_noise=False)
        return image


@dataclass
class Inputs:
    """One batch on the device, as the network and the loss take it."""

    w: Tensor
    nb: Tensor
    face: Tensor  # origin, network size, [-1, 1]
    template: Tensor  # network size
    canonical: Tensor
    origin: Tensor  # generator size (identity reference)
    gt: Tensor  # generator size
    region: Tensor  # generator size, [0, 1]


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if images.shape[-1] > size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def canonical_size(arch: FusionArch) -> int:
    """The canonical-map size fed to the network: half the image size, as SD-GAN (128 maps for 256 px faces)."""
    return max(8, arch.image_size // 2)


def prepare_inputs(batch: Mapping[str, Any], arch: FusionArch, generator_size: int,
                   device: torch.device | str) -> Inputs:
    """A collated batch of pairs (uint8 images, float16 maps; `training.fusion.data.collate_pairs`) as float
    tensors on `device`: network inputs at the network's sizes, references at the generator's. Training and
    synthesis both feed the network through here, so they see the same inputs."""
    device = torch.device(device)
    size = arch.image_size

    def images(key: str) -> Tensor:
        return to_float_images(batch[key].to(device, non_blocking=True))

    origin, template, gt = images("origin"), images("template"), images("gt")
    region = batch["region"].to(device, non_blocking=True).float() / 255
    canonical = batch["canonical"].to(device, non_blocking=True).float()
    return Inputs(w=batch["w"].to(device).float(), nb=batch["nb"].to(device).float(),
                  face=_resize(origin, size).contiguous(), template=_resize(template, size).contiguous(),
                  canonical=_resize(canonical, canonical_size(arch)).contiguous(),
                  origin=_resize(origin, generator_size), gt=_resize(gt, generator_size),
                  region=_resize(region, generator_size))


def _strip_module(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {key.removeprefix("module."): value for key, value in state.items()}


class FusionTrainer:
    """Network, Adam, frozen editor and loss, counters; `step(batch)` trains on one collated batch of pairs."""

    def __init__(self, config: TrainFusionConfig, attribute: str, arch: FusionArch, editor: Editor,
                 loss: FusionLoss, device: torch.device | str = "cpu", ctx: DistContext | None = None, *,
                 train_pairs: int = 1, grid_pairs: Sequence[Mapping[str, Any]] = ()) -> None:
        self.config = config
        self.attribute = attribute
        self.arch = arch
        self.ctx = ctx or DistContext()
        self.device = torch.device(device)
        self.local_batch = self.ctx.local_batch(config.optim.batch)
        self.train_pairs = max(1, train_pairs)
        torch.manual_seed(step_seed(f"fusion-init:{attribute}", config.runtime.seed, 0, 0))
        self.network = SemanticFusionNetwork(arch).to(self.device)
        if config.optim.start_offset_scale is not None:
            with torch.no_grad():
                dict(self.network.named_parameters())[OFFSET_SCALE].fill_(config.optim.start_offset_scale)
        broadcast_module(self.network, self.ctx)
        self.editor = editor.to(self.device)
        self.loss = loss.to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.optim.lr, betas=config.optim.betas)
        self.state = TrainState()
        cuda = self.device.type == "cuda"
        self.amp = config.runtime.amp and cuda
        self.network_fast: nn.Module = self.network
        if config.runtime.compile and cuda:
            self.network_fast = torch.compile(self.network)
            if self.editor.render_fn is self.editor.generator:  # the editor is shared by the attributes: once
                self.editor.render_fn = torch.compile(self.editor.generator)
        self.grid_pairs = list(grid_pairs)
        self.evaluated = 0
        self._grid_fixed: tuple[Tensor, Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ set-up
    def init_from(self, path: str | Path) -> None:
        """Start from fusion weights (fine-tuning): an official checkpoint_latest.pt or one of ours, same arch."""
        source = load_fusion_checkpoint(path, device="cpu")
        if source.arch != self.arch:
            raise CheckpointError(f"{path} holds a fusion network of another shape ({source.arch}); this run trains "
                                  f"{self.arch}: set arch to the checkpoint's (the full profile is the official one)")
        load_state_strict(self.network, source.state_dict(), f"fusion weights {path}")
        broadcast_module(self.network, self.ctx)

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, batch: Mapping[str, Any]) -> Inputs:
        """A collated batch (uint8 images, float16 maps) as float tensors on the device, at the sizes needed."""
        return prepare_inputs(batch, self.arch, self.editor.generator.size, self.device)

    def offsets(self, inputs: Inputs) -> Tensor:
        """n_o (B, num_ws, w_dim) in float32."""
        with self._autocast():
            return self.network_fast(inputs.face, inputs.template, inputs.canonical).float()

    def render(self, inputs: Inputs, offset: Tensor | None) -> Tensor:
        """G(trunc(w + n_b + n_o)) in float32 (n_o None: the basis edit alone)."""
        with self._autocast():
            return self.editor(self.editor.latent(inputs.w, inputs.nb, offset)).float()

    def losses(self, inputs: Inputs, offset: Tensor) -> dict[str, Tensor]:
        """The weighted total ("loss") and every term ("loss_<name>") for one batch."""
        image = self.render(inputs, offset)
        with self._autocast():
            out = self.loss(image, inputs.gt, inputs.region, offset, self.loss.reference_identity(inputs.origin))
        return {"loss": out.total.float(), **{f"loss_{k}": v.float() for k, v in out.terms.items()}}

    def step(self, batch: Mapping[str, Any]) -> dict[str, Tensor | float]:
        """One Adam step of the network on this rank's batch."""
        state = self.state
        seed = step_seed(f"fusion:{self.attribute}", self.config.runtime.seed, self.ctx.rank, state.step)
        torch.manual_seed(seed)
        random.seed(seed)
        inputs = self.prepare(batch)
        self.network.train()
        losses = self.losses(inputs, self.offsets(inputs))
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        average_gradients(self.network, self.ctx)
        self.optimizer.step()
        state.step += 1
        state.images_seen += self.local_batch * self.ctx.world_size
        return {key: average_tensor(value.detach(), self.ctx) for key, value in losses.items()}

    # ------------------------------------------------------------------ evaluation and grids
    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> Tensor:
        """n_o of a batch with the network in eval mode (float32, on the device)."""
        self.network.eval()
        try:
            return self.offsets(self.prepare(batch))
        finally:
            self.network.train()

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """Mean loss terms over held-out batches (eval mode), plus the basis-only image L1 and n_o's RMS;
        `evaluated` is the number of pairs scored."""
        sums: dict[str, float] = {}
        count = 0
        self.network.eval()
        try:
            for batch in batches:
                inputs = self.prepare(batch)
                offset = self.offsets(inputs)
                n = inputs.w.shape[0]
                terms = self.losses(inputs, offset)
                terms["basis_image_l1"] = (self.render(inputs, None).clamp(-1, 1) - inputs.gt).abs().mean()
                terms["offset_rms"] = offset.pow(2).mean().sqrt()
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * n
                count += n
        finally:
            self.network.train()
        self.evaluated = count
        return {key: value / count for key, value in sorted(sums.items())} if count else {}

    def window_stats(self) -> dict[str, float]:
        return {"epoch": self.state.images_seen / self.train_pairs}

    @torch.no_grad()
    def grid_rows(self) -> Tensor | None:
        """[n, 4, 3, S, S]: origin | basis G(w + n_b) | ours G(w + n_b + n_o) | GT of the fixed held-out pairs."""
        if not self.grid_pairs:
            return None
        from training.fusion.data import collate_pairs

        batch = collate_pairs(self.grid_pairs)
        inputs = self.prepare(batch)
        if self._grid_fixed is None:
            self._grid_fixed = (inputs.origin.cpu(), self.render(inputs, None).clamp(-1, 1).cpu(), inputs.gt.cpu())
        origin, basis, gt = self._grid_fixed
        ours = self.render(inputs, self.predict(batch)).clamp(-1, 1).cpu()
        return torch.stack([origin, basis, ours, gt], 1)

    def sample_grid(self) -> Tensor | None:
        """The grid as one image [1, 3, n S, 4 S] (one pair a row)."""
        rows = self.grid_rows()
        if rows is None:
            return None
        n, cols, c, h, w = rows.shape
        return rows.permute(2, 0, 3, 1, 4).reshape(1, c, n * h, cols * w)

    # ------------------------------------------------------------------ checkpoints
    def counters(self) -> dict[str, Any]:
        return {"step": self.state.step, "images_seen": self.state.images_seen, "ticks": dict(self.state.ticks)}

    def checkpoint(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a resume needs besides the weights: the optimizer and "sdgan" (counters, attribute, config)."""
        return {OPTIMIZER_KEY: self.optimizer.state_dict(),
                SDGAN_KEY: {"format": 1, "attribute": self.attribute, **self.counters(),
                            "config": self.config.to_dict(), **(extra or {})}}

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """The official layout (`save_fusion_checkpoint`, atomic) with `checkpoint(extra)` as extra keys."""
        save_fusion_checkpoint(self.network, path, extra=self.checkpoint(extra))
        return Path(path)

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Weights (strict; the `module.` prefix of the official layout dropped), optimizer and counters."""
        if "model" not in checkpoint or not isinstance(checkpoint["model"], Mapping):
            raise CheckpointError(f"not a fusion checkpoint: no 'model' state dict (keys {sorted(checkpoint)[:8]})")
        ours = checkpoint.get(SDGAN_KEY) or {}
        if ours.get("attribute") not in (None, self.attribute):
            raise CheckpointError(f"this checkpoint trains {ours['attribute']!r}, not {self.attribute!r}")
        load_state_strict(self.network, _strip_module(checkpoint["model"]), "checkpoint['model']")
        if OPTIMIZER_KEY in checkpoint:
            try:
                self.optimizer.load_state_dict(checkpoint[OPTIMIZER_KEY])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"checkpoint[{OPTIMIZER_KEY!r}] does not fit this network: {exc}") from exc
        if "step" in ours:
            self.state = TrainState(step=int(ours["step"]), images_seen=int(ours["images_seen"]),
                                    ticks=dict(ours.get("ticks", {})))

