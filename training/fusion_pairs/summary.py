"""What a fusion-pairs run leaves for a user (pairs.json, shards, the report) and its sample grid."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_catalog.manifest import Manifest
from data_catalog.stages import StageOutputs
from data_catalog.tar_reader import group_samples, iter_members
from data_catalog.workspace import Workspace
from training.common.images import image_grid, save_png
from training.fusion_pairs.format import INDEX_FILE, FusionPair, decode


def read_pairs(shard: Path, limit: int | None = None, attributes: Sequence[str] | None = None) -> Iterator[FusionPair]:
    """The pairs of one shard, decoded and validated (`format.decode`), in key order."""
    with open(shard, "rb") as stream:
        for count, sample in enumerate(group_samples(iter_members(stream, str(shard)), str(shard))):
            if limit is not None and count >= limit:
                return
            yield decode(sample, attributes)


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    """Any of a pair's images as a (size, size, 3) uint8 tile (region: grey levels)."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[0] != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    return image


def pairs_grid(shard: Path, attributes: Sequence[str], rows: int = 4) -> Image.Image:
    """One row per pair: origin, then template | GT | region of each attribute."""
    tiles = []
    columns = 1 + 3 * len(attributes)
    for pair in read_pairs(shard, rows, attributes):
        size = pair.origin.shape[0]
        tiles.append(_tile(pair.origin, size))
        for attribute in attributes:
            item = pair.attributes[attribute]
            tiles += [_tile(item.template, size), _tile(item.gt, size), _tile(item.region, size)]
    batch = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return image_grid(batch, columns=columns)


def save_pairs_grid(shard: Path, attributes: Sequence[str], path: Path, rows: int = 4) -> Path:
    return save_png(pairs_grid(shard, attributes, rows), path)


def describe(workspace: Workspace, manifest: Manifest) -> StageOutputs | None:
    if INDEX_FILE not in manifest.files or "report.md" not in manifest.files:
        return None
    index = workspace.resolve(manifest.files[INDEX_FILE].path)
    report = workspace.resolve(manifest.files["report.md"].path)
    counts = manifest.counts
    items = {"run id": manifest.run_id, "folder": str(index.parent),
             "train pairs": str(int(counts.get("n_train", 0))), "test pairs": str(int(counts.get("n_test", 0))),
             "shards": str(int(counts.get("shards", 0))),
             "landmarks detected": str(int(counts.get("landmarks_detected", 0))),
             "landmarks ffhq_canonical": str(int(counts.get("landmarks_ffhq_canonical", 0))),
             "index": str(index)}
    if "grid.png" in manifest.files:
        items["grid"] = str(workspace.resolve(manifest.files["grid.png"].path))
    items["report"] = str(report)
    return StageOutputs(title=f"fusion pairs of run {manifest.run_id}", items=items, markdown=str(report),
                        artifact_key="fusion-pairs-report")


__all__ = ["describe", "pairs_grid", "read_pairs", "save_pairs_grid"]
