"""The images of one (pair, attribute) and the canonical maps of a batch of origins.

`place` gives the three images train-fusion reads per attribute, all from `alignment.attributes.composite` with
the same landmarks and template, so they agree pixel for pixel:

- `gt`: the template composited on the origin (with its soft contact shadow unless `shadow=False`);
- `template`: the placed template layer over black, **premultiplied** (colour x alpha: what `composite`
  blends in; a half-transparent border is darker, not fringed);
- `region`: the placed alpha as uint8 (round(255 alpha)), where the attribute is.

`canonical_input` runs Unsup3d on the origins (uint8) and stacks three of its maps into the fusion network's
9 channels (`training.unsup3d.maps.fusion_input`, each map in [-1, 1]), stored as float16. Two crops:
"aligned" feeds the whole FFHQ-aligned origin, area-resized to 64 px as train-unsup3d trains on MEGN's aligned
faces; "demo" crops as SD-GAN's Unsup3d demo does around a face box (here the box of the 68 landmarks rather
than MTCNN's), which suits the official CelebA checkpoint030.pth, trained on tighter crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alignment.attributes import Template, composite
from data_catalog.loader import to_float_images
from training.unsup3d.maps import IMAGE_SIZE, canonical_maps, demo_crop, fusion_input
from training.unsup3d.trainer import resize_uint8

CROPS = ("aligned", "demo")


@dataclass(frozen=True)
class Placed:
    gt: np.ndarray  # uint8 (S, S, 3)
    template: np.ndarray  # uint8 (S, S, 3), premultiplied over black
    region: np.ndarray  # uint8 (S, S)

    @property
    def area(self) -> float:
        """Mean placed alpha: the fraction of the image the attribute covers."""
        return float(self.region.astype(np.float64).mean() / 255.0)


def place(origin: np.ndarray, landmarks: np.ndarray, template: Template, shadow: bool = True) -> Placed:
    """GT, template layer and region of one attribute on one origin (RGB uint8 (S, S, 3))."""
    gt, alpha = composite(origin, landmarks, template, shadow=shadow)
    layer, _ = composite(np.zeros_like(origin), landmarks, template, shadow=False)
    region = np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Placed(gt=np.asarray(gt, np.uint8), template=np.asarray(layer, np.uint8), region=region)


def landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around the 68 points: the face box the demo crop is built on."""
    return (float(landmarks[:, 0].min()), float(landmarks[:, 1].min()),
            float(landmarks[:, 0].max()), float(landmarks[:, 1].max()))


def unsup3d_input(origins: np.ndarray, landmarks: Sequence[np.ndarray], crop: str) -> torch.Tensor:
    """(N, 3, 64, 64) float in [-1, 1]: what the Unsup3d networks see of uint8 origins (N, S, S, 3)."""
    if crop == "aligned":
        images = torch.from_numpy(np.ascontiguousarray(origins)).permute(0, 3, 1, 2)
        return to_float_images(resize_uint8(images, IMAGE_SIZE))
    if crop == "demo":
        return torch.cat([demo_crop(origin, landmark_box(points)) for origin, points in zip(origins, landmarks)])
    raise ValueError(f"canonical crop must be one of {CROPS}, got {crop!r}")


@torch.no_grad()
def canonical_input(nets: object, origins: np.ndarray, landmarks: Sequence[np.ndarray], crop: str, size: int,
                    channels: Sequence[str]) -> np.ndarray:
    """(N, 9, size, size) float16: the fusion network's canonical-map input of each origin."""
    maps = canonical_maps(nets, unsup3d_input(origins, landmarks, crop), size=size)
    return fusion_input(maps, channels).float().cpu().numpy().astype(np.float16)


__all__ = ["CROPS", "Placed", "canonical_input", "landmark_box", "place", "unsup3d_input"]
