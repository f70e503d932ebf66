"""Seeded latents and image grids: the same seeds give the same faces in every run and in `sdgan generate`."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_catalog.atomic import atomic_write_bytes


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (the stylegan2-ada `--seeds` syntax)."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        start, sep, end = part.partition("-")
        try:
            low, high = int(start), int(end) if sep else int(start)
        except ValueError as exc:
            raise ValueError(f"seeds must look like '0-15' or '1,5,9', got {text!r}") from exc
        if high < low or low < 0:
            raise ValueError(f"bad seed range {part!r} in {text!r}")
        seeds.extend(range(low, high + 1))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def seeded_z(seeds: Sequence[int], style_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """One z per seed, each from its own generator: a seed's face does not depend on the others."""
    rows = [torch.randn(style_dim, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
    return torch.stack(rows).to(device)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """NCHW floats in [-1, 1] -> NHWC uint8."""
    images = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return images.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: torch.Tensor, columns: int | None = None) -> Image.Image:
    """Tile a batch into one RGB image, row-major, `columns` wide (default: about square)."""
    pixels = to_uint8(images)
    count, height, width, _ = pixels.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = np.zeros((rows * height, columns * width, 3), dtype=np.uint8)
    for index, tile in enumerate(pixels):
        row, col = divmod(index, columns)
        canvas[row * height:(row + 1) * height, col * width:(col + 1) * width] = tile
    return Image.fromarray(canvas)


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (a killed run never leaves half an image); parent folders are created."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def save_grid(images: torch.Tensor, path: str | Path, columns: int | None = None) -> Path:
    return save_png(image_grid(images, columns), path)


@torch.no_grad()
def generate_images(generator: torch.nn.Module, z: torch.Tensor, truncation: float = 1.0,
                    truncation_latent: torch.Tensor | None = None, batch: int = 16,
                    noise_mode: str = "const") -> torch.Tensor:
    """Images for the given z in batches; noise 'const' uses the generator's stored noise maps (repeatable)."""
    outputs = []
    for chunk in z.split(batch):
        image, _ = generator([chunk], truncation=truncation, truncation_latent=truncation_latent,
                             randomize_noise=noise_mode == "random")
        outputs.append(image.float().cpu())
    return torch.cat(outputs)
