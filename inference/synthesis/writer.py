"""Synthesis images to PNG files: clamped to [-1, 1] (ours), or min-max normalised per image (the official way).

The official test.py saves with torchvision's `save_image(normalize=True)`: each image is stretched so that its
own minimum is black and maximum white, then `x * 255 + 0.5` is truncated. That changes every image's contrast
by its own extremes, so metrics on such files measure the normalisation too; `minmax=True` reproduces it only to
compare with the released images.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.common.images import to_uint8


def minmax_uint8(images: torch.Tensor) -> np.ndarray:
    """NCHW floats -> NHWC uint8 as save_image(normalize=True, value_range=None) writes each image alone."""
    out = []
    for image in images.detach().float():
        low, high = image.min(), image.max()
        scaled = (image - low) / torch.clamp(high - low, min=1e-5)
        out.append((scaled * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    return np.stack(out)


def as_uint8(images: torch.Tensor, minmax: bool) -> np.ndarray:
    return minmax_uint8(images) if minmax else to_uint8(images)


class ImageWriter:
    """Writes PNGs under one folder and remembers each file's sha256 (the run's `images.sha256`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.digests: dict[str, str] = {}

    def write(self, relative: str, pixels: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        data = buffer.getvalue()
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.digests[relative] = hashlib.sha256(data).hexdigest()
        return relative

    def checksums(self) -> str:
        """sha256sum's format, sorted by path: `sha256sum -c images.sha256` checks the folder."""
        return "".join(f"{digest}  {name}\n" for name, digest in sorted(self.digests.items()))


def grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Tiles (H, W, 3) uint8, one list per row, into one image."""
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


__all__ = ["ImageWriter", "as_uint8", "grid", "minmax_uint8"]
