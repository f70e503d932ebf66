"""What a train-classifier run leaves for a user: the scorer file, the report and its headline figures."""

from __future__ import annotations

import json
from pathlib import Path

from data_catalog.manifest import Manifest
from data_catalog.stages import StageOutputs
from data_catalog.workspace import Workspace


def describe(workspace: Workspace, manifest: Manifest) -> StageOutputs | None:
    if "checkpoint" not in manifest.files:
        return None
    checkpoint = workspace.resolve(manifest.files["checkpoint"].path)
    folder = Path(checkpoint).parent
    items = {"run id": manifest.run_id, "kimg": f"{float(manifest.counts.get('kimg', 0)):.3f}",
             "run folder": str(folder), "checkpoint": str(checkpoint)}
    title = f"attribute classifier of run {manifest.run_id}"
    markdown = None
    if (entry := manifest.files.get("report.json")) is not None:
        report = json.loads(Path(workspace.resolve(entry.path)).read_text(encoding="utf-8"))
        if report.get("figures"):
            figures = report["figures"]
            aucs = ", ".join(f"{a} {figures[a]['auc']:.3f}" if figures[a]["auc"] is not None else f"{a} n/a"
                             for a in report.get("attributes", sorted(figures)))
            title += f": val AUC {aucs}"
            items["calibration"] = (f"temperature {report['temperature']:.3f}, ECE {report['ece_before']:.3f} -> "
                                    f"{report['ece_after']:.3f}")
        else:
            title += ": no val split, no validation figures"
    if (entry := manifest.files.get("report.md")) is not None:
        path = Path(workspace.resolve(entry.path))
        items["report"] = str(path)
        markdown = str(path)
    if "label_disagrees" in manifest.counts:
        c = manifest.counts
        items["label check"] = (f"{c['label_agrees']} agree, {c['label_disagrees']} disagree, "
                                f"{c['label_uncertain']} uncertain (catalog table label_checks)")
    if (grid := manifest.files.get("grid")) is not None:
        items["grid"] = str(workspace.resolve(grid.path))
    return StageOutputs(title=title, items=items, markdown=markdown, artifact_key="classifier-report")
