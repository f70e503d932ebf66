"""The test samples of one attribute as collated batches, whichever the source.

A batch is what `training.fusion.data.collate_pairs` makes (w, nb float32; origin, gt, template uint8 (B, 3, S, S);
region uint8 (B, 1, S, S); canonical float16; key) plus `seed` and `landmark_source` lists, so the network is fed
through `training.fusion.trainer.prepare_inputs` exactly as in training.

- pairs: read from the fusion-pairs run's test shards (made once by fusion-pairs, with its templates);
- files: made here as fusion-pairs makes them: origin G(trunc(w)), 68 landmarks (detected, else FFHQ's canonical
  ones), the template placed by them (GT composite, placed layer, region) and the Unsup3d canonical maps.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_catalog.tar_reader import shard_samples
from training.fusion.data import collate_pairs, pair_tensors
from training.fusion_pairs.format import decode

Batch = dict[str, Any]


def pair_batches(shards: list[Path], attribute: str, limit: int | None, batch_size: int) -> Iterator[Batch]:
    """The first `limit` test pairs of the shards, in key order, `batch_size` at a time."""
    samples = shard_samples({"url": str(shard)} for shard in shards)
    pairs = (decode(sample, [attribute]) for sample in itertools.islice(samples, limit))
    while chunk := list(itertools.islice(pairs, batch_size)):
        batch = collate_pairs([pair_tensors(pair, attribute) for pair in chunk])
        batch["seed"] = [pair.meta.get("seed") for pair in chunk]
        batch["landmark_source"] = [pair.meta.get("landmark_source") for pair in chunk]
        yield batch


@dataclass
class PairMaker:
    """Makes the network inputs of test w the way fusion-pairs does (source "files")."""

    editor: Any  # training.fusion.trainer.Editor: the official truncation and noise
    unsup3d: Any  # the Unsup3d networks
    finder: Any  # training.fusion_pairs.landmarks.LandmarkFinder at the generator's size
    templates: dict[str, Any]  # attribute -> training.fusion_pairs.templates.Template
    canonical_size: int
    canonical_crop: str  # aligned | demo
    canonical_channels: tuple[str, ...] = ("normal", "shading", "albedo")
    shadow: bool = True

    @torch.no_grad()
    def batch(self, attribute: str, w: np.ndarray, nb: np.ndarray, start: int) -> Batch:
        from training.common.images import to_uint8
        from training.fusion_pairs.compose import canonical_input, place

        device = self.editor.mean_w.device
        w_t = torch.from_numpy(w).to(device)
        origins = to_uint8(self.editor(self.editor.latent(w_t, torch.zeros_like(w_t))))
        found = [self.finder.find(origin) for origin in origins]
        canonical = canonical_input(self.unsup3d, origins, [f.landmarks for f in found], self.canonical_crop,
                                    self.canonical_size, self.canonical_channels)
        placed = [place(origin, f.landmarks, self.templates[attribute], self.shadow)
                  for origin, f in zip(origins, found)]

        def chw(images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
            array = np.stack(list(images))
            array = array[..., None] if array.ndim == 3 else array
            return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))

        return {"w": torch.from_numpy(w.copy()), "nb": torch.from_numpy(nb.copy()), "origin": chw(origins),
                "gt": chw([p.gt for p in placed]), "template": chw([p.template for p in placed]),
                "region": chw([p.region for p in placed]), "canonical": torch.from_numpy(canonical),
                "key": [f"test_{start + j:08d}" for j in range(len(w))], "seed": [None] * len(w),
                "landmark_source": [f.source for f in found]}


def file_batches(maker: PairMaker, attribute: str, w: np.ndarray, nb: np.ndarray, limit: int | None,
                 batch_size: int) -> Iterator[Batch]:
    count = min(len(w), limit) if limit is not None else len(w)
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        yield maker.batch(attribute, w[start:stop], nb[start:stop], start)


__all__ = ["Batch", "PairMaker", "file_batches", "pair_batches"]
