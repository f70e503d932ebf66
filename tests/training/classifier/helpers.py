"""Shared by the classifier tests: real aligned faces (dlib on photos shipped in installed packages), a toy
dataset version of them with query labels and the metadata composites need, and a tiny config."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from alignment.ffhq import align
from data_catalog.config import load_config
from data_catalog.shards import ShardSample, encode_image, write_shards
from data_catalog.workspace import Workspace
from training.classifier.config import TrainClassifierConfig
from training.classifier.data import TemplatePool, make_composite
from training.classifier.model import ATTRIBUTES

VERSION = "v-faces"
CROP = 64  # stored crop side of the toy dataset


def _package_path(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    return Path(spec.submodule_search_locations[0], *parts)


@functools.lru_cache(maxsize=1)
def source_faces() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(photo RGB, 68 landmarks) of every face dlib finds in the astronaut, t1.jpg and Tom Hanks (x2)."""
    import dlib
    from skimage import data as skimage_data

    predictor = dlib.shape_predictor(str(_package_path("face_recognition_models", "models",
                                                       "shape_predictor_68_face_landmarks.dat")))
    detector = dlib.get_frontal_face_detector()
    photos = [np.ascontiguousarray(skimage_data.astronaut())]
    photos.append(np.asarray(Image.open(_package_path("insightface", "data", "images", "t1.jpg")).convert("RGB")))
    hanks = Image.open(_package_path("insightface", "data", "images", "Tom_Hanks_54745.png")).convert("RGB")
    photos.append(np.asarray(hanks.resize((hanks.width * 2, hanks.height * 2), Image.Resampling.LANCZOS)))
    faces = []
    for photo in photos:
        for rect in detector(photo, 1):
            shape = predictor(photo, rect)
            faces.append((photo, np.array([[p.x, p.y] for p in shape.parts()], np.float64)))
    assert len(faces) >= 6, f"dlib found only {len(faces)} faces"
    return tuple(faces)


@functools.lru_cache(maxsize=4)
def aligned_faces(size: int = CROP) -> tuple[tuple[np.ndarray, dict[str, Any]], ...]:
    """(aligned crop uint8, shard-style metadata with source landmarks68 and the crop -> source transform)."""
    out = []
    for photo, lm in source_faces():
        result = align(Image.fromarray(photo), lm, size)
        meta = {"landmarks68": lm.ravel().round(3).tolist(),
                "transform": np.asarray(result.transform).ravel().round(6).tolist()}
        out.append((np.asarray(result.image.convert("RGB"), np.uint8), meta))
    return tuple(out)


def crop_points(meta: dict[str, Any]) -> np.ndarray:
    from training.classifier.data import crop_landmarks

    points = crop_landmarks(meta, CROP)
    assert points is not None
    return points


def shifted(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small random translation and flip, so copies of one face are not pixel-identical."""
    dx, dy = rng.integers(-3, 4, 2)
    moved = np.roll(image, (int(dy), int(dx)), axis=(0, 1))
    return moved[:, ::-1].copy() if rng.random() < 0.5 else moved


def toy_workspace(root: Path, copies: int = 3, seed: int = 0) -> Workspace:
    """Dataset version `v-faces`: every real face `copies` times per class (clean = label 0, composited =
    labels 1..3), identities split train / val; clean samples carry landmarks and transform."""
    workspace = Workspace(root)
    folder = workspace.root / "primary" / "megn" / VERSION
    faces = aligned_faces(CROP)
    pool = TemplatePool(seed + 100, 2, 64)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[ShardSample]] = {"train": [], "val": []}
    for index, (image, meta) in enumerate(faces):
        split = "val" if index % 4 == 3 else "train"
        for copy in range(copies):
            for label in range(4):
                key = f"face{index:02d}_{copy}_{label}"
                pixels = image if label == 0 else make_composite(image, crop_points(meta), [ATTRIBUTES[label - 1]],
                                                                 pool, rng)
                metadata = {**meta, "attribute_id": label, "split": split} if label == 0 else {"attribute_id": label}
                splits[split].append(ShardSample(key=key, image=encode_image(pixels, "png"), image_ext="png",
                                                 metadata=metadata, label=label))
    for split, samples in splits.items():
        samples.sort(key=lambda s: s.key)
        write_shards(samples, folder, split, max_count=-(-len(samples) // 2))
    total = sum(len(s) for s in splits.values())
    (folder / "version.json").write_text(json.dumps({"version": VERSION, "samples": total}), encoding="utf-8")
    return workspace


def tiny_config(**overrides: Any) -> TrainClassifierConfig:
    """32 px, 8 channels, batch 16: a few ms a step on one CPU core."""
    base = ["dataset=" + VERSION, "model.resolution=32", "model.width=8", "model.max_width=16", "model.depth=1",
            "data.num_workers=0", "data.template_pool=2", "optim.batch=16", "optim.warmup_kimg=0",
            "schedule.total_kimg=0.128", "schedule.checkpoint_kimg=0.064", "schedule.sample_kimg=0.064",
            "schedule.tick_kimg=0.064", "schedule.log_steps=2", "schedule.grid_size=4", "runtime.device=cpu",
            "runtime.threads=1"]
    base += [f"{key}={value}" for key, value in overrides.items()]
    return load_config(TrainClassifierConfig, "demo", overrides=base)
