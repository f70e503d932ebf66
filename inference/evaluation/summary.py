"""What an evaluate run leaves for a user: the report (HTML and markdown), the metrics and the headline numbers."""

from __future__ import annotations

from data_catalog.manifest import Manifest
from data_catalog.stages import StageOutputs
from data_catalog.workspace import Workspace


def describe(workspace: Workspace, manifest: Manifest) -> StageOutputs | None:
    if "report.html" not in manifest.files:
        return None
    html = workspace.resolve(manifest.files["report.html"].path)
    items = {"run id": manifest.run_id, "report": str(html), "report (markdown)": str(html.with_name("report.md")),
             "metrics": str(html.with_name("metrics.json"))}
    for key, value in sorted(manifest.counts.items()):
        if key.endswith("_success"):
            items[key.removesuffix("_success") + " attribute success"] = f"{float(value):.3f}"
    return StageOutputs(title=f"evaluation {manifest.run_id}", items=items,
                        markdown=str(html.with_name("report.md")), artifact_key="evaluate-report")
