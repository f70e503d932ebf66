"""The train-classifier stage: MEGN shards (+ composites) -> an attribute classifier, its reports, a label check.

`run(config, workspace, inputs)` is what the Prefect flow and `sdgan train-classifier` call; under torchrun
every process calls it, all ranks train (gradients averaged), rank 0 books the run, evaluates, calibrates,
checks the labels and writes the reports. The run folder is `models/classifier/<run-id>/`:
config.json, dataset.json, stats.jsonl, events/, checkpoints/ (resumable), classifier.pt (the calibrated
scorer, what `AttributeScorer.load` and fit-boundaries read), report.json, report.md, label-check.md and
grid-val.png.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path


from data_catalog.loader import list_shards
from data_catalog.manifest import Manifest
from data_catalog.workspace import Workspace
from training.classifier.config import TrainClassifierConfig
from training.classifier.data import FaceSet, load_faces
from training.classifier.report import (VERDICTS, build_report, label_check, label_check_markdown, report_markdown,
                                        write_json)
from training.classifier.trainer import ClassifierTrainer
from training.common.distributed import barrier, setup_runtime
from training.common.loop import ProgressCallback, Schedule, TrainingLoop
from training.common.resume import DatasetNotFound, plan_run, resumed_config

__all__ = ["MODELS_DIR", "RESUMABLE_CHANGES", "SCORER_FILE", "STAGE", "DatasetNotFound", "run"]

STAGE = "train-classifier"
MODELS_DIR = Path("models") / "classifier"
SCORER_FILE = "classifier.pt"
# Config sections a resumed run may change: none of them changes what the weights learn from.
RESUMABLE_CHANGES = ("schedule", "runtime", "calibration", "label_check", "report")
TICK_FIELDS = {"loss": "loss", "accuracy": "acc", "composite_share": "composites"}
log = logging.getLogger(f"sdgan.{STAGE}")


def _split_shards(folder: Path, split: str) -> list[Path]:
    """The split's shards, or none (a tiny dataset may have no val split)."""
    try:
        return list_shards(folder, split)
    except FileNotFoundError:
        return []


def _schedule(config: TrainClassifierConfig) -> Schedule:
    cfg = config.schedule
    return Schedule(total_kimg=cfg.total_kimg, tick_kimg=cfg.tick_kimg, log_steps=cfg.log_steps,
                    checkpoint_kimg=cfg.checkpoint_kimg, keep_checkpoints=cfg.keep_checkpoints,
                    sample_kimg=cfg.sample_kimg)


def run(config: TrainClassifierConfig, workspace: Workspace, inputs: list[Manifest] | tuple = (), *,
        progress: ProgressCallback | None = None) -> Manifest | None:
    """Train (or resume), report and check labels; the stage manifest on rank 0, None on other ranks.

    `progress(fraction, line)` is called on rank 0 at every tick and once at the end with 1.0; the same lines
    go to the logger `sdgan.train-classifier`.
    """
    config = resumed_config(workspace, MODELS_DIR, config, RESUMABLE_CHANGES)  # a resume trains on the run's config
    device, ctx = setup_runtime(config.runtime.device, config.runtime.threads)
    plan = plan_run(workspace, STAGE, MODELS_DIR, config, list(inputs), ctx, allowed_changes=RESUMABLE_CHANGES)
    folder = plan.folder
    res = config.model.resolution
    train_shards = list_shards(plan.dataset_folder, config.data.split)
    train = load_faces(train_shards, res, 2 * res if config.data.composite_fraction > 0 else None,
                       config.data.num_workers)

    with plan.bookkeeping(workspace, STAGE, config, ctx) as run_ctx:
        trainer = ClassifierTrainer(config, train, device, ctx)
        if ctx.is_main and config.data.composite_fraction > 0 and not trainer.composites:
            log.warning("no clean faces with landmarks in the training split: training without composites")
        loop = TrainingLoop(trainer, folder, _schedule(config), lambda: itertools.repeat(None), name=STAGE,
                            checkpoint_extra={"dataset_version": plan.dataset_version}, tick_fields=TICK_FIELDS,
                            progress=progress)
        plan.start(loop, config, config.data.split, train_shards, ctx)
        result = loop.run()
        if run_ctx is not None:
            _finish(config, plan, trainer, train, result, run_ctx)
    barrier(ctx)
    return run_ctx.manifest if run_ctx is not None else None


def _finish(config: TrainClassifierConfig, plan, trainer: ClassifierTrainer, train: FaceSet, result: dict,
            run_ctx) -> None:
    """Rank 0 after training: report, calibrated scorer file, label check, manifest entries."""
    folder = plan.folder.root
    res = config.model.resolution
    other = "val" if config.data.split == "train" else "train"
    held_out = load_faces(_split_shards(plan.dataset_folder, other), res, None, config.data.num_workers)
    scorer = trainer.scorer()
    state = trainer.state
    report = build_report(scorer, held_out, calibrate=config.calibration.enabled, bins=config.calibration.bins,
                          grid_faces=config.report.grid_faces, folder=folder,
                          extra={"dataset_version": plan.dataset_version, "train_samples": len(train),
                                 "train_labels": train.label_counts(), "composites_enabled": trainer.composites,
                                 "real_seen": state.real_seen, "composite_seen": state.composite_seen,
                                 "steps": result["steps"], "kimg": result["kimg"], "held_out_split": other})
    scorer_path = scorer.save(folder / SCORER_FILE, extra={"sdgan": {**trainer.counters(),
                                                                     "config": config.to_dict(),
                                                                     "dataset_version": plan.dataset_version}})
    counts = {"steps": result["steps"], "images_seen": result["images_seen"], "kimg": result["kimg"],
              "real_seen": state.real_seen, "composite_seen": state.composite_seen}
    if config.label_check.enabled:
        cfg = config.label_check
        splits = {config.data.split: train, other: held_out}
        rows, verdict_counts, disagreements = label_check(scorer, splits, plan.dataset_version, cfg.threshold, cfg.rows)
        run_ctx.append("label_checks", rows)
        check = {"dataset_version": plan.dataset_version, "threshold": cfg.threshold, "counts": dict(verdict_counts),
                 "disagreements": disagreements}
        report["label_check"] = check
        (folder / "label-check.md").write_text(label_check_markdown(check), encoding="utf-8")
        run_ctx.add_file("label-check.md", folder / "label-check.md")
        counts.update({f"label_{v}": int(verdict_counts[v]) for v in VERDICTS})
    write_json(folder / "report.json", report)
    (folder / "report.md").write_text(report_markdown(report), encoding="utf-8")
    plan.record_run_files(run_ctx)
    for name in ("report.json", "report.md"):
        run_ctx.add_file(name, folder / name)
    run_ctx.add_file("checkpoint", scorer_path)
    run_ctx.add_file("training_checkpoint", trainer_checkpoint(plan))
    if (folder / "grid-val.png").is_file():
        run_ctx.add_file("grid", folder / "grid-val.png")
    run_ctx.manifest.counts.update(counts)
    if not report["val_empty"]:
        log.info("val: %s; temperature %.3f, ECE %.4f -> %.4f", "  ".join(
            f"{a} auc {f['auc'] if f['auc'] is not None else 'n/a'}" for a, f in report["figures"].items()),
            report["temperature"], report["ece_before"], report["ece_after"])
    else:
        log.warning("the %s split is empty: no validation figures, temperature 1.0", other)


def trainer_checkpoint(plan) -> Path:
    """The newest resumable checkpoint of the run folder (the loop's final one)."""
    latest = plan.folder.latest_checkpoint()
    if latest is None:
        raise RuntimeError(f"no checkpoint in {plan.folder.root}")
    return latest
