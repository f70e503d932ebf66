"""What a train-stylegan2 run leaves for a user: the model, where it is, and how to sample it."""

from __future__ import annotations

from pathlib import Path

from data_catalog.manifest import Manifest
from data_catalog.stages import StageOutputs
from data_catalog.workspace import Workspace


def describe(workspace: Workspace, manifest: Manifest) -> StageOutputs | None:
    if "checkpoint" not in manifest.files:
        return None
    checkpoint = workspace.resolve(manifest.files["checkpoint"].path)
    kimg = int(manifest.counts.get("images_seen", 0)) / 1000
    items = {"run id": manifest.run_id, "kimg": f"{kimg:.3f}", "run folder": str(Path(checkpoint).parent.parent),
             "checkpoint": str(checkpoint)}
    if (grid := manifest.files.get("grid")) is not None:
        items["grid"] = str(workspace.resolve(grid.path))
    items["samples"] = f"sdgan generate --checkpoint {checkpoint} --seeds 0-15 --truncation 0.7 --out grid.png"
    return StageOutputs(title=f"StyleGAN2 model of run {manifest.run_id}: {kimg:.3f} kimg", items=items)
