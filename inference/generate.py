"""Images from a StyleGAN2 checkpoint by seed: a grid and/or one PNG per seed (`sdgan generate`).

Works on our run folders' checkpoints and on any rosinality-layout file (`{"g_ema", ...}`), including
NVlabs pickles converted by `training.stylegan2.convert` (those carry `latent_avg`, NVlabs' `w_avg`, which
is then the truncation centre, as in stylegan2-ada). Otherwise the centre is `g.mean_latent(n)` computed
from a fixed seed, so the same command gives byte-identical PNGs on every run.

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

from training.stylegan2.checkpoint import CheckpointError, generator_from_checkpoint, load_checkpoint
from training.stylegan2.networks import Generator
from training.stylegan2.run_folder import RunFolder
from training.stylegan2.samples import generate_images, parse_seeds, save_grid, save_png, seeded_z, to_uint8
from training.common.device import select_device

NOISE_MODES = ("const", "random")
DEFAULT_TRUNC_SEED = 0x5D6A  # any fixed value: it only has to be the same on every run


def check_seeds(seeds: str | Iterable[int]) -> list[int]:
    """'0-15' / '1,5,9' / [1, 5, 9] -> a non-empty list of non-negative ints (ValueError otherwise)."""
    if isinstance(seeds, str):
        return parse_seeds(seeds)
    out = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seeds must be integers in [0, 2**63), got {seed!r}")
        out.append(int(seed))
    if not out:
        raise ValueError("no seeds given")
    return out


def check_truncation(truncation: float) -> float:
    """psi in (0, 1]: 1 is no truncation, smaller pulls every face towards the average one."""
    try:
        value = float(truncation)
    except (TypeError, ValueError):
        raise ValueError(f"truncation must be a number in (0, 1], got {truncation!r}") from None
    if not 0 < value <= 1:  # also rejects NaN
        raise ValueError(f"truncation must be in (0, 1] (1 = none, 0.5-0.7 typical), got {truncation!r}")
    return value


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (`models/stylegan2/<run-id>/`) meaning its newest checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        latest = RunFolder(path).latest_checkpoint()
        if latest is None:
            raise FileNotFoundError(f"no checkpoints/ckpt-*.pt in {path}")
        return latest
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


@torch.no_grad()
def truncation_centre(generator: Generator, checkpoint: dict[str, Any], key: str = "g_ema",
                      samples: int = 4096, seed: int = DEFAULT_TRUNC_SEED) -> torch.Tensor:
    """(1, style_dim): the checkpoint's `latent_avg` (g_ema only), else the mean W of `samples` seeded z.

    `Generator.mean_latent` with z drawn from a fixed CPU generator, so the centre neither depends on nor
    disturbs the global RNG, and is the same on every device.
    """
    device = generator.input.input.device
    average = checkpoint.get("latent_avg") if key == "g_ema" else None
    if isinstance(average, torch.Tensor):
        if average.numel() != generator.style_dim:
            raise CheckpointError(f"checkpoint['latent_avg'] has {average.numel()} values, the generator's "
                                  f"style_dim is {generator.style_dim}")
        return average.detach().float().reshape(1, generator.style_dim).to(device)
    if samples < 1:
        raise ValueError(f"truncation_samples must be at least 1, got {samples}")
    return generator.mean_latent(samples, generator=torch.Generator().manual_seed(int(seed)))


@torch.no_grad()
def _random_noise_images(generator: Generator, seeds: list[int], z: torch.Tensor, truncation: float,
                         centre: torch.Tensor | None) -> torch.Tensor:
    """noise_mode 'random': fresh noise maps per image, drawn from the image's seed (still repeatable)."""
    images = []
    for seed, row in zip(seeds, z):
        noise = generator.make_noise(generator=torch.Generator().manual_seed(int(seed) + 1))  # +1: not z's stream
        image, _ = generator([row[None]], truncation=truncation, truncation_latent=centre, noise=noise)
        images.append(image.float().cpu())
    return torch.cat(images)


def generate(checkpoint: str | Path | dict[str, Any], seeds: str | Iterable[int], truncation: float = 1.0,
             noise_mode: str = "const", key: str = "g_ema", device: str | torch.device = "cpu",
             truncation_samples: int = 4096, trunc_seed: int = DEFAULT_TRUNC_SEED,
             batch: int = 16) -> tuple[list[int], torch.Tensor]:
    """(seeds, NCHW images in about [-1, 1] on the CPU), one image per seed in the order given.

    `checkpoint`: a .pt file, a run folder (its newest checkpoint) or an already loaded checkpoint dict.
    """
    seed_list = check_seeds(seeds)
    psi = check_truncation(truncation)
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    target = select_device(device)
    if isinstance(checkpoint, dict):
        payload = checkpoint
    else:
        payload = load_checkpoint(resolve_checkpoint(checkpoint), map_location="cpu")
    if key in payload and not isinstance(payload[key], dict):
        raise CheckpointError(f"checkpoint[{key!r}] is a {type(payload[key]).__name__}, not a state dict")
    generator = generator_from_checkpoint(payload, key=key).to(target).eval()
    centre = truncation_centre(generator, payload, key, truncation_samples, trunc_seed) if psi < 1 else None
    z = seeded_z(seed_list, generator.style_dim, target)
    if noise_mode == "random":
        images = _random_noise_images(generator, seed_list, z, psi, centre)
    else:
        images = generate_images(generator, z, truncation=psi, truncation_latent=centre, batch=batch,
                                 noise_mode="const")
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
