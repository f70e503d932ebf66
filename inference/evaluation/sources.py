"""What evaluate reads, found and checked before any scoring: the synthesis, the classifier, the reference faces.

A synthesis is read only through `inference.synthesis.layout`; a folder that lacks its files, or an index that
names images that are not there, is one clear error here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from data_catalog.manifest import Manifest
from data_catalog.workspace import RunNotFound, Workspace
from inference.evaluation.config import NO_REFERENCE, EvaluateConfig
from inference.synthesis import layout
from inference.synthesis.layout import SynthesisInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class EvaluationInputError(ValueError):
    """The inputs cannot be scored: the message says which file and why."""


@dataclass
class SynthesisRun:
    folder: Path
    info: SynthesisInfo
    index: pd.DataFrame
    strength: pd.DataFrame
    manifest: Manifest | None

    @property
    def run_id(self) -> str:
        return self.manifest.run_id if self.manifest is not None else self.folder.name

    def rows(self, attribute: str) -> pd.DataFrame:
        return self.index[self.index["attribute"] == attribute].sort_values("index")


def _read_synthesis(folder: Path, manifest: Manifest | None) -> SynthesisRun:
    for name in (layout.INFO_FILE, layout.INDEX_FILE):
        if not (folder / name).is_file():
            raise EvaluationInputError(f"{folder} is not a complete synthesize run folder: {name} is missing")
    info = SynthesisInfo.read(folder)
    index = pd.read_parquet(folder / layout.INDEX_FILE)
    missing_columns = [c for c in layout.INDEX_COLUMNS if c not in index.columns]
    if missing_columns:
        raise EvaluationInputError(f"{folder / layout.INDEX_FILE} lacks the columns {missing_columns}")
    paths = [p for column in ("origin", "interfacegan", "sdgan", "template_paste", "region") for p in index[column]]
    absent = [p for p in paths if not (folder / p).is_file()]
    if absent:
        raise EvaluationInputError(f"{len(absent)} image(s) listed in {folder / layout.INDEX_FILE} are missing, "
                                   f"e.g. {absent[:3]}: the synthesis folder was changed; synthesize again")
    strength_file = folder / layout.STRENGTH_FILE
    strength = (pd.read_parquet(strength_file) if strength_file.is_file()
                else pd.DataFrame(columns=list(layout.STRENGTH_COLUMNS)))
    return SynthesisRun(folder, info, index, strength, manifest)


def find_synthesis(workspace: Workspace, config: EvaluateConfig, inputs: Sequence[Manifest]) -> SynthesisRun:
    name = config.synthesis
    if name is not None and Path(name).expanduser().is_dir():
        folder = Path(name).expanduser().resolve()
        producer = next((m for m in reversed(workspace.manifests("synthesize")) if layout.INFO_FILE in m.files
                         and workspace.resolve(m.files[layout.INFO_FILE].path).parent.resolve() == folder), None)
        return _read_synthesis(folder, producer)
    try:
        manifest = workspace.chosen_run("synthesize", name, inputs)
    except RunNotFound as exc:
        raise EvaluationInputError(str(exc)) from None
    if manifest is None:
        raise EvaluationInputError(f"no synthesize run in {workspace.root}: run synthesize first, or give "
                                   "`synthesis` (a run id or a synthesize run folder)")
    if layout.INFO_FILE not in manifest.files:
        raise EvaluationInputError(f"synthesize run {manifest.run_id} lists no {layout.INFO_FILE}")
    return _read_synthesis(workspace.resolve(manifest.files[layout.INFO_FILE].path).parent, manifest)


def find_classifier(workspace: Workspace, config: EvaluateConfig, inputs: Sequence[Manifest]
                    ) -> tuple[Path, Manifest | None]:
    if config.classifier is not None:
        path = Path(config.classifier).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"classifier checkpoint not found: {path}")
        return path.resolve(), None
    manifest = next((m for m in inputs if m.stage == "train-classifier"), None) or workspace.current("train-classifier")
    if manifest is None or "checkpoint" not in manifest.files:
        raise EvaluationInputError(f"evaluate scores attribute success with the attribute classifier: run "
                                   f"train-classifier first or set `classifier` (no completed run in {workspace.root})")
    return workspace.resolve(manifest.files["checkpoint"].path), manifest


# ---------------------------------------------------------------------------------------------- reference faces
@dataclass
class Reference:
    """Real faces per attribute for FID / KID (uint8 NCHW), or why there are none."""

    images: dict[str, torch.Tensor]
    source: str
    reason: str | None = None
    manifest: Manifest | None = None


def _folder_images(folder: Path, limit: int) -> torch.Tensor:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise EvaluationInputError(f"reference folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    arrays = []
    for path in files:
        with Image.open(path) as image:
            arrays.append(np.asarray(image.convert("RGB")))
    sizes = {a.shape for a in arrays}
    if len(sizes) != 1:
        raise EvaluationInputError(f"reference images in {folder} have different sizes {sorted(sizes)[:3]}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_reference(workspace: Workspace, config: EvaluateConfig, attributes: Sequence[str],
                   inputs: Sequence[Manifest]) -> Reference:
    """The MEGN faces labelled with each attribute (a dataset version), or one folder for every attribute."""
    if config.reference == NO_REFERENCE:
        return Reference({}, NO_REFERENCE, "reference: none (no real faces to compare with)")
    if config.reference is not None and Path(config.reference).expanduser().is_dir() and \
            not (Path(config.reference).expanduser() / "version.json").is_file():
        folder = Path(config.reference).expanduser().resolve()
        images = _folder_images(folder, config.reference_limit)
        return Reference({a: images for a in attributes}, str(folder))
    from data_catalog.loader import list_shards, make_loader
    from training.common.resume import DatasetNotFound, resolve_dataset
    from training.fusion_pairs.format import ATTRIBUTES

    version = config.reference
    if version is not None and Path(version).expanduser().is_dir():
        version = Path(version).expanduser().name
    try:
        version_id, folder, producer = resolve_dataset(workspace, version, inputs)
    except DatasetNotFound as exc:
        if version is not None:  # a version the user named: a typo is an error, not a silently skipped FID
            raise EvaluationInputError(f"reference: {exc}") from None
        return Reference({}, "none", f"no MEGN dataset version to compare with ({exc})")
    try:
        shards = list_shards(folder, config.reference_split)
    except FileNotFoundError as exc:
        raise EvaluationInputError(f"reference dataset {version_id}: {exc}") from None
    wanted = {ATTRIBUTES.index(a) + 1: a for a in attributes}
    found: dict[str, list[torch.Tensor]] = {a: [] for a in attributes}
    for batch in make_loader(shards, 64, num_workers=0, rank=0, world_size=1, image_dtype="uint8"):
        for image, label in zip(batch["image"], batch["label"].tolist()):
            attribute = wanted.get(int(label))
            if attribute is not None and len(found[attribute]) < config.reference_limit:
                found[attribute].append(image)
    images = {a: torch.stack(v) for a, v in found.items() if v}
    empty = [a for a in attributes if a not in images]
    reason = f"dataset {version_id} has no {config.reference_split} faces labelled {empty}" if empty else None
    return Reference(images, f"MEGN {version_id} ({config.reference_split})", reason, producer)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float in [-1, 1]."""
    return images.float() / 127.5 - 1


def read_images(folder: Path, paths: Sequence[str]) -> torch.Tensor:
    """uint8 NCHW (RGB) or N1HW (L) of the listed files."""
    arrays = []
    for path in paths:
        with Image.open(folder / path) as image:
            arrays.append(np.asarray(image).copy())
    array = np.stack(arrays)
    array = array[..., None] if array.ndim == 3 else array
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


__all__ = ["EvaluationInputError", "Reference", "SynthesisRun", "find_classifier", "find_synthesis",
           "load_reference", "read_images", "to_float"]
