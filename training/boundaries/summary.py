"""What a fit-boundaries run leaves for a user: the boundaries, the test set JSONs and the report."""

from __future__ import annotations

from data_catalog.manifest import Manifest
from data_catalog.stages import StageOutputs
from data_catalog.workspace import Workspace


def describe(workspace: Workspace, manifest: Manifest) -> StageOutputs | None:
    if "report.md" not in manifest.files:
        return None
    report = workspace.resolve(manifest.files["report.md"].path)
    items = {"run id": manifest.run_id, "samples": str(int(manifest.counts.get("n_samples", 0))),
             "folder": str(report.parent)}
    for name, value in sorted(manifest.counts.items()):
        if name.startswith("val_accuracy_"):
            items[f"val accuracy {name.removeprefix('val_accuracy_')}"] = f"{float(value):.4f}"
    for name, entry in manifest.files.items():
        if name.startswith("boundary_") or name.endswith(".json") and "_test_" in name:
            items[name] = str(workspace.resolve(entry.path))
    items["report"] = str(report)
    return StageOutputs(title=f"InterfaceGAN boundaries of run {manifest.run_id}", items=items,
                        markdown=str(report), artifact_key="fit-boundaries-report")
