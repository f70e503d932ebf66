"""A synthesis folder with planted differences, written in `inference.synthesis.layout` and booked as a completed
synthesize run, and a tiny classifier checkpoint: what the evaluate tests score.

Per sample i: the origin is seeded noise; the region is a centred square; the GT is the origin with the square
painted; SD-GAN's image *is* the GT (so its L1 / SSIM / background L1 are 0 / 1 / 0 exactly); InterfaceGAN's is
the origin brightened by SHIFT / 127.5 everywhere (so its background L1 to the origin is known in closed form).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from data_catalog.manifest import Manifest
from data_catalog.runs import new_run_id, stage_run
from data_catalog.workspace import Workspace
from inference.evaluation.config import EvaluateConfig
from inference.synthesis import layout
from inference.synthesis.config import SynthesizeConfig
from inference.synthesis.layout import SynthesisInfo, alpha_name, image_name

SIZE = 32
SHIFT = 12  # uint8 levels InterfaceGAN's images are brighter by
ARCH = {"resolution": 32, "num_attributes": 3, "width": 8, "max_width": 16, "depth": 1}


def eval_config(classifier: Path | None, **values: object) -> EvaluateConfig:
    """Small and quick: no FID reference, canonical landmarks, 200 resamples, one CPU thread."""
    data: dict = {"classifier": None if classifier is None else str(classifier), "reference": "none",
                  "identity": {"detector": "none"}, "bootstrap": {"resamples": 200},
                  "runtime": {"device": "cpu", "threads": 1}}
    data.update(values)
    return EvaluateConfig.model_validate(data)


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_synthesis(workspace: Workspace, n: int = 6, attribute: str = "face_mask", seed: int = 0,
                   inputs: Sequence[Manifest] = (), extra: dict | None = None) -> Manifest:
    """`inputs`: the runs booked as the synthesis's upstream (its lineage); `extra`: SynthesisInfo.extra."""
    rng = np.random.default_rng(seed)
    run_id = new_run_id("synthesize")
    folder = workspace.root / layout.SYNTHESES_DIR / run_id
    region = np.zeros((SIZE, SIZE), np.uint8)
    region[10:22, 8:24] = 255
    rows, sweep = [], []
    for i in range(n):
        origin = rng.integers(40, 200, (SIZE, SIZE, 3), dtype=np.uint8)
        gt = origin.copy()
        gt[region > 0] = (90, 160, 220)
        basis = np.clip(origin.astype(int) + SHIFT, 0, 255).astype(np.uint8)
        name = image_name(i)
        images = {"origin": origin, "interfacegan": basis, "sdgan": gt, "template_paste": gt}
        paths = {}
        for method, pixels in images.items():
            paths[method] = f"{attribute}/{layout.METHOD_FOLDERS[method]}/{name}"
            _save(folder / paths[method], pixels)
        paths["region"] = f"{attribute}/{layout.REGIONS}/{name}"
        _save(folder / paths["region"], region)
        rows.append({"attribute": attribute, "index": i, "name": name, "key": f"test_{i:08d}", "seed": i, **paths,
                     "nb_norm": 1.0, "no_norm": 0.5, "region_area": float(region.mean() / 255),
                     "landmark_source": "ffhq_canonical"})
        if i < 2:
            for method in ("interfacegan", "sdgan"):
                for alpha, pixels in ((0.0, origin), (1.0, images[method])):
                    path = f"{attribute}/{layout.STRENGTH}/{method}/{alpha_name(alpha)}/{name}"
                    _save(folder / path, pixels)
                    sweep.append({"attribute": attribute, "index": i, "method": method, "alpha": alpha, "path": path})
    _save(folder / attribute / layout.GRID_FILE, np.concatenate([origin, basis, gt, gt], axis=1))
    index = pd.DataFrame(rows, columns=list(layout.INDEX_COLUMNS))
    index.to_parquet(folder / layout.INDEX_FILE, index=False)
    pd.DataFrame(sweep, columns=list(layout.STRENGTH_COLUMNS)).to_parquet(folder / layout.STRENGTH_FILE, index=False)
    info = SynthesisInfo(source="files", attributes=[attribute], counts={attribute: n}, image_size=SIZE,
                         generator="g.pt", generator_sha256="0" * 64, truncation=0.5, noise_mode="const",
                         fusion={attribute: "f.pt"}, fusion_sha256={attribute: "0" * 64}, minmax=False,
                         strengths=[0.0, 1.0], strength_samples=2,
                         extra={"demo_generator": True} if extra is None else extra)
    (folder / layout.INFO_FILE).write_text(info.to_json())
    config = SynthesizeConfig(limit=n + seed)  # distinct configs for distinct syntheses
    with stage_run(workspace, "synthesize", config, list(inputs), run_id=run_id) as run:
        for name in (layout.INFO_FILE, layout.INDEX_FILE, layout.STRENGTH_FILE):
            run.add_file(name, folder / name)
        run.add_file(f"grid_{attribute}", folder / attribute / layout.GRID_FILE)
    return run.manifest


def write_classifier(path: Path, seed: int = 0) -> Path:
    import torch

    from training.classifier.model import ATTRIBUTES, build_classifier
    from training.classifier.scorer import AttributeScorer

    torch.manual_seed(seed)
    scorer = AttributeScorer(build_classifier(**ARCH), ATTRIBUTES, 32, temperature=1.0)
    scorer.arch = dict(ARCH)
    return scorer.save(path, extra={"sdgan": {"config": {"label_check": {"threshold": 0.6}}}})


def save_png(path: Path, pixels: np.ndarray) -> Path:
    _save(path, pixels)
    return path


def book_classifier_run(workspace: Workspace, checkpoint: Path) -> Manifest:
    """A completed train-classifier run that lists `checkpoint`, a report.json with val figures and a val grid."""
    import json

    from data_catalog.atomic import atomic_write_text
    from training.classifier.config import TrainClassifierConfig

    run_id = new_run_id("train-classifier")
    folder = workspace.root / "models" / "classifier" / run_id
    folder.mkdir(parents=True)
    figures = {"face_mask": {"precision": 0.9, "recall": 0.8, "auc": 0.95, "positives": 10, "negatives": 30},
               "sunglasses": {"precision": 0.5, "recall": 0.5, "auc": 0.5, "positives": 10, "negatives": 30}}
    report = {"figures": figures, "temperature": 1.5, "ece_before": 0.2, "ece_after": 0.05, "val_samples": 40,
              "attributes": list(figures)}
    atomic_write_text(folder / "report.json", json.dumps(report))
    grid = save_png(folder / "grid-val.png", np.full((16, 48, 3), 200, np.uint8))
    with stage_run(workspace, "train-classifier", TrainClassifierConfig(), [], run_id=run_id) as run:
        run.add_file("checkpoint", checkpoint)
        run.add_file("report.json", folder / "report.json")
        run.add_file("grid", grid)
    return run.manifest


def book_boundaries_run(workspace: Workspace, attributes: Sequence[str] = ("face_mask", "sunglasses")) -> Manifest:
    """A completed fit-boundaries run with an edit grid and a score plot per attribute and val accuracies."""
    from training.boundaries.config import FitBoundariesConfig

    run_id = new_run_id("fit-boundaries")
    folder = workspace.root / "models" / "boundaries" / run_id / "figures"
    with stage_run(workspace, "fit-boundaries", FitBoundariesConfig(), [], run_id=run_id) as run:
        for i, attribute in enumerate(attributes):
            run.add_file(f"edit_grid_{attribute}", save_png(folder / f"edit_grid_{attribute}.png",
                                                            np.full((16, 64, 3), 40 * i, np.uint8)))
            run.add_file(f"score_plot_{attribute}", save_png(folder / f"score_vs_distance_{attribute}.png",
                                                             np.full((24, 24, 3), 90 + 40 * i, np.uint8)))
            run.manifest.counts[f"val_accuracy_{attribute}"] = 0.875 + 0.01 * i
    return run.manifest


def write_dataset_version(workspace: Workspace, version: str, per_label: int = 6, seed: int = 0) -> Path:
    """A dataset version of 32 px noise faces: `per_label` train samples of each label 0..3 (no other split)."""
    import json

    from data_catalog.shards import ShardSample, encode_image, write_shards

    rng = np.random.default_rng(seed)
    folder = workspace.dataset_dir(version)
    samples = []
    for label in range(4):
        for i in range(per_label):
            pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            samples.append(ShardSample(key=f"s{label}_{i:03d}", image=encode_image(pixels, "png"), image_ext="png",
                                       metadata={"attribute_id": label}, label=label))
    write_shards(samples, folder, "train", max_count=len(samples))
    (folder / "version.json").write_text(json.dumps({"version": version, "samples": len(samples)}), encoding="utf-8")
    return folder
