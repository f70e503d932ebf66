"""Images from a StyleGAN2 checkpoint by seed: a grid and/or one PNG per seed (`sdgan generate`).

A thin layer over `training.stylegan2.handle.GeneratorHandle`, which loads the checkpoint (our run folders'
checkpoints and any rosinality-layout file `{"g_ema", ...}`, including NVlabs pickles converted by
`training.stylegan2.convert`) and renders the seeds. The truncation centre is the file's `latent_avg` (NVlabs'
`w_avg`, as in stylegan2-ada) when it has one, else the mean W of 4096 z from a fixed seed, so the same
command gives byte-identical PNGs on every run.

A seed's face depends on its seed only (`seeded_z`), not on the other seeds or their order; the grid is
tiled in the order the seeds are given. Per-seed files are named `seed0000.png` like stylegan2-ada's
generate.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from training.stylegan2.handle import (
    DEFAULT_MEAN_SAMPLES,
    DEFAULT_TRUNC_SEED,
    GeneratorHandle,
    check_seeds,
    check_truncation,
    resolve_checkpoint,
)
from training.stylegan2.samples import save_grid, save_png, to_uint8

__all__ = ["DEFAULT_TRUNC_SEED", "NOISE_MODES", "check_seeds", "check_truncation", "generate", "generate_grid",
           "resolve_checkpoint"]

NOISE_MODES = ("const", "random")


def generate(checkpoint: str | Path | dict[str, Any], seeds: str | Iterable[int], truncation: float = 1.0,
             noise_mode: str = "const", key: str = "g_ema", device: str | torch.device = "cpu",
             truncation_samples: int = DEFAULT_MEAN_SAMPLES, trunc_seed: int = DEFAULT_TRUNC_SEED,
             batch: int = 16) -> tuple[list[int], torch.Tensor]:
    """(seeds, NCHW images in [-1, 1] on the CPU), one image per seed in the order given.

    `checkpoint`: a .pt file, a run folder (its newest checkpoint) or an already loaded checkpoint dict.
    """
    seed_list = check_seeds(seeds)
    psi = check_truncation(truncation)
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    if isinstance(checkpoint, dict):
        handle = GeneratorHandle.from_checkpoint(checkpoint, device=device, key=key)
    else:
        handle = GeneratorHandle.load(checkpoint, device=device, key=key)
    centre = handle.mean_w(truncation_samples, trunc_seed) if psi < 1 else None
    images = handle.synthesize_seeds(seed_list, psi, noise_mode, truncation_latent=centre, batch_size=batch)
    return seed_list, images


def generate_grid(checkpoint: str | Path | dict[str, Any], seeds: str | Iterable[int], truncation: float = 1.0,
                  out: str | Path | None = "grid.png", noise_mode: str = "const", key: str = "g_ema",
                  device: str | torch.device = "cpu", columns: int | None = None, truncation_samples: int = 4096,
                  trunc_seed: int = DEFAULT_TRUNC_SEED, outdir: str | Path | None = None,
                  batch: int = 16) -> Path:
    """Write the grid PNG `out` (one tile per seed, row-major in seed order, `columns` wide, default about
    square) and/or one `seed%04d.png` per seed into `outdir`. Returns the grid path (`outdir` if no grid).

    Raises FileNotFoundError (no checkpoint), CheckpointError (not a StyleGAN2 checkpoint, no `key`
    network, weights that do not fit) and ValueError (bad seeds, truncation outside (0, 1], bad options).
    """
    if out is None and outdir is None:
        raise ValueError("nothing to write: give out (grid PNG) and/or outdir (one PNG per seed)")
    if columns is not None and columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    seed_list, images = generate(checkpoint, seeds, truncation, noise_mode, key, device, truncation_samples,
                                 trunc_seed, batch)
    if outdir is not None:
        folder = Path(outdir)
        folder.mkdir(parents=True, exist_ok=True)
        for seed, pixels in zip(seed_list, to_uint8(images)):
            save_png(Image.fromarray(pixels), folder / f"seed{seed:04d}.png")
    if out is None:
        return Path(outdir)  # type: ignore[arg-type]
    return save_grid(images, out, columns)
