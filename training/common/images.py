"""Image tensors to PNG files: what every trainer's sample grids and `sdgan generate` write."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_catalog.atomic import atomic_write_bytes


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
    """A batch in [-1, 1] as one tiled PNG."""
    return save_png(image_grid(images, columns), path)
