"""Shared by the StyleGAN2 trainer tests: a learnable toy dataset in a real workspace, and a tiny config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from data_catalog.config import load_config
from data_catalog.shards import ShardSample, encode_image, write_shards
from data_catalog.workspace import Workspace
from training.stylegan2.config import TrainStyleGAN2Config

VERSION = "v-toy"


def blob_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A bright, randomly placed and coloured disc on a dark background: easy to learn, not trivial."""
    yy, xx = np.mgrid[:size, :size] / size
    cy, cx = rng.uniform(0.35, 0.65, 2)
    radius = rng.uniform(0.2, 0.3)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2).astype(np.float32)
    colour = rng.uniform(0.5, 1.0, 3)
    pixels = disc[..., None] * colour * 255 + (1 - disc[..., None]) * 20
    return pixels.clip(0, 255).astype(np.uint8)


def toy_workspace(root: Path, n: int = 64, size: int = 32, shards: int = 4) -> Workspace:
    """A workspace holding dataset version `v-toy`: `shards` train shards of blob images."""
    workspace = Workspace(root)
    folder = workspace.root / "primary" / "megn" / VERSION
    rng = np.random.default_rng(0)
    samples = [ShardSample(key=f"toy_{i:05d}", image=encode_image(blob_image(rng, size), "png"), image_ext="png",
                           metadata={"index": i}, label=i % 4) for i in range(n)]
    write_shards(samples, folder, "train", max_count=-(-n // shards))
    (folder / "version.json").write_text(json.dumps({"version": VERSION, "samples": n}), encoding="utf-8")
    return workspace


def tiny_config(**overrides: Any) -> TrainStyleGAN2Config:
    """16 px, 16 channels, batch 8: about 20 ms a step on one CPU core."""
    base = ["dataset=" + VERSION, "model.size=16", "model.style_dim=16", "model.n_mlp=2", "model.channel_max=16",
            "data.num_workers=0", "data.shuffle_buffer=16", "optim.batch=8", "optim.ema_kimg=0.05",
            "schedule.total_kimg=0.08", "schedule.checkpoint_kimg=0.04", "schedule.sample_kimg=0.04",
            "schedule.log_steps=2", "schedule.grid_seeds=4", "runtime.device=cpu", "runtime.threads=1"]
    base += [f"{key}={value}" for key, value in overrides.items()]
    return load_config(TrainStyleGAN2Config, "demo", overrides=base)
