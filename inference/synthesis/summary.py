"""What a synthesize run leaves for a user: the folder, the three image folders per attribute and the grids."""

from __future__ import annotations

from data_catalog.manifest import Manifest
from data_catalog.stages import StageOutputs
from data_catalog.workspace import Workspace
from inference.synthesis import layout

PREFIX = "grid_"


def describe(workspace: Workspace, manifest: Manifest) -> StageOutputs | None:
    entry = manifest.files.get(layout.INFO_FILE)
    if entry is None:
        return None
    folder = workspace.resolve(entry.path).parent
    attributes = [name.removeprefix(PREFIX) for name in manifest.files if name.startswith(PREFIX)]
    items = {"run id": manifest.run_id, "folder": str(folder)}
    for attribute in attributes:
        count = manifest.counts.get(f"{attribute}_samples", 0)
        items[f"{attribute} ({count} samples)"] = (f"{folder / attribute}/{{{layout.ORIGINS},{layout.BASIS},"
                                                   f"{layout.OURS},{layout.GT}}}/")
        items[f"{attribute} grid (origin | basis | ours | GT)"] = str(workspace.resolve(
            manifest.files[PREFIX + attribute].path))
    items["index"] = str(folder / layout.INDEX_FILE)
    markdown = str(workspace.resolve(manifest.files[layout.REPORT_FILE].path)) if layout.REPORT_FILE in \
        manifest.files else None
    return StageOutputs(title=f"syntheses of run {manifest.run_id}: {', '.join(attributes)}", items=items,
                        markdown=markdown, artifact_key="synthesize-report")
