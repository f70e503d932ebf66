"""The fit-boundaries stage: G + attribute classifier -> InterfaceGAN boundaries in W, the test set and n_b.

`run(config, workspace, inputs)` samples N seeded w, scores G(w) with the classifier (resumable chunks, see
`sampling`), fits one boundary per attribute plus the conditional ones, draws a held-out test set of w with its
per-sample semantic prior basis n_b = (d - w·n)·n, and writes SD-GAN's JSON files. Output folder:
`models/boundaries/<run-id>/`. Under torchrun every rank samples its share of the chunks; rank 0 does the rest.

A run that was killed is continued by the next run with the same config (runtime section aside) and the same
generator and classifier files: it reuses the killed run's id and folder and recomputes only missing chunks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_catalog.atomic import atomic_write_bytes, atomic_write_text
from data_catalog.hashing import json_hash
from data_catalog.manifest import Manifest
from data_catalog.runs import MapBatches, new_run_id, stage_run
from data_catalog.workspace import Workspace
from training.boundaries import figures
from training.boundaries.config import FitBoundariesConfig
from training.boundaries.sampling import (
    ChunkJob,
    SamplingPlan,
    concatenate_chunks,
    prepare_folder,
    sample,
)
from training.boundaries.svm import fit_boundary, project_boundary, signed_distance
from training.common.distributed import barrier, setup_runtime
from training.common.images import image_grid
from training.common.resume import find_interrupted_run, shared_value

__all__ = ["MODELS_DIR", "STAGE", "FitBoundariesConfig", "basis_for", "run"]

STAGE = "fit-boundaries"
MODELS_DIR = Path("models") / "boundaries"
RESUME_FILE = "resume.json"
logger = logging.getLogger("sdgan.fit-boundaries")
ProgressCallback = Callable[[float, str], None]


def basis_for(latents: np.ndarray, normal: np.ndarray, distance: float) -> np.ndarray:
    """Per-sample n_b = (d - w·n)·n: w + n_b lies at signed distance d from the boundary (n unit norm).

    InterfaceGAN's `linear_interpolate` semantics for one target distance: every test face is moved to the same
    side and the same depth, however far it started; a constant alpha would leave faces that already show the
    attribute overshooting and the others short of it.
    """
    normal = np.asarray(normal, np.float64).reshape(1, -1)
    steps = distance - signed_distance(latents, normal)
    return (steps[:, None] * normal).astype(np.float32)


# ---------------------------------------------------------------------------------------------- inputs
def _upstream(workspace: Workspace, inputs: Sequence[Manifest], stage: str) -> Manifest | None:
    return next((m for m in inputs if m.stage == stage), None) or workspace.current(stage)


def _checkpoint_of(workspace: Workspace, manifest: Manifest | None, stage: str, key: str) -> Path:
    if manifest is None or "checkpoint" not in manifest.files:
        raise FileNotFoundError(f"fit-boundaries needs a {key}: set `{key}` (a checkpoint path, e.g. --{key} FILE) "
                                f"or run {stage} first (no completed {stage} run with a checkpoint in "
                                f"{workspace.root})")
    return workspace.resolve(manifest.files["checkpoint"].path)


def resolve_sources(config: FitBoundariesConfig, workspace: Workspace,
                    inputs: Sequence[Manifest]) -> tuple[Path, Path, list[Manifest]]:
    """(generator file, classifier file, the upstream manifests used): config paths win over upstream runs."""
    used: list[Manifest] = []
    if config.generator is not None:
        generator = Path(config.generator).expanduser()
    else:
        producer = _upstream(workspace, inputs, "train-stylegan2")
        generator = _checkpoint_of(workspace, producer, "train-stylegan2", "generator")
        used.append(producer)
    if config.classifier is not None:
        classifier = Path(config.classifier).expanduser()
    else:
        producer = _upstream(workspace, inputs, "train-classifier")
        classifier = _checkpoint_of(workspace, producer, "train-classifier", "classifier")
        used.append(producer)
    for path, what in ((generator, "generator"), (classifier, "classifier")):
        if not path.exists():
            raise FileNotFoundError(f"{what} checkpoint not found: {path}")
    used += [m for m in inputs if m.run_id not in {u.run_id for u in used}]
    return generator, classifier, used


def _file_digest(path: Path) -> str:
    from training.stylegan2.handle import resolve_checkpoint

    digest = hashlib.sha256()
    with open(resolve_checkpoint(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resume_key(config: FitBoundariesConfig, generator_sha: str, classifier_sha: str) -> str:
    """What must match for a new run to continue a killed one: config (runtime aside) and both model files."""
    data = config.to_dict()
    data.pop("runtime", None)
    data.pop("generator", None)
    data.pop("classifier", None)
    return json_hash({"config": data, "generator": generator_sha, "classifier": classifier_sha})


def find_interrupted(workspace: Workspace, key: str) -> str | None:
    """The newest run folder with the same resume key whose run never completed, if any."""
    return find_interrupted_run(workspace, STAGE, workspace.root / MODELS_DIR, key, RESUME_FILE)


# ---------------------------------------------------------------------------------------------- outputs
def _save_npy(path: Path, array: np.ndarray) -> Path:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_vectors_json(path: Path, rows: np.ndarray) -> Path:
    """SD-GAN's JSON layout: a list of style_dim floats per sample, in float32's shortest round-trip text."""
    lines = ["[" + ", ".join(str(value) for value in row) + "]" for row in np.asarray(rows, np.float32)]
    atomic_write_text(path, "[" + ",\n".join(lines) + "]\n")
    return path


def _distance_stats(distances: np.ndarray) -> dict[str, float]:
    q = np.percentile(distances, [1, 5, 50, 95, 99])
    return {"mean": float(distances.mean()), "std": float(distances.std()), "p01": float(q[0]),
            "p05": float(q[1]), "p50": float(q[2]), "p95": float(q[3]), "p99": float(q[4])}


def _report_markdown(report: dict[str, Any]) -> str:
    lines = ["# fit-boundaries: InterfaceGAN boundaries", "",
             f"{report['n_samples']} samples (truncation {report['truncation']}, noise {report['noise_mode']}); "
             f"generator `{report['generator']}`, classifier `{report['classifier']}`.", "",
             "| boundary | k per side | train acc | val acc | remaining acc | w·n mean | w·n std |",
             "|---|---|---|---|---|---|---|"]

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for name, entry in report["boundaries"].items():
        m, d = entry["svm"], entry["distance"]
        lines.append(f"| {name} | {m['chosen']} | {fmt(m['train_accuracy'])} | {fmt(m['val_accuracy'])} | "
                     f"{fmt(m['remaining_accuracy'])} | {d['mean']:.3f} | {d['std']:.3f} |")
    if report["conditional"]:
        lines += ["", "| conditional boundary | cos to primal | cos to conditions |", "|---|---|---|"]
        for name, entry in report["conditional"].items():
            conds = ", ".join(f"{k} {v:+.2e}" for k, v in entry["cos_conditions"].items())
            lines.append(f"| {name} | {entry['cos_primal']:.4f} | {conds} |")
    test = report["test_set"]
    lines += ["", f"Test set: {test['n']} w (z seeds {test['seed']}..{test['seed'] + test['n'] - 1}), "
              f"n_b = (d - w·n)·n with d = {test['distance']}.", "",
              "| kind | boundary | w file | n_b file |", "|---|---|---|---|"]
    for kind, entry in test["kinds"].items():
        lines.append(f"| {kind} | {entry['boundary']} | {entry['w_json']} | {entry['nb_json']} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- the stage
def run(config: FitBoundariesConfig, workspace: Workspace, inputs: Sequence[Manifest] = (), *,
        map_batches: MapBatches[ChunkJob] | None = None, progress: ProgressCallback | None = None) -> Manifest | None:
    """Sample, fit and write everything; the manifest on rank 0, None on other torchrun ranks.

    `map_batches` (from flows) fans the sampling chunks out as tasks; `progress(fraction, line)` is called as
    chunks complete (logger `sdgan.fit-boundaries` gets the same lines).
    """
    from training.classifier.scorer import AttributeScorer
    from training.stylegan2.handle import GeneratorHandle

    device, ctx = setup_runtime(config.runtime.device, config.runtime.threads)
    generator_path, classifier_path, used = resolve_sources(config, workspace, inputs)
    generator_sha, classifier_sha = _file_digest(generator_path), _file_digest(classifier_path)
    key = resume_key(config, generator_sha, classifier_sha)
    run_id = shared_value((find_interrupted(workspace, key) or new_run_id(STAGE)) if ctx.is_main else None, ctx)
    folder = workspace.root / MODELS_DIR / run_id
    handle = GeneratorHandle.load(generator_path, device=device)
    scorer = AttributeScorer.load(classifier_path, device=device)
    attributes = tuple(config.attributes or scorer.attributes)
    unknown = sorted({*attributes, *(a for c in config.conditional for a in (c.attribute, *c.conditions)),
                      *config.test_set.kinds.values()} - set(scorer.attributes) - {c.name for c in config.conditional})
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}: the classifier scores {list(scorer.attributes)}")
    missing_primal = [c.attribute for c in config.conditional if c.attribute not in attributes]
    missing_primal += [a for c in config.conditional for a in c.conditions if a not in attributes]
    if missing_primal:
        raise ValueError(f"conditional boundaries need {sorted(set(missing_primal))} among `attributes`")
    s = config.sampling
    plan = SamplingPlan(n_samples=s.n_samples, chunk_size=s.chunk_size, batch_size=s.batch_size,
                        truncation=s.truncation, noise_mode=s.noise_mode, seed=s.seed, style_dim=handle.style_dim,
                        attributes=tuple(scorer.attributes),
                        sources={"generator_sha256": generator_sha, "classifier_sha256": classifier_sha})
    bookkeeping = (stage_run(workspace, STAGE, config, used, run_id=run_id) if ctx.is_main
                   else contextlib.nullcontext())
    with bookkeeping as run_ctx:
        started = time.perf_counter()
        if ctx.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            config.save(folder)
            atomic_write_text(folder / RESUME_FILE, json.dumps({"key": key}, indent=2) + "\n")
            prepare_folder(folder, plan)
        barrier(ctx)
        counts = sample(folder, plan, handle=handle, scorer=scorer, generator=str(generator_path),
                        classifier=str(classifier_path), device=str(device), threads=config.runtime.threads,
                        rank=ctx.rank, world_size=ctx.world_size, map_batches=map_batches if ctx.is_main else None,
                        progress=progress if ctx.is_main else None, prepare=False)
        barrier(ctx)
        if run_ctx is not None:
            sampled = time.perf_counter() - started
            _finish(run_ctx, config, folder, plan, handle, attributes, counts, sampled,
                    str(generator_path), str(classifier_path), scorer, progress)
    barrier(ctx)
    return run_ctx.manifest if run_ctx is not None else None


def _finish(run_ctx: Any, config: FitBoundariesConfig, folder: Path, plan: SamplingPlan, handle: Any,
            attributes: tuple[str, ...], counts: dict[str, int], sampled_seconds: float, generator: str,
            classifier: str, scorer: Any, progress: ProgressCallback | None) -> None:
    """Rank 0: concatenate, fit, test set, JSONs, figures, report, manifest entries."""
    started = time.perf_counter()
    latents_path, scores_path = concatenate_chunks(folder, plan)
    latents, scores = np.load(latents_path), np.load(scores_path)
    column = {name: index for index, name in enumerate(plan.attributes)}
    svm = config.svm
    normals: dict[str, np.ndarray] = {}
    report: dict[str, Any] = {"n_samples": plan.n_samples, "truncation": plan.truncation,
                              "noise_mode": plan.noise_mode, "generator": generator, "classifier": classifier,
                              "attributes": list(plan.attributes), "boundaries": {}, "conditional": {}}
    for attribute in attributes:
        fit = fit_boundary(latents, scores[:, column[attribute]], svm.chosen_num_or_ratio, svm.split_ratio,
                           svm.invalid_value, svm.seed)
        normals[attribute] = fit.normal
        run_ctx.add_file(f"boundary_{attribute}", _save_npy(folder / f"boundary_{attribute}.npy", fit.normal))
        report["boundaries"][attribute] = {"svm": fit.metrics(),
                                           "distance": _distance_stats(signed_distance(latents, fit.normal))}
        run_ctx.manifest.counts[f"val_accuracy_{attribute}"] = fit.val_accuracy if fit.val_accuracy is not None else 0
        logger.info("fit-boundaries: %s: val accuracy %s, remaining accuracy %s", attribute,
                    fit.val_accuracy, fit.remaining_accuracy)
    for cond in config.conditional:
        normal = project_boundary(normals[cond.attribute], *(normals[c] for c in cond.conditions))
        normals[cond.name] = normal
        run_ctx.add_file(f"boundary_{cond.name}", _save_npy(folder / f"boundary_{cond.name}.npy", normal))
        report["conditional"][cond.name] = {
            "attribute": cond.attribute, "conditions": list(cond.conditions),
            "cos_primal": (normal @ normals[cond.attribute].T).item(),
            "cos_conditions": {c: (normal @ normals[c].T).item() for c in cond.conditions}}

    test = config.test_set
    seeds = list(range(test.seed, test.seed + test.n))
    test_w = handle.z_to_w(handle.z(seeds), truncation=1.0, batch_size=plan.batch_size).float().cpu().numpy()
    run_ctx.add_file("test_w", _save_npy(folder / "test_w.npy", test_w))
    report["test_set"] = {"n": test.n, "seed": test.seed, "distance": test.distance, "kinds": {}}
    for kind, boundary in test.kinds.items():
        n_b = basis_for(test_w, normals[boundary], test.distance)
        run_ctx.add_file(f"test_nb_{kind}", _save_npy(folder / f"test_nb_{kind}.npy", n_b))
        w_json, nb_json = f"w_{kind}_test_{test.n}.json", f"{kind}_interfacegan_test_{test.n}.json"
        run_ctx.add_file(w_json, write_vectors_json(folder / w_json, test_w))
        run_ctx.add_file(nb_json, write_vectors_json(folder / nb_json, n_b))
        report["test_set"]["kinds"][kind] = {"boundary": boundary, "w_json": w_json, "nb_json": nb_json}

    _figures(run_ctx, config, folder, plan, handle, scorer, latents, scores, column, normals, attributes, test_w)
    atomic_write_text(folder / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    atomic_write_text(folder / "report.md", _report_markdown(report))
    timings = {"sampling_seconds": sampled_seconds, "fitting_seconds": time.perf_counter() - started,
               "samples_computed_this_run": counts["samples_now"], "chunks_done_before": counts["chunks_before"],
               "samples_per_second": counts["samples_now"] / sampled_seconds if sampled_seconds > 0 else None}
    atomic_write_text(folder / "timings.json", json.dumps(timings, indent=2) + "\n")
    for name in ("config.json", "report.json", "report.md"):
        run_ctx.add_file(name, folder / name)
    run_ctx.add_file("timings.json", folder / "timings.json", volatile=True)
    run_ctx.add_file("latents.npy", latents_path)
    run_ctx.add_file("scores.npy", scores_path)
    run_ctx.manifest.counts["n_samples"] = plan.n_samples
    run_ctx.manifest.counts["test_n"] = test.n
    line = (f"fit-boundaries: {len(normals)} boundaries from {plan.n_samples} samples; "
            + ", ".join(f"{a} val {report['boundaries'][a]['svm']['val_accuracy']}" for a in attributes))
    logger.info(line)
    if progress is not None:
        progress(1.0, line)


@torch.no_grad()
def _figures(run_ctx: Any, config: FitBoundariesConfig, folder: Path, plan: SamplingPlan, handle: Any, scorer: Any,
             latents: np.ndarray, scores: np.ndarray, column: dict[str, int], normals: dict[str, np.ndarray],
             attributes: tuple[str, ...], test_w: np.ndarray) -> None:
    """Per attribute: the score-vs-distance plot and the G(w + alpha·n) grid of the first test faces."""
    fig = config.figure
    rng = np.random.default_rng(0)
    shown = np.sort(rng.permutation(len(latents))[:fig.scatter_points])
    rows = torch.from_numpy(test_w[:fig.rows])
    alphas = torch.tensor(fig.alphas, dtype=torch.float32)
    for attribute in attributes:
        normal = normals[attribute]
        direction = torch.from_numpy(normal).reshape(1, 1, -1)
        edited = (rows[:, None, :] + alphas[None, :, None] * direction).reshape(-1, normal.shape[1])
        images = handle.synthesize(edited.to(handle.device), truncation=plan.truncation, noise_mode="const",
                                   batch_size=plan.batch_size)
        logits = scorer.logits(images)[:, column[attribute]].numpy().reshape(len(rows), len(alphas))
        grid_path = figures.label_grid(image_grid(images, columns=len(alphas)), fig.alphas, handle.size,
                                       folder / "figures" / f"edit_grid_{attribute}.png")
        distances = signed_distance(edited.numpy(), normal).reshape(len(rows), len(alphas))
        plot_path = figures.score_plot(signed_distance(latents[shown], normal), scores[shown, column[attribute]],
                                       [(distances[i], logits[i]) for i in range(len(rows))],
                                       f"{attribute}: classifier logit vs signed distance (psi {plan.truncation})",
                                       folder / "figures" / f"score_vs_distance_{attribute}.png")
        run_ctx.add_file(f"edit_grid_{attribute}", grid_path)
        run_ctx.add_file(f"score_plot_{attribute}", plot_path)
