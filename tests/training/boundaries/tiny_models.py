"""Tiny random checkpoints for the fit-boundaries tests: a 16 px StyleGAN2 and a 32 px attribute classifier."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from training.classifier.model import ATTRIBUTES, build_classifier
from training.classifier.scorer import AttributeScorer
from training.stylegan2.networks import Discriminator, Generator

SIZE, STYLE_DIM = 16, 16


def write_generator(path: Path, official: bool = False) -> Path:
    """rosinality's layout with args; `official`: SD-GAN's snapshot layout (g_ema, d, latent_avg; no args)."""
    torch.manual_seed(1234)
    g_ema = Generator(SIZE, style_dim=STYLE_DIM, n_mlp=1, channel_max=8)
    d = Discriminator(SIZE, channel_max=8)
    with torch.no_grad():  # noise strengths start at 0 in StyleGAN2: make noise modes matter
        for name, param in g_ema.named_parameters():
            if name.endswith("noise.weight"):
                param.fill_(0.3)
    if official:
        latent_avg = g_ema.mean_latent(64, generator=torch.Generator().manual_seed(5)).reshape(STYLE_DIM)
        checkpoint = {"g_ema": g_ema.state_dict(), "d": d.state_dict(), "latent_avg": latent_avg}
    else:
        checkpoint = {"g": g_ema.state_dict(), "g_ema": g_ema.state_dict(), "d": d.state_dict(), "g_optim": {},
                      "d_optim": {}, "args": argparse.Namespace(size=SIZE, latent=STYLE_DIM, n_mlp=1,
                                                                channel_multiplier=2, lr_mlp=0.01)}
    torch.save(checkpoint, path)
    return path


def write_classifier(path: Path) -> Path:
    """A random 32 px classifier saved by the classifier package's own writer."""
    torch.manual_seed(4321)
    arch = {"resolution": 32, "num_attributes": len(ATTRIBUTES), "width": 4, "max_width": 8, "depth": 1,
            "dropout": 0.0}
    scorer = AttributeScorer(build_classifier(**arch), ATTRIBUTES, 32)
    scorer.arch = arch
    scorer.save(path)
    return path
