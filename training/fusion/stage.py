"""The train-fusion stage: a fusion-pairs run + its frozen G and D -> one fusion network per attribute.

`run(config, workspace, inputs)` is what the Prefect flow and `sdgan train-fusion` call. Under torchrun every
process calls it; all ranks train (gradients averaged), rank 0 books the run and writes the files. Attributes
train one after the other into the run folder `models/fusion/<run-id>/`:

    config.json, dataset.json (the pairs run, split, shards, generator sha256), report.json, report.md
    <attribute>/checkpoint_latest.pt      official layout ({"model": DataParallel-style state dict, "arch", ...})
                                          plus "optimizer" and "sdgan": the official test.py loads it, we resume it
    <attribute>/checkpoints/ckpt-*.pt     numbered snapshots (the newest schedule.keep_checkpoints kept)
    <attribute>/stats.jsonl, events/      loss windows (TensorBoard: `tensorboard --logdir models/fusion`)
    <attribute>/grids/fakes-*.png         origin | basis G(w + n_b) | ours G(w + n_b + n_o) | GT, held-out pairs

`resume` (run id, run folder, or a checkpoint) continues every attribute from its newest checkpoint: finished
attributes are skipped, the interrupted one continues exactly, the rest start. `init` starts from fusion weights
(the official checkpoints, or a finished run) instead of a random network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_catalog.atomic import atomic_write_text
from data_catalog.config import ConfigError
from data_catalog.manifest import Manifest
from data_catalog.runs import StageRun, stage_run
from data_catalog.workspace import Workspace
from training.common.checkpoint import CheckpointError, load_checkpoint
from training.common.device import kept_torch_threads
from training.common.distributed import DistContext, barrier, setup_runtime
from training.common.loop import ProgressCallback, Schedule, TrainingLoop
from training.common.resume import CONFIG_FILE, check_resume_config, resumed_config, shared_run_id
from training.common.run_folder import RunFolder
from training.fusion.config import TrainFusionConfig
from training.fusion.data import (
    PairsNotFound,
    PairsRun,
    find_pairs_run,
    held_out_batches,
    pair_batches,
    read_pairs,
    shard_counts,
)
from training.fusion.losses import FusionLoss
from training.fusion.network import FusionArch
from training.fusion.trainer import Editor, FusionTrainer, resolve_arch
from training.fusion_pairs.format import ATTRIBUTES
from training.stylegan2.handle import GeneratorHandle

__all__ = ["LATEST", "MODELS_DIR", "RESUMABLE_CHANGES", "STAGE", "FusionLoop", "PairsNotFound", "load_generator",
           "mirror_latest", "plan_fusion_run", "run", "truncation_mean"]

STAGE = "train-fusion"
MODELS_DIR = Path("models") / "fusion"
LATEST = "checkpoint_latest.pt"  # the official name (test.py's --latest-checkpoint-file)
DATASET_FILE = "dataset.json"
# Config sections a resumed run may change: none of them changes what the networks learn from.
RESUMABLE_CHANGES = ("schedule", "runtime", "eval")
TICK_FIELDS = {"loss": "loss", "loss_image_l1": "l1", "loss_l1_inside": "l1_in", "loss_identity": "id",
               "loss_realism": "realism", "loss_offset_norm": "n_o^2"}
log = logging.getLogger(f"sdgan.{STAGE}")


class FusionLoop(TrainingLoop):
    """The generic loop, with checkpoints written by the fusion trainer in the official layout and the newest
    one mirrored (hard link, else copy) to `<attribute>/checkpoint_latest.pt`."""

    def save_checkpoint(self) -> Path | None:
        path = None
        if self.main:
            trainer: FusionTrainer = self.trainer  # type: ignore[assignment]
            path = trainer.save(self.folder.checkpoint_path(trainer.state.images_seen), dict(self.checkpoint_extra))
            mirror_latest(path, self.folder.root / LATEST)
            self.folder.prune_checkpoints(self.schedule.keep_checkpoints)
        barrier(self.trainer.ctx)
        return path


def mirror_latest(source: Path, target: Path) -> Path:
    """Point `target` at `source`'s bytes atomically: a hard link when the filesystem allows, else a copy."""
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:
        temp.write_bytes(source.read_bytes())
    os.replace(temp, target)
    return target


# ---------------------------------------------------------------------------------------------- planning
@dataclass
class FusionPlan:
    """Where the run writes, what each attribute resumes from, and the pairs run a resumed folder trained on."""

    run_id: str
    root: Path
    resume: dict[str, Path] = field(default_factory=dict)
    pairs: str | None = None

    @property
    def is_new_folder(self) -> bool:
        return not (self.root / CONFIG_FILE).is_file()


def _latest_of(folder: Path) -> Path | None:
    """An attribute folder's newest numbered checkpoint, else its checkpoint_latest.pt."""
    numbered = RunFolder(folder).latest_checkpoint()
    return numbered or ((folder / LATEST) if (folder / LATEST).is_file() else None)


def _continue_folder(root: Path) -> dict[str, Path]:
    return {a: path for a in ATTRIBUTES if (root / a).is_dir() and (path := _latest_of(root / a)) is not None}


def plan_fusion_run(workspace: Workspace, config: TrainFusionConfig, ctx: DistContext | None = None) -> FusionPlan:
    """Resolve `resume` (run id, run folder, or a .pt inside or outside a run folder) and check the config.

    FileNotFoundError for a target that does not exist, ConfigError for a config changed outside
    RESUMABLE_CHANGES, CheckpointError for a foreign checkpoint that names no attribute.
    """
    ctx = ctx or DistContext()
    run_id = shared_run_id(STAGE, ctx)
    root = workspace.root / MODELS_DIR / run_id
    resume: dict[str, Path] = {}
    if config.resume:
        target = Path(config.resume).expanduser()
        if target.suffix == ".pt":
            if not target.is_file():
                raise FileNotFoundError(f"resume checkpoint not found: {target}")
            attribute_dir = target.parent.parent if target.parent.name == "checkpoints" else target.parent
            if (attribute_dir.parent / CONFIG_FILE).is_file() and attribute_dir.name in ATTRIBUTES:
                root = attribute_dir.parent
                resume = {**_continue_folder(root), attribute_dir.name: target}
            else:
                attribute = (load_checkpoint(target).get("sdgan") or {}).get("attribute")
                if attribute not in ATTRIBUTES:
                    raise CheckpointError(f"{target} names no attribute (an official checkpoint?): start from its "
                                          "weights with init=, or resume a train-fusion run folder")
                resume = {attribute: target}
        else:
            root = target if target.is_dir() else workspace.root / MODELS_DIR / str(config.resume)
            if not root.is_dir():
                raise FileNotFoundError(f"no run {config.resume!r}: {root} does not exist (give a run id from "
                                        f"{workspace.root / MODELS_DIR}, a run folder or a .pt checkpoint)")
            resume = _continue_folder(root)
    plan = FusionPlan(run_id, root, resume)
    if (saved := _read_json(root / CONFIG_FILE)) is not None:
        check_resume_config(saved["config"], config.to_dict(), RESUMABLE_CHANGES, inherited=("pairs", "init"))
        plan.pairs = (_read_json(root / DATASET_FILE) or {}).get("pairs_run")
    if ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)
    barrier(ctx)
    return plan


def _read_json(path: Path) -> Any | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# ---------------------------------------------------------------------------------------------- inputs
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_generator(pairs: PairsRun, device: torch.device, with_discriminator: bool) -> GeneratorHandle:
    """The generator that rendered the pairs (its sha256 must match pairs.json), frozen, with D when asked."""
    index = pairs.index
    path = Path(index.generator)
    if not path.is_file():
        raise FileNotFoundError(f"the generator of fusion-pairs run {pairs.run_id} is gone: {path} (sha256 "
                                f"{index.generator_sha256}); put it back or make the pairs again")
    if _sha256(path) != index.generator_sha256:
        raise ValueError(f"{path} changed since fusion-pairs run {pairs.run_id} rendered with it (sha256 differs "
                         "from pairs.json): train-fusion must edit with the same generator; make the pairs again")
    try:
        return GeneratorHandle.load(path, device=device, with_discriminator=with_discriminator)
    except CheckpointError as exc:
        if with_discriminator and "discriminator was asked for" in str(exc):
            raise CheckpointError(f"{exc}. train-fusion needs it for loss.realism > 0: set loss.realism=0 to train "
                                  "without the realism term") from exc
        raise


def truncation_mean(pairs: PairsRun, handle: GeneratorHandle) -> torch.Tensor:
    """The mean w the pairs were truncated towards (pairs.json's .npy; relative paths: in the pairs folder)."""
    if pairs.index.truncation_mean is None:
        return handle.mean_w().float()
    path = Path(pairs.index.truncation_mean)
    path = path if path.is_absolute() else pairs.folder / path
    mean = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
    if mean.numel() != handle.style_dim:
        raise ValueError(f"{path} holds {mean.numel()} values; the generator's style_dim is {handle.style_dim}")
    return mean.reshape(1, handle.style_dim).to(handle.device)


def attributes_to_train(config: TrainFusionConfig, pairs: PairsRun) -> list[str]:
    available = pairs.index.attributes
    wanted = list(config.attributes) if config.attributes is not None else [a for a in ATTRIBUTES if a in available]
    missing = [a for a in wanted if a not in available]
    if missing:
        raise ValueError(f"fusion-pairs run {pairs.run_id} has no pairs for {missing} (it has {available})")
    return wanted


def init_path(config: TrainFusionConfig, attribute: str) -> Path | None:
    """The fusion weights `init` names for `attribute` (a file for all, a run folder, or a mapping)."""
    if config.init is None:
        return None
    if isinstance(config.init, dict):
        return Path(config.init[attribute]).expanduser() if attribute in config.init else None
    path = Path(config.init).expanduser()
    if path.is_dir():
        path = path / attribute / LATEST
    if not path.is_file():
        raise FileNotFoundError(f"init weights for {attribute} not found: {path}")
    return path


def load_loss(config: TrainFusionConfig, handle: GeneratorHandle, device: torch.device, main: bool) -> FusionLoss:
    """FusionLoss with the optional networks the config names (ArcFace, LPIPS), said once in the log."""
    cfg = config.loss
    identity = lpips = None
    if cfg.identity > 0 and cfg.arcface:
        from training.fusion.identity import load_arcface

        identity = load_arcface(cfg.arcface, device)
    if cfg.lpips > 0 and cfg.lpips_vgg16:
        from training.fusion.perceptual import load_lpips

        lpips = load_lpips(cfg.lpips_vgg16, cfg.lpips_linear, device)
    loss = FusionLoss(cfg, handle.discriminator, identity, lpips)
    if main:
        off = [name for name, (weight, path) in {"identity": (cfg.identity, cfg.arcface),
                                                 "lpips": (cfg.lpips, cfg.lpips_vgg16)}.items()
               if weight > 0 and not path]
        log.info("loss terms: %s%s%s", ", ".join(loss.active),
                 f"; off for want of weights: {', '.join(off)} (set loss.arcface / loss.lpips_vgg16)" if off else "",
                 "; LPIPS without lpips_linear: equal channel weights" if lpips is not None and not lpips.calibrated
                 else "")
    return loss


# ---------------------------------------------------------------------------------------------- training
def _schedule(config: TrainFusionConfig) -> Schedule:
    cfg = config.schedule
    return Schedule(total_kimg=cfg.total_kimg, tick_kimg=cfg.tick_kimg, log_steps=cfg.log_steps,
                    checkpoint_kimg=cfg.checkpoint_kimg, keep_checkpoints=cfg.keep_checkpoints,
                    sample_kimg=cfg.sample_kimg)


def _batches(trainer: FusionTrainer, shards: list[Path], counts: list[int]) -> Iterator[dict[str, Any]]:
    """This rank's batches, continuing exactly after the ones a resumed run already consumed."""
    data, state, seed = trainer.config.data, trainer.state, trainer.config.runtime.seed
    start = state.step if data.exact_resume else 0
    return pair_batches(shards, counts, trainer.attribute, trainer.local_batch, start, num_workers=data.num_workers,
                        shuffle_buffer=data.shuffle_buffer,
                        seed=seed if data.exact_resume or state.step == 0 else seed + state.step,
                        rank=trainer.ctx.rank, world_size=trainer.ctx.world_size)


@dataclass
class Shared:
    """What every attribute's training shares."""

    pairs: PairsRun
    arch: FusionArch
    editor: Editor
    loss: FusionLoss
    train_shards: list[Path]
    train_counts: list[int]
    test_shards: list[Path]


def train_attribute(config: TrainFusionConfig, plan: FusionPlan, inputs: Shared, attribute: str,
                    device: torch.device, ctx: DistContext,
                    progress: ProgressCallback | None) -> tuple[FusionTrainer, RunFolder, dict[str, Any]]:
    """Train (or continue, or skip when finished) one attribute's network; evaluate it on rank 0."""
    folder = RunFolder(plan.root / attribute)
    if ctx.is_main:
        folder.create()
    barrier(ctx)
    grid = (read_pairs(inputs.test_shards, attribute, config.schedule.grid_rows)
            if ctx.is_main and config.schedule.sample_kimg is not None else [])
    trainer = FusionTrainer(config, attribute, inputs.arch, inputs.editor, inputs.loss, device, ctx,
                            train_pairs=sum(inputs.train_counts), grid_pairs=grid)
    resume_from = plan.resume.get(attribute)
    if resume_from is None and (init := init_path(config, attribute)) is not None:
        trainer.init_from(init)
        if ctx.is_main:
            log.info("%s: starting from the fusion weights in %s", attribute, init)
    loop = FusionLoop(trainer, folder, _schedule(config), lambda: _batches(trainer, inputs.train_shards,
                                                                           inputs.train_counts),
                      name=STAGE, checkpoint_extra={"pairs_run": inputs.pairs.run_id}, tick_fields=TICK_FIELDS,
                      progress=progress)
    if resume_from is not None:
        loop.resume(resume_from)
    state = trainer.state
    if state.images_seen < loop.total_images:
        result = loop.run()
    else:
        if ctx.is_main:
            log.info("%s: already trained to kimg %.3f, nothing to do", attribute, state.images_seen / 1000)
            if not (folder.root / LATEST).is_file():  # killed between snapshot and mirror, or resumed from elsewhere
                latest = folder.latest_checkpoint() or trainer.save(folder.checkpoint_path(state.images_seen),
                                                                    dict(loop.checkpoint_extra))
                mirror_latest(latest, folder.root / LATEST)
        result = {"steps": state.step, "images_seen": state.images_seen, "kimg": round(state.images_seen / 1000, 3)}
    if ctx.is_main:
        result["test"] = trainer.evaluate(held_out_batches(inputs.test_shards, attribute, config.eval.pairs,
                                                           config.eval.batch))
        result["test_pairs"] = trainer.evaluated
        last = folder.read_stats()
        result["train"] = {k: v for k, v in (last[-1] if last else {}).items() if k.startswith("loss")}
    return trainer, folder, result


# ---------------------------------------------------------------------------------------------- reporting
def report_markdown(report: dict[str, Any]) -> str:
    """report.json as a table: held-out means per attribute, then the last training window."""
    terms = sorted({k for entry in report["attributes"].values() for k in entry["test"]})
    weights = ", ".join(f"{k} {v:g}" for k, v in report["loss_weights"].items())
    header = f"Pairs: fusion-pairs run `{report['pairs_run']}`; loss terms {', '.join(report['loss_terms'])} "
    legend = "Held-out (test split) means; `basis_image_l1` is G(w + n_b) against the GT (InterfaceGAN alone), "
    lines = ["# train-fusion: one fusion network per attribute", "", header + f"(weights: {weights}).", "",
             legend + "`loss_image_l1` is ours, G(w + n_b + n_o).", "",
             "| attribute | steps | kimg | test pairs | " + " | ".join(terms) + " |",
             "|---|---|---|---|" + "---|" * len(terms)]
    for attribute, entry in report["attributes"].items():
        values = " | ".join(f"{entry['test'][t]:.4f}" if t in entry["test"] else "n/a" for t in terms)
        lines.append(f"| {attribute} | {entry['steps']} | {entry['kimg']:.3f} | {entry['test_pairs']} | {values} |")
    lines += ["", "Last training window:"]
    lines += [f"- {a}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(e["train"].items()))
              for a, e in report["attributes"].items()]
    return "\n".join(lines) + "\n"


def _record(run_ctx: StageRun, plan: FusionPlan, config: TrainFusionConfig, pairs: PairsRun,
            results: dict[str, tuple[RunFolder, dict[str, Any]]], loss: FusionLoss) -> None:
    root = plan.root
    report = {"pairs_run": pairs.run_id, "loss_terms": loss.active,
              "loss_weights": {k: v for k, v in config.loss.model_dump().items() if isinstance(v, float)},
              "attributes": {a: {"steps": r["steps"], "kimg": r["kimg"], "test_pairs": r["test_pairs"],
                                 "test": r["test"], "train": r["train"]} for a, (_, r) in results.items()}}
    atomic_write_text(root / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    atomic_write_text(root / "report.md", report_markdown(report))
    for name in (CONFIG_FILE, DATASET_FILE, "report.json", "report.md"):
        run_ctx.add_file(name, root / name)
    for attribute, (folder, result) in results.items():
        run_ctx.add_file(f"checkpoint_{attribute}", folder.root / LATEST)
        run_ctx.add_file(f"stats_{attribute}", folder.stats_path, volatile=True)
        grids = sorted(folder.grids.glob("fakes-*.png"))
        if grids:
            run_ctx.add_file(f"grid_{attribute}", grids[-1])
        run_ctx.manifest.counts.update({f"{attribute}_steps": result["steps"], f"{attribute}_kimg": result["kimg"]})
        for key in ("loss_image_l1", "basis_image_l1"):
            if key in result["test"]:
                run_ctx.manifest.counts[f"{attribute}_test_{key.removeprefix('loss_')}"] = round(result["test"][key], 6)


def _scaled(progress: ProgressCallback | None, index: int, count: int, attribute: str) -> ProgressCallback | None:
    if progress is None:
        return None
    return lambda fraction, line: progress((index + fraction) / count, f"{attribute}: {line}")


def run(config: TrainFusionConfig, workspace: Workspace, inputs: Sequence[Manifest] = (), *,
        progress: ProgressCallback | None = None) -> Manifest | None:
    """Train (or resume) every attribute's network; the stage manifest on rank 0, None on other ranks.

    `progress(fraction, line)` is called on rank 0 at every tick (fraction over all attributes) and at the end;
    the same lines go to the logger `sdgan.train-fusion`.
    """
    # a resume trains on the run's saved config plus the --set values given with it
    config = resumed_config(workspace, MODELS_DIR, config, RESUMABLE_CHANGES, inherited=("pairs", "init"))
    with kept_torch_threads():
        return _run(config, workspace, inputs, progress)


def _run(config: TrainFusionConfig, workspace: Workspace, inputs: Sequence[Manifest],
         progress: ProgressCallback | None) -> Manifest | None:
    device, ctx = setup_runtime(config.runtime.device, config.runtime.threads)
    if ctx.is_main and device.type != "cuda" and (config.runtime.compile or config.runtime.amp):
        log.info("runtime.amp / runtime.compile apply on CUDA only: ignored on %s", device)
    plan = plan_fusion_run(workspace, config, ctx)
    pairs = find_pairs_run(workspace, config.pairs or plan.pairs, inputs)
    if plan.pairs is not None and pairs.run_id != plan.pairs:
        raise ConfigError(f"cannot resume: the run trained on fusion-pairs run {plan.pairs}, not {pairs.run_id}")
    attributes = attributes_to_train(config, pairs)
    handle = load_generator(pairs, device, with_discriminator=config.loss.realism > 0)
    editor = Editor(handle.generator, truncation_mean(pairs, handle), pairs.index.truncation,
                    str(pairs.index.extra.get("noise_mode", "const")))
    train_shards = pairs.shards(config.data.split)
    test_shards = pairs.shards("test") if pairs.index.shards.get("test") else []
    if ctx.is_main and not test_shards:
        log.warning("fusion-pairs run %s has no test split: no grids and no held-out evaluation", pairs.run_id)
    shared = Shared(pairs, resolve_arch(config.arch, pairs.index, handle), editor,
                    load_loss(config, handle, device, ctx.is_main), train_shards, shard_counts(train_shards),
                    test_shards)
    booked = [pairs.manifest] if pairs.manifest is not None else []
    books = stage_run(workspace, STAGE, config, booked, run_id=plan.run_id) if ctx.is_main else nullcontext()
    with books as run_ctx:
        if ctx.is_main and plan.is_new_folder:
            config.save(plan.root)
            _write_json(plan.root / DATASET_FILE, {
                "pairs_run": pairs.run_id, "split": config.data.split, "shards": [p.name for p in train_shards],
                "test_shards": [p.name for p in test_shards], "generator_sha256": pairs.index.generator_sha256,
                "truncation": pairs.index.truncation, "attributes": attributes})
        results: dict[str, tuple[RunFolder, dict[str, Any]]] = {}
        for index, attribute in enumerate(attributes):
            if ctx.is_main:
                log.info("training %s (%d/%d)", attribute, index + 1, len(attributes))
            _, folder, result = train_attribute(config, plan, shared, attribute, device, ctx,
                                                _scaled(progress, index, len(attributes), attribute))
            results[attribute] = (folder, result)
        if run_ctx is not None:
            _record(run_ctx, plan, config, pairs, results, shared.loss)
    barrier(ctx)
    return run_ctx.manifest if run_ctx is not None else None


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

