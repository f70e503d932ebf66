"""StyleGAN2 losses: non-saturating logistic, lazy R1, path-length regularisation, and the EMA rule."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(-D(x)) + softplus(D(G(z))): the discriminator's side of the non-saturating game."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||grad_x D(x)||^2 (gamma/2 and the lazy interval are applied by the caller)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def path_length_penalty(fake_images: torch.Tensor, latents: torch.Tensor, mean_path_length: torch.Tensor,
                        decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Penalise the deviation of ||J_w^T y|| from its running mean (y: image-sized noise scaled by 1/sqrt(HW)).

    Returns (penalty, updated running mean, per-sample path lengths). `latents` is the W+ tensor the
    images were generated from (it must require grad).
    """
    noise = torch.randn_like(fake_images) / math.sqrt(fake_images.shape[2] * fake_images.shape[3])
    (grad,) = torch.autograd.grad((fake_images * noise).sum(), latents, create_graph=True)
    lengths = torch.sqrt(grad.square().sum(2).mean(1))
    new_mean = mean_path_length + decay * (lengths.mean().detach() - mean_path_length)
    return (lengths - new_mean).square().mean(), new_mean, lengths


def lazy_regularization_adjust(lr: float, betas: tuple[float, float], reg_every: int) -> tuple[float, tuple[float, float]]:
    """Adam settings for lazily regularised networks: the step count per image changes by k / (k + 1)."""
    ratio = reg_every / (reg_every + 1) if reg_every > 0 else 1.0
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


def ema_beta(batch_size: int, images_seen: int, ema_kimg: float, rampup: float | None) -> float:
    """EMA decay per step from a half-life in images (stylegan2-ada's rule, with optional ramp-up).

    With ramp-up the half-life is at most `rampup * images_seen`, so early, fast-changing weights are not
    averaged into a blur of the random init.
    """
    half_life = ema_kimg * 1000
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers are copied (noise maps, kernels)."""
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param.detach(), 1.0 - beta)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buffer.copy_(buffer)
