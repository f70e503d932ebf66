"""Faces for the classifier: one decoding pass over MEGN shards into memory, plus on-the-fly composites.

Why in memory: class balancing needs weighted random access, and drawing each step's batch from a
generator seeded by (seed, rank, step) makes a resumed run draw exactly the batches an uninterrupted one
would, with no reader state to carry. Images are kept as uint8 at the model resolution (128 px: 48 KiB a
face); clean faces (label 0) are also kept at twice that resolution with their 68 landmarks mapped into
the aligned crop, as the base for composites whose labels are known to be true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from alignment.attributes import ATTRIBUTES as ALIGN_ATTRIBUTES
from alignment.attributes import Template, composite, random_template
from data_catalog.loader import make_loader
from training.classifier.model import ATTRIBUTES

__all__ = ["FaceSet", "TemplatePool", "choose_attributes", "crop_landmarks", "jitter_colours", "load_faces", "make_composite",
           "multi_hot"]

assert tuple(ALIGN_ATTRIBUTES) == ATTRIBUTES, "alignment and classifier attribute orders must agree"


def multi_hot(labels: torch.Tensor) -> torch.Tensor:
    """Shard labels (0 none, i + 1 = ATTRIBUTES[i]) -> [N, A] float targets."""
    targets = torch.zeros(labels.shape[0], len(ATTRIBUTES))
    positive = labels > 0
    targets[positive.nonzero(as_tuple=True)[0], labels[positive] - 1] = 1.0
    return targets


def crop_landmarks(metadata: dict[str, Any], crop_size: int) -> np.ndarray | None:
    """The 68 source landmarks mapped into the aligned crop (`transform` is crop -> source: invert it).

    `crop_size` is the side of the stored crop; None when the metadata lacks what is needed."""
    lm, transform = metadata.get("landmarks68"), metadata.get("transform")
    if not lm or not transform or len(lm) != 136 or len(transform) != 9:
        return None
    try:
        inverse = np.linalg.inv(np.asarray(transform, np.float64).reshape(3, 3))
    except np.linalg.LinAlgError:
        return None
    points = np.c_[np.asarray(lm, np.float64).reshape(68, 2), np.ones(68)] @ inverse.T
    points = points[:, :2] / points[:, 2:]
    if not np.isfinite(points).all() or (np.abs(points) > 4 * crop_size).any():
        return None
    return points


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NCHW -> uint8 at `size` (area when shrinking)."""
    if images.shape[-1] == size:
        return images
    mode = "area" if images.shape[-1] > size else "bilinear"
    out = F.interpolate(images.float(), size=(size, size), mode=mode)
    return out.round().clamp(0, 255).to(torch.uint8)


@dataclass
class FaceSet:
    """One split in memory: images at the model resolution, labels, keys; clean faces for composites."""

    images: torch.Tensor  # [N, 3, R, R] uint8
    labels: torch.Tensor  # [N] int64 shard labels
    keys: list[str]
    clean: list[np.ndarray] = field(default_factory=list)  # HxWx3 uint8 at the composite size
    clean_landmarks: list[np.ndarray] = field(default_factory=list)  # (68, 2) in the composite crop

    def __len__(self) -> int:
        return len(self.keys)

    def label_counts(self) -> dict[str, int]:
        names = ("none", *ATTRIBUTES)
        counts = torch.bincount(self.labels, minlength=len(names)).tolist() if len(self) else [0] * len(names)
        return {name: int(n) for name, n in zip(names, counts)}

    def sampling_weights(self, balance: bool) -> torch.Tensor:
        """Per-sample weights: 1 / (count of its label) when balancing, else uniform."""
        if not balance or not len(self):
            return torch.ones(len(self), dtype=torch.float64)
        counts = torch.bincount(self.labels, minlength=len(ATTRIBUTES) + 1).double()
        return 1.0 / counts[self.labels]


def load_faces(shards: list[Path], resolution: int, composite_size: int | None, num_workers: int = 0,
               batch: int = 64) -> FaceSet:
    """Decode every sample of the shards once (in shard/key order, no shuffling)."""
    images, labels, keys, clean, clean_lm = [], [], [], [], []
    if shards:
        workers = min(num_workers, len(shards))
        for chunk in make_loader(shards, batch, num_workers=workers, rank=0, world_size=1, image_dtype="uint8"):
            stored = chunk["image"]
            images.append(_resize(stored, resolution))
            labels.append(chunk["label"])
            keys.extend(chunk["key"])
            if composite_size is None:
                continue
            for image, label, meta in zip(stored, chunk["label"].tolist(), chunk["metadata"]):
                if label != 0:
                    continue
                lm = crop_landmarks(meta, image.shape[-1])
                if lm is None:
                    continue
                face = _resize(image[None], composite_size)[0]
                clean.append(face.permute(1, 2, 0).contiguous().numpy())
                clean_lm.append(lm * composite_size / image.shape[-1])
    if not images:
        return FaceSet(torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64),
                       [])
    return FaceSet(torch.cat(images), torch.cat(labels), keys, clean, clean_lm)


class TemplatePool:
    """`size` random templates per attribute, drawn once from a seeded generator (drawing is the slow part)."""

    def __init__(self, seed: int, size: int, template_px: int) -> None:
        self.templates: dict[str, list[Template]] = {}
        for index, attribute in enumerate(ATTRIBUTES):
            rng = np.random.default_rng([seed, 7919, index])
            self.templates[attribute] = [random_template(attribute, rng, template_px) for _ in range(size)]

    def pick(self, attribute: str, rng: np.random.Generator) -> Template:
        pool = self.templates[attribute]
        return pool[int(rng.integers(len(pool)))]


def choose_attributes(rng: np.random.Generator, combine_prob: float) -> list[str]:
    """One attribute, or with `combine_prob` a mask plus one kind of glasses (never both glasses)."""
    if rng.random() < combine_prob:
        return ["face_mask", ATTRIBUTES[1 + int(rng.integers(2))]]
    return [ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]]


def make_composite(face: np.ndarray, landmarks: np.ndarray, attributes: list[str], pool: TemplatePool,
                   rng: np.random.Generator) -> np.ndarray:
    """The face wearing the attributes' templates (uint8 HxWx3)."""
    image: np.ndarray | Image.Image = face
    for attribute in attributes:
        image, _ = composite(image, landmarks, pool.pick(attribute, rng))
    return np.array(image, np.uint8)  # a writable copy (torch.from_numpy warns on read-only arrays)


def jitter_colours(images: torch.Tensor, generator: torch.Generator, brightness: float, contrast: float,
                   saturation: float) -> torch.Tensor:
    """Small per-sample brightness / contrast / saturation changes on float images in [-1, 1]."""
    n = images.shape[0]

    def amount(scale: float) -> torch.Tensor:
        return ((torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * scale).to(images.device)

    images = images + amount(brightness)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * (1 + amount(contrast)) + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * (1 + amount(saturation)) + grey
    return images.clamp(-1, 1)
