"""The evaluate stage: a synthesis + the classifier (+ identity, Inception weights, reference faces) -> a report.

`run(config, workspace, inputs)` scores every attribute of the synthesis per method (SD-GAN, the InterfaceGAN
basis alone, the template paste), then writes `reporting/<run-id>/`: `metrics.json`, `per_sample.parquet`,
`report.md` with its images beside it (grids, edit-strength plots, the classifier's and boundaries' figures)
and the self-contained `report.html`. Everything is found and loaded before anything is written; the folder is
made under a staging name and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from data_catalog.atomic import atomic_write_text
from data_catalog.manifest import Manifest
from data_catalog.runs import new_run_id, stage_run
from data_catalog.workspace import Workspace
from inference.evaluation.config import EvaluateConfig
from inference.evaluation.plots import strength_plot
from inference.evaluation.report import render_html, render_markdown
from inference.evaluation.scoring import Scorers, finite_or_none, score_attribute
from inference.evaluation.sources import (
    EvaluationInputError,
    SynthesisRun,
    find_classifier,
    find_synthesis,
    load_reference,
)
from inference.evaluation.upstream import UpstreamRuns, find_upstream, upstream_figures
from inference.synthesis import layout
from training.common.device import kept_torch_threads

__all__ = ["REPORTING_DIR", "STAGE", "EvaluateConfig", "EvaluationInputError", "run"]

STAGE = "evaluate"
REPORTING_DIR = Path("reporting")
PARTIAL_PREFIX = ".partial-"
logger = logging.getLogger("sdgan.evaluate")
ProgressCallback = Callable[[float, str], None]


def run(config: EvaluateConfig, workspace: Workspace, inputs: Sequence[Manifest] = (), *,
        progress: ProgressCallback | None = None) -> Manifest:
    with kept_torch_threads():
        return _run(config, workspace, inputs, progress)


def _run(config: EvaluateConfig, workspace: Workspace, inputs: Sequence[Manifest],
         progress: ProgressCallback | None) -> Manifest:
    from training.classifier.scorer import AttributeScorer
    from training.common.distributed import setup_runtime

    device, _ = setup_runtime(config.runtime.device, config.runtime.threads)
    synthesis = find_synthesis(workspace, config, inputs)
    attributes = list(config.attributes) if config.attributes is not None else list(synthesis.info.attributes)
    absent = [a for a in attributes if a not in synthesis.info.attributes]
    if absent:
        raise EvaluationInputError(f"synthesis {synthesis.run_id} has no {absent} (it has "
                                   f"{synthesis.info.attributes})")
    classifier_path, classifier_run = find_classifier(workspace, config, inputs)
    classifier = AttributeScorer.load(classifier_path, device=device)  # CheckpointError for another kind
    absent = [a for a in attributes if a not in classifier.attributes]
    if absent:
        raise EvaluationInputError(f"classifier {classifier_path} scores {list(classifier.attributes)}, not {absent}")
    scorers = Scorers(config, classifier, device)
    reference = load_reference(workspace, config, attributes, inputs)
    upstream = find_upstream(workspace, classifier_path, classifier_run, synthesis.manifest)
    used = [m for m in (synthesis.manifest, upstream.classifier, reference.manifest) if m is not None]
    used += [m for m in upstream.manifests if m.run_id not in {u.run_id for u in used}]
    used += [m for m in inputs if m.run_id not in {u.run_id for u in used}]

    run_id = new_run_id(STAGE)
    root = workspace.root / REPORTING_DIR
    for stale in root.glob(PARTIAL_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging, final = root / f"{PARTIAL_PREFIX}{run_id}", root / run_id
    with stage_run(workspace, STAGE, config, used, run_id=run_id) as run_ctx:
        staging.mkdir(parents=True)
        try:
            metrics = _evaluate(config, synthesis, attributes, scorers, reference, classifier_path, upstream,
                                staging, workspace, progress)
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        for path in sorted(final.rglob("*")):
            if path.is_file():
                run_ctx.add_file(path.relative_to(final).as_posix(), path)
        for attribute, scores in metrics["attributes"].items():
            for method, entries in scores["methods"].items():
                for name in ("success", "dlib_distance", "l1_gt", "background_l1"):
                    if not entries[name].get("skipped") and entries[name]["mean"] is not None:
                        run_ctx.manifest.counts[f"{attribute}_{method}_{name}"] = round(entries[name]["mean"], 4)
                fid = scores["distribution"][method]
                if not fid.get("skipped") and fid["fid"] is not None:
                    run_ctx.manifest.counts[f"{attribute}_{method}_fid"] = round(fid["fid"], 3)
        line = f"evaluate: {', '.join(attributes)} of synthesis {synthesis.run_id} -> {final / 'report.html'}"
        logger.info(line)
        if progress is not None:
            progress(1.0, line)
    return run_ctx.manifest


def is_demo_generator(synthesis: SynthesisRun) -> bool:
    """The tiny demo generator: synthesize says so, or its faces are 64 px or smaller."""
    return bool(synthesis.info.extra.get("demo_generator")) or synthesis.info.image_size <= 64


def _evaluate(config: EvaluateConfig, synthesis: SynthesisRun, attributes: list[str], scorers: Scorers,
              reference: Any, classifier_path: Path, upstream_runs: UpstreamRuns, folder: Path,
              workspace: Workspace, progress: ProgressCallback | None) -> dict[str, Any]:
    threshold, source = None, None
    results, frames, figures = {}, [], {}
    for position, attribute in enumerate(attributes):
        scores = score_attribute(synthesis, attribute, scorers, reference, logger.info)
        frames.append(scores.per_sample)
        success = scores.summary[config.methods[0]]["success"]
        threshold, source = success["threshold"], success["threshold_source"]
        results[attribute] = {"n": scores.n, "methods": scores.summary, "distribution": scores.distribution,
                              "differences": scores.differences, "strength": scores.strength,
                              "strength_identity": scores.strength_identity, "notes": scores.notes}
        figures[attribute] = []
        grid = synthesis.folder / attribute / layout.GRID_FILE
        if grid.is_file():
            shutil.copyfile(grid, folder / f"grid_{attribute}.png")
            figures[attribute].append(("origin | basis G(w + n_b) | ours G(w + n_b + n_o) | GT", f"grid_{attribute}.png"))
        if scores.strength:
            strength_plot(scores.strength, attribute, threshold, folder / f"strength_{attribute}.png",
                          identity=scores.strength_identity)
            what = f"mean p({attribute})" + (" and dlib distance to the origin" if scores.strength_identity else "")
            caption = f"edit strength: {what} of the first {synthesis.info.strength_samples} samples"
            figures[attribute].append((caption, f"strength_{attribute}.png"))
        if progress is not None:
            progress((position + 1) / (len(attributes) + 1), f"evaluate: {attribute} scored")
    upstream = upstream_figures(workspace, upstream_runs, attributes, folder)
    figures.update(upstream.figures)
    info = synthesis.info
    metrics = finite_or_none({
        "synthesis": {"run": synthesis.run_id, "source": info.source, "image_size": info.image_size,
                      "truncation": info.truncation, "minmax": info.minmax, "generator": info.generator,
                      "demo_generator": is_demo_generator(synthesis),
                      "fusion": info.fusion},
        "classifier": {"path": str(classifier_path), "threshold": threshold, "threshold_source": source,
                       "temperature": scorers.classifier.temperature},
        "reference": reference.source, "methods": list(config.methods), "upstream": upstream.summary,
        "bootstrap": config.bootstrap.model_dump(), "attributes": results})
    pd.concat(frames, ignore_index=True).to_parquet(folder / "per_sample.parquet", index=False)
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    atomic_write_text(folder / "report.md", render_markdown(metrics, figures))
    atomic_write_text(folder / "report.html", render_html(metrics, figures, folder))
    config.save(folder)
    return metrics
