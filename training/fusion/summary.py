"""What a train-fusion run leaves for a user: one checkpoint and grid per attribute, and the held-out losses."""

from __future__ import annotations

from pathlib import Path

from data_catalog.manifest import Manifest
from data_catalog.stages import StageOutputs
from data_catalog.workspace import Workspace

PREFIX = "checkpoint_"


def describe(workspace: Workspace, manifest: Manifest) -> StageOutputs | None:
    """Title and items (run id, folder, per attribute: checkpoint, grid, held-out image L1 ours vs basis)."""
    attributes = [name.removeprefix(PREFIX) for name in manifest.files if name.startswith(PREFIX)]
    if not attributes:
        return None
    counts = manifest.counts
    first = workspace.resolve(manifest.files[PREFIX + attributes[0]].path)
    items = {"run id": manifest.run_id, "run folder": str(Path(first).parent.parent)}
    for attribute in attributes:
        items[f"{attribute} checkpoint"] = (f"{workspace.resolve(manifest.files[PREFIX + attribute].path)} "
                                            f"(official layout, {float(counts.get(f'{attribute}_kimg', 0)):.3f} kimg)")
        if (grid := manifest.files.get(f"grid_{attribute}")) is not None:
            items[f"{attribute} grid (origin | basis | ours | GT)"] = str(workspace.resolve(grid.path))
        ours, basis = counts.get(f"{attribute}_test_image_l1"), counts.get(f"{attribute}_test_basis_image_l1")
        if ours is not None and basis is not None:
            items[f"{attribute} held-out L1 to GT"] = f"ours {float(ours):.4f}, basis only {float(basis):.4f}"
    markdown = None
    if (report := manifest.files.get("report.md")) is not None:
        markdown = str(workspace.resolve(report.path))
        items["report"] = markdown
    return StageOutputs(title=f"fusion networks of run {manifest.run_id}: {', '.join(attributes)}", items=items,
                        markdown=markdown, artifact_key="train-fusion-report")
