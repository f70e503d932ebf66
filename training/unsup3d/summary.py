"""What a train-unsup3d run leaves for a user: the networks, the grid, the mesh and the yaw animation."""

from __future__ import annotations

from pathlib import Path

from data_catalog.manifest import Manifest
from data_catalog.stages import StageOutputs
from data_catalog.workspace import Workspace


def describe(workspace: Workspace, manifest: Manifest) -> StageOutputs | None:
    """Title and items (run id, kimg, folder, checkpoint, grid, mesh, animation) of a completed run."""
    if "checkpoint" not in manifest.files:
        return None
    checkpoint = workspace.resolve(manifest.files["checkpoint"].path)
    kimg = int(manifest.counts.get("images_seen", 0)) / 1000
    items = {"run id": manifest.run_id, "kimg": f"{kimg:.3f}", "run folder": str(Path(checkpoint).parent.parent),
             "checkpoint": f"{checkpoint} (Unsup3d layout: netD, netA, netL, netV, netC)"}
    for key, label in (("grid", "grid (input | recon | depth | normal | shading | albedo)"),
                       ("mesh", "canonical mesh (.obj)"), ("animation", "yaw animation")):
        if (entry := manifest.files.get(key)) is not None:
            items[label] = str(workspace.resolve(entry.path))
    return StageOutputs(title=f"Unsup3d model of run {manifest.run_id}: {kimg:.3f} kimg", items=items)
