"""StyleGAN2 losses on cases with known answers."""

from __future__ import annotations

import math

import torch
from torch import nn

from training.stylegan2.losses import (
    d_logistic_loss,
    ema_beta,
    g_nonsaturating_loss,
    lazy_regularization_adjust,
    path_length_penalty,
    r1_penalty,
    update_ema,
)


def test_logistic_losses_at_zero_logits_are_log2() -> None:
    zeros = torch.zeros(4, 1)
    assert math.isclose(d_logistic_loss(zeros, zeros).item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(g_nonsaturating_loss(zeros).item(), math.log(2), rel_tol=1e-6)
    assert d_logistic_loss(torch.full((4, 1), 9.0), torch.full((4, 1), -9.0)).item() < 1e-3


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm() -> None:
    weight = torch.randn(3 * 4 * 4)
    images = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = images.flatten(1) @ weight
    torch.testing.assert_close(r1_penalty(logits.unsqueeze(1), images), weight.square().sum())


def test_path_length_of_a_linear_generator_matches_the_closed_form() -> None:
    torch.manual_seed(0)
    matrix = torch.randn(3 * 8 * 8, 6)
    latents = torch.randn(2, 4, 6, requires_grad=True)
    images = (latents.mean(1) @ matrix.t()).view(2, 3, 8, 8)
    penalty, new_mean, lengths = path_length_penalty(images, latents, torch.tensor(0.0), decay=0.5)
    assert lengths.shape == (2,) and torch.all(lengths > 0)
    torch.testing.assert_close(new_mean, 0.5 * lengths.mean().detach())
    torch.testing.assert_close(penalty, (lengths - new_mean).square().mean())


def test_lazy_regularization_rescales_adam() -> None:
    lr, betas = lazy_regularization_adjust(0.002, (0.0, 0.99), 16)
    assert math.isclose(lr, 0.002 * 16 / 17) and math.isclose(betas[1], 0.99 ** (16 / 17))
    assert lazy_regularization_adjust(0.002, (0.0, 0.99), 0) == (0.002, (0.0, 0.99))


def test_ema_half_life_and_ramp_up() -> None:
    assert math.isclose(ema_beta(32, 10**9, ema_kimg=10, rampup=None) ** (10_000 / 32), 0.5, rel_tol=1e-9)
    early = ema_beta(32, 1000, ema_kimg=10, rampup=0.05)  # half-life capped at 50 images
    assert math.isclose(early, 0.5 ** (32 / 50))
    assert ema_beta(32, 1000, ema_kimg=10, rampup=None) > early


def test_update_ema_interpolates_parameters_and_copies_buffers() -> None:
    ema, model = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_mean.fill_(7.0)
    update_ema(ema, model, beta=0.75)
    torch.testing.assert_close(ema.weight, torch.full((2,), 0.75 * 1 + 0.25 * 3))
    torch.testing.assert_close(ema.running_mean, torch.full((2,), 7.0))
