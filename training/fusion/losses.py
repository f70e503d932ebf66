"""train-fusion's losses: our design, since the paper's terms and weights were never published.

The edit is x = G(trunc(w + n_b + n_o)); the target is the fusion pair's GT, the attribute template composited on
the origin G(trunc(w)). The GT is an image (uint8, so clamped to [-1, 1]) while G's raw output is not, so x is
compared with it after a straight-through clamp: the value is clamp(x), the gradient that of x. A plain
comparison pushes every saturated pixel to exactly +-1 and stalls (with a tiny random G a free W+ offset then
stops at L1 0.26 and cosine 0.41 to the true one; with the straight-through clamp it reaches 0.001 and 0.99),
and a plain clamp gives no gradient to a pixel that overshoots a GT inside the range.
Terms (each weighted by `loss.<name>` in the config, 0 turns it off):

- `l1_inside`, `l1_outside`: mean |x - GT| over the pixels of the attribute region (the pair's placed alpha as
  a soft mask r) and over the rest (1 - r), each normalised by its own area, so a small region (frame glasses
  cover a few percent of the face) weighs as much as the face around it;
- `lpips`: LPIPS(x, GT), only when VGG16 weights are configured (`training.fusion.perceptual`);
- `identity`: 1 - cos(ArcFace(x), ArcFace(origin)), only when ArcFace weights are configured: the wearer must
  stay the same person (the origin, not the GT, is the reference: the GT's template hides part of the face);
- `realism`: softplus(-D(x)), the non-saturating generator loss through the frozen StyleGAN2 discriminator,
  as the official `disc()` helper computes it (on the raw x, as D was trained);
- `offset_norm`: mean of n_o^2, which keeps the offset from wandering where the image does not constrain it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.fusion.config import LossConfig

__all__ = ["FusionLoss", "LossTerms", "clamp_straight_through", "offset_penalty", "realism_loss", "region_l1"]

EPS = 1e-8


def clamp_straight_through(image: Tensor) -> Tensor:
    """clamp(image, -1, 1) in value, the identity in gradient."""
    return image + (image.clamp(-1, 1) - image).detach()


def region_l1(image: Tensor, target: Tensor, region: Tensor) -> tuple[Tensor, Tensor]:
    """(inside, outside): mean |image - target| weighted by `region` (B, 1, H, W) in [0, 1] and by 1 - region,
    each divided by its own weight sum over the batch (0 when a side is empty)."""
    diff = (image - target).abs().mean(1, keepdim=True)
    inside = (diff * region).sum() / region.sum().clamp(min=EPS)
    outside_weight = 1 - region
    outside = (diff * outside_weight).sum() / outside_weight.sum().clamp(min=EPS)
    return inside, outside


def realism_loss(discriminator: nn.Module, image: Tensor) -> Tensor:
    """softplus(-D(x)).mean(): the non-saturating G loss (official SD-GAN `infer_face.disc`)."""
    return F.softplus(-discriminator(image)).mean()


def offset_penalty(offset: Tensor) -> Tensor:
    """Mean of n_o^2 over samples, W+ layers and dimensions."""
    return offset.pow(2).mean()


@dataclass
class LossTerms:
    """The weighted total (what is minimised) and every unweighted term, for logging."""

    total: Tensor
    terms: dict[str, Tensor]


class FusionLoss(nn.Module):
    """Our loss; the optional networks are frozen and in eval mode (None: that term is off)."""

    def __init__(self, weights: LossConfig, discriminator: nn.Module | None = None,
                 identity: nn.Module | None = None, lpips: nn.Module | None = None) -> None:
        super().__init__()
        self.weights = weights
        if weights.realism > 0 and discriminator is None:
            raise ValueError("loss.realism > 0 needs the generator checkpoint's discriminator ('d'); set "
                             "loss.realism=0 or use a checkpoint that has one")
        self.discriminator = discriminator if weights.realism > 0 else None
        self.identity = identity if weights.identity > 0 else None
        self.lpips = lpips if weights.lpips > 0 else None
        for module in (self.discriminator, self.identity, self.lpips):
            if module is not None:
                module.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FusionLoss:
        """The loss networks never train: batch statistics and dropout stay off."""
        super().train(False)
        return self

    @property
    def active(self) -> list[str]:
        """Terms that contribute to the total."""
        on = {"l1_inside": self.weights.l1_inside > 0, "l1_outside": self.weights.l1_outside > 0,
              "lpips": self.lpips is not None, "identity": self.identity is not None,
              "realism": self.discriminator is not None, "offset_norm": self.weights.offset_norm > 0}
        return [name for name, enabled in on.items() if enabled]

    @torch.no_grad()
    def reference_identity(self, origin: Tensor) -> Tensor | None:
        """ArcFace embeddings of the origins (the identity target), or None when the term is off."""
        return self.identity(origin) if self.identity is not None else None

    def forward(self, image: Tensor, gt: Tensor, region: Tensor, offset: Tensor,
                origin_identity: Tensor | None = None) -> LossTerms:
        """image: G's raw output (B, 3, H, W); gt in [-1, 1]; region (B, 1, H, W) in [0, 1]; offset n_o
        (B, num_ws, w_dim)."""
        weights = self.weights
        raw, image = image, clamp_straight_through(image)
        inside, outside = region_l1(image, gt, region)
        terms = {"l1_inside": inside, "l1_outside": outside, "image_l1": (image - gt).abs().mean(),
                 "offset_norm": offset_penalty(offset)}
        total = weights.l1_inside * inside + weights.l1_outside * outside + weights.offset_norm * terms["offset_norm"]
        if self.lpips is not None:
            terms["lpips"] = self.lpips(image, gt).mean()
            total = total + weights.lpips * terms["lpips"]
        if self.identity is not None:
            if origin_identity is None:
                raise ValueError("the identity term needs origin_identity (FusionLoss.reference_identity(origin))")
            terms["identity"] = (1 - (self.identity(image) * origin_identity).sum(1)).mean()
            total = total + weights.identity * terms["identity"]
        if self.discriminator is not None:
            terms["realism"] = realism_loss(self.discriminator, raw)
            total = total + weights.realism * terms["realism"]
        return LossTerms(total, terms)
