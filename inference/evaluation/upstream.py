"""The figures of the models behind a synthesis, for the report: the classifier that scored it, the boundaries.

The classifier section is of the train-classifier run whose checkpoint evaluate used (found by its file when
`classifier` is a path; none when the file is no run's). The boundaries section is of the fit-boundaries run in
the synthesis's lineage (synthesize <- train-fusion <- fusion-pairs <- fit-boundaries), else the workspace's
current one, said so. Only the evaluated attributes' figures are copied, and the numbers each run reports
(validation AUC and calibration; boundary validation accuracy) go into metrics.json beside them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_catalog.manifest import Manifest
from data_catalog.workspace import Workspace
from inference.evaluation.plots import side_by_side

FIGURES_DIR = "figures"
MAX_LINEAGE = 64  # runs walked up from the synthesis at most


@dataclass
class UpstreamFigures:
    """section -> [(caption, file relative to the report folder)], and the numbers for metrics.json."""

    figures: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def classifier_run(workspace: Workspace, path: Path, used: Manifest | None) -> Manifest | None:
    """The train-classifier run of the checkpoint evaluate loaded: `used`, else the run that wrote `path`."""
    if used is not None:
        return used
    return next((m for m in reversed(workspace.manifests("train-classifier")) if "checkpoint" in m.files
                 and _same_file(workspace.resolve(m.files["checkpoint"].path), path)), None)


def lineage_run(workspace: Workspace, start: Manifest | None, stage: str) -> Manifest | None:
    """The nearest `stage` run among the inputs of `start`, their inputs, and so on (breadth first)."""
    if start is None:
        return None
    queue, seen = [ref.run_id for ref in start.inputs], set()
    while queue and len(seen) < MAX_LINEAGE:
        run_id = queue.pop(0)
        if run_id in seen:
            continue
        seen.add(run_id)
        try:
            manifest = workspace.manifest(run_id)
        except KeyError:
            continue
        if manifest.stage == stage and manifest.status == "completed":
            return manifest
        queue += [ref.run_id for ref in manifest.inputs]
    return None


def _figure(workspace: Workspace, manifest: Manifest, name: str) -> Path | None:
    entry = manifest.files.get(name)
    if entry is None or not entry.path.lower().endswith(".png"):
        return None
    path = workspace.resolve(entry.path)
    return path if path.is_file() else None


def _copy(workspace: Workspace, manifest: Manifest, names: Sequence[str], target: str, folder: Path
          ) -> str | None:
    """The run's figures `names` (those it has) as `target` in the report folder: a copy, or side by side."""
    sources = [path for name in names if (path := _figure(workspace, manifest, name)) is not None]
    if not sources:
        return None
    (folder / FIGURES_DIR).mkdir(exist_ok=True)
    if len(sources) == 1:
        shutil.copyfile(sources[0], folder / target)
    else:
        side_by_side(sources, folder / target)
    return target


def _classifier(workspace: Workspace, manifest: Manifest, attributes: Sequence[str], folder: Path
                ) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    summary: dict[str, Any] = {"run": manifest.run_id}
    if (entry := manifest.files.get("report.json")) is not None and workspace.resolve(entry.path).is_file():
        report = json.loads(workspace.resolve(entry.path).read_text(encoding="utf-8"))
        figures = report.get("figures") or {}
        summary["val"] = {a: {k: figures[a].get(k) for k in ("precision", "recall", "auc", "positives")}
                          for a in attributes if a in figures}
        summary.update({k: report.get(k) for k in ("temperature", "ece_before", "ece_after", "val_samples")})
    caption = (f"train-classifier {manifest.run_id}: val faces, top row the most confident correct, bottom row "
               "the most confused")
    target = _copy(workspace, manifest, ["grid"], f"{FIGURES_DIR}/classifier_grid.png", folder)
    return ([(caption, target)] if target else []), summary


def _boundaries(workspace: Workspace, manifest: Manifest, attributes: Sequence[str], folder: Path, lineage: bool
                ) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    summary = {"run": manifest.run_id, "in_lineage": lineage,
               "val_accuracy": {a: manifest.counts[f"val_accuracy_{a}"] for a in attributes
                                if f"val_accuracy_{a}" in manifest.counts}}
    shown = []  # one figure per attribute (the edit grid and the score plot side by side): the artifact stays short
    for a in attributes:
        target = _copy(workspace, manifest, [f"edit_grid_{a}", f"score_plot_{a}"],
                       f"{FIGURES_DIR}/boundaries_{a}.png", folder)
        if target is not None:
            caption = f"fit-boundaries {manifest.run_id}: {a}, G(w + alpha n) of test faces | logit vs signed distance"
            shown.append((caption, target))
    return shown, summary


@dataclass
class UpstreamRuns:
    """The runs whose figures the report shows (recorded as the evaluate run's inputs too)."""

    classifier: Manifest | None
    boundaries: Manifest | None
    boundaries_in_lineage: bool

    @property
    def manifests(self) -> list[Manifest]:
        return [m for m in (self.classifier, self.boundaries) if m is not None]


def find_upstream(workspace: Workspace, classifier_path: Path, classifier_manifest: Manifest | None,
                  synthesis: Manifest | None) -> UpstreamRuns:
    boundaries = lineage_run(workspace, synthesis, "fit-boundaries")
    return UpstreamRuns(classifier_run(workspace, classifier_path, classifier_manifest),
                        boundaries or workspace.current("fit-boundaries"), boundaries is not None)


def upstream_figures(workspace: Workspace, runs: UpstreamRuns, attributes: Sequence[str], folder: Path
                     ) -> UpstreamFigures:
    """Copy the classifier's and the boundaries' figures into `folder`; their numbers for metrics.json."""
    out = UpstreamFigures()
    if runs.classifier is not None:
        out.figures["classifier"], out.summary["classifier"] = _classifier(workspace, runs.classifier, attributes,
                                                                            folder)
    if runs.boundaries is not None:
        out.figures["boundaries"], out.summary["boundaries"] = _boundaries(workspace, runs.boundaries, attributes,
                                                                            folder, runs.boundaries_in_lineage)
    return out


__all__ = ["UpstreamFigures", "UpstreamRuns", "classifier_run", "find_upstream", "lineage_run", "upstream_figures"]
