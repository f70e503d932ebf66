"""Where synthesize's inputs come from, checked before anything is written.

`resolve(config, workspace, inputs)` turns a SynthesizeConfig into a `Sources`: the generator, truncation and
noise the edits are rendered with, one fusion checkpoint per attribute, and either the fusion-pairs run whose test
split is the test set (source "pairs") or the test vectors read from the official JSON / our .npy files with the
models that make the network's inputs (source "files"). Every problem is one clear error here: a missing file, a
checkpoint of the wrong kind or shape, test files of mismatched length or dimension, a missing template.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_catalog.hashing import sha256_file
from data_catalog.manifest import Manifest
from data_catalog.workspace import RunNotFound, Workspace
from inference.synthesis.config import OFFICIAL_KIND, SynthesizeConfig
from training.fusion_pairs.format import ATTRIBUTES

OFFICIAL_TRUNCATION = 0.5  # the official infer_face's psi
FUSION_LATEST = "checkpoint_latest.pt"


class SynthesisInputError(ValueError):
    """The inputs cannot make a synthesis: the message says which file and why."""


@dataclass
class Sources:
    source: str  # pairs | files
    attributes: list[str]
    generator: Path
    truncation: float
    noise_mode: str
    fusion: dict[str, Path]  # attribute -> checkpoint
    mean_w: np.ndarray | None = None  # (1, w_dim) truncation centre; None: computed from the generator (files)
    pairs: Any = None  # training.fusion.data.PairsRun (source "pairs")
    fusion_run: Manifest | None = None
    test_w: np.ndarray | None = None  # (N, w_dim) float32 (source "files")
    test_nb: dict[str, np.ndarray] = field(default_factory=dict)
    test_files: dict[str, str] = field(default_factory=dict)
    unsup3d: Path | None = None
    used: list[Manifest] = field(default_factory=list)  # upstream runs this synthesis read

    def count(self, attribute: str, limit: int | None) -> int:
        if self.source == "pairs":
            total = self.pairs.index.counts.get("test", 0)
        else:
            total = len(self.test_w)
        return min(total, limit) if limit is not None else total


# ---------------------------------------------------------------------------------------------- test vectors
def read_vectors(path: str | Path, what: str) -> np.ndarray:
    """(N, D) float32 from the official JSON (a list of N lists of D numbers) or a .npy; checked finite."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise SynthesisInputError(f"{what} {path} is not a readable .npy file ({exc})") from exc
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SynthesisInputError(f"{what} {path} is not JSON ({exc}); expected a list of vectors, as the "
                                      "official w_<kind>_test_<N>.json") from exc
        if not isinstance(data, list) or not data or not all(isinstance(row, list) for row in data):
            raise SynthesisInputError(f"{what} {path} must be a non-empty JSON list of vectors (lists of numbers)")
        lengths = sorted({len(row) for row in data})
        if len(lengths) != 1:
            raise SynthesisInputError(f"{what} {path}: vectors of different lengths {lengths[:5]}")
        try:
            array = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SynthesisInputError(f"{what} {path} holds values that are not numbers ({exc})") from exc
    if array.ndim == 3 and array.shape[1] == 1:  # (N, 1, D), as boundaries are sometimes stored
        array = array[:, 0]
    if array.ndim != 2 or array.shape[0] == 0:
        raise SynthesisInputError(f"{what} {path} has shape {array.shape}; expected (N, w_dim)")
    if not np.isfinite(array).all():
        raise SynthesisInputError(f"{what} {path} holds NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def _nb_path(config: SynthesizeConfig, attribute: str) -> str:
    if isinstance(config.test_nb, dict):
        if attribute not in config.test_nb:
            raise SynthesisInputError(f"test_nb names no file for {attribute} (it has {sorted(config.test_nb)})")
        return config.test_nb[attribute]
    return str(config.test_nb)


def read_test_set(config: SynthesizeConfig, attributes: Sequence[str], w_dim: int
                  ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    """(test w, n_b per attribute, the files they came from), with the lengths and the dimension checked."""
    w = read_vectors(config.test_w, "test_w")
    files = {"test_w": str(Path(config.test_w).expanduser().resolve())}
    if w.shape[1] != w_dim:
        raise SynthesisInputError(f"test_w {config.test_w} holds {w.shape[1]}-d vectors but the generator's w has "
                                  f"{w_dim} dimensions: it belongs to another generator")
    nb = {}
    for attribute in attributes:
        path = _nb_path(config, attribute)
        vectors = read_vectors(path, f"test_nb for {attribute}")
        if vectors.shape != w.shape:
            raise SynthesisInputError(
                f"test_nb for {attribute} ({path}) has shape {vectors.shape} but test_w ({config.test_w}) has "
                f"{w.shape}: one n_b per test w, same dimension (official: {OFFICIAL_KIND[attribute]}_interfacegan_"
                f"test_<N>.json goes with w_{OFFICIAL_KIND[attribute]}_test_<N>.json)")
        nb[attribute] = vectors
        files[f"test_nb_{attribute}"] = str(Path(path).expanduser().resolve())
    return w, nb, files


# ---------------------------------------------------------------------------------------------- fusion weights
def _fusion_from_folder(folder: Path, attributes: Sequence[str] | None) -> dict[str, Path]:
    found = {a: folder / a / FUSION_LATEST for a in ATTRIBUTES if (folder / a / FUSION_LATEST).is_file()}
    if attributes is not None:
        missing = [a for a in attributes if a not in found]
        if missing:
            raise FileNotFoundError(f"{folder} holds no {FUSION_LATEST} for {missing} "
                                    f"(it has {sorted(found) or 'none'})")
        return {a: found[a] for a in attributes}
    if not found:
        raise FileNotFoundError(f"{folder} holds no <attribute>/{FUSION_LATEST}: not a train-fusion run folder")
    return found


def fusion_checkpoints(fusion: str | dict[str, str], attributes: Sequence[str] | None) -> dict[str, Path]:
    """attribute -> checkpoint from a file (needs the attributes named), a run folder, or a mapping."""
    if isinstance(fusion, dict):
        paths = {a: Path(p).expanduser() for a, p in fusion.items()}
        if attributes is not None:
            missing = [a for a in attributes if a not in paths]
            if missing:
                raise SynthesisInputError(f"fusion names no checkpoint for {missing} (it has {sorted(paths)})")
            paths = {a: paths[a] for a in attributes}
    else:
        path = Path(fusion).expanduser()
        if path.is_dir():
            return _fusion_from_folder(path, attributes)
        if attributes is None:
            raise SynthesisInputError(f"one fusion checkpoint ({path}) was given for every attribute: say which "
                                      "attribute it edits (attributes / --attribute)")
        paths = {a: path for a in attributes}
    for attribute, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"fusion checkpoint for {attribute} not found: {path}")
    return paths


def _fusion_run(workspace: Workspace, config: SynthesizeConfig, inputs: Sequence[Manifest]
                ) -> tuple[Manifest | None, Path]:
    """(the train-fusion run, its folder) from `fusion_run` (id or folder), the upstream run, or the current."""
    name = config.fusion_run
    if name is not None and Path(name).expanduser().is_dir():
        folder = Path(name).expanduser().resolve()
        for manifest in reversed(workspace.manifests("train-fusion")):
            if _run_folder(workspace, manifest) == folder:
                return manifest, folder
        return None, folder
    try:
        manifest = workspace.chosen_run("train-fusion", name, inputs)
    except RunNotFound as exc:
        raise SynthesisInputError(str(exc)) from None
    if manifest is None:
        raise SynthesisInputError(
            f"no train-fusion run in {workspace.root}: run train-fusion first, or give the official files "
            "(test_w, test_nb, fusion, generator, unsup3d; see `sdgan synthesize --help`)")
    folder = _run_folder(workspace, manifest)
    if folder is None:
        raise SynthesisInputError(f"train-fusion run {manifest.run_id} lists no dataset.json")
    return manifest, folder


def _run_folder(workspace: Workspace, manifest: Manifest) -> Path | None:
    entry = manifest.files.get("dataset.json")
    return workspace.resolve(entry.path).parent.resolve() if entry is not None else None


# ---------------------------------------------------------------------------------------------- resolve
def _from_pairs(config: SynthesizeConfig, workspace: Workspace, inputs: Sequence[Manifest]) -> Sources:
    from training.fusion.data import find_pairs_run

    manifest, folder = _fusion_run(workspace, config, inputs)
    dataset_file = folder / "dataset.json"
    if not dataset_file.is_file():
        raise SynthesisInputError(f"{folder} is not a train-fusion run folder (no dataset.json)")
    dataset = json.loads(dataset_file.read_text(encoding="utf-8"))
    pairs = find_pairs_run(workspace, dataset["pairs_run"], inputs)
    if not pairs.index.shards.get("test"):
        raise SynthesisInputError(f"fusion-pairs run {pairs.run_id} has no test split (made with test: false): "
                                  "nothing held out to synthesize; remake the pairs with test: true")
    trained = [a for a in ATTRIBUTES if (folder / a / FUSION_LATEST).is_file()]
    attributes = list(config.attributes) if config.attributes is not None else trained
    if config.fusion is not None:
        fusion = fusion_checkpoints(config.fusion, attributes)
    else:
        fusion = _fusion_from_folder(folder, attributes)
    missing = [a for a in attributes if a not in pairs.index.attributes]
    if missing:
        raise SynthesisInputError(f"fusion-pairs run {pairs.run_id} has no pairs for {missing} "
                                  f"(it has {pairs.index.attributes})")
    generator = Path(pairs.index.generator)
    if not generator.is_file():
        raise FileNotFoundError(f"the generator of fusion-pairs run {pairs.run_id} is gone: {generator}")
    if sha256_file(generator) != pairs.index.generator_sha256:
        raise SynthesisInputError(f"{generator} changed since fusion-pairs run {pairs.run_id} rendered with it")
    mean = None
    if pairs.index.truncation_mean is not None:
        path = Path(pairs.index.truncation_mean)
        mean = np.load(path if path.is_absolute() else pairs.folder / path, allow_pickle=False).astype(np.float32)
    used = [m for m in (manifest, pairs.manifest) if m is not None]
    used += [m for m in inputs if m.run_id not in {u.run_id for u in used}]
    return Sources(source="pairs", attributes=attributes, generator=generator,
                   truncation=config.truncation or pairs.index.truncation,
                   noise_mode=str(pairs.index.extra.get("noise_mode", "const")), fusion=fusion, mean_w=mean,
                   pairs=pairs, fusion_run=manifest, used=used)


def _from_files(config: SynthesizeConfig, inputs: Sequence[Manifest]) -> Sources:
    generator = Path(config.generator).expanduser()
    unsup3d = Path(config.unsup3d).expanduser()
    for what, path in (("StyleGAN2 checkpoint (generator)", generator), ("Unsup3d checkpoint", unsup3d)):
        if not path.is_file():
            raise FileNotFoundError(f"{what} not found: {path}")
    attributes = list(config.attributes) if config.attributes is not None else None
    if attributes is None and isinstance(config.fusion, dict):
        attributes = [a for a in ATTRIBUTES if a in config.fusion]
    fusion = fusion_checkpoints(config.fusion, attributes)
    attributes = list(fusion)
    return Sources(source="files", attributes=attributes, generator=generator.resolve(),
                   truncation=config.truncation or OFFICIAL_TRUNCATION, noise_mode="const",
                   fusion={a: p.resolve() for a, p in fusion.items()}, unsup3d=unsup3d.resolve(), used=list(inputs))


def resolve(config: SynthesizeConfig, workspace: Workspace, inputs: Sequence[Manifest] = ()) -> Sources:
    if config.resolved_source == "pairs":
        return _from_pairs(config, workspace, inputs)
    return _from_files(config, inputs)


def finite_norms(vectors: np.ndarray) -> list[float]:
    """Row norms rounded for a table (6 digits; NaN stays NaN)."""
    return [round(float(v), 6) if math.isfinite(v) else float("nan") for v in np.linalg.norm(vectors, axis=-1)]


__all__ = ["FUSION_LATEST", "OFFICIAL_TRUNCATION", "Sources", "SynthesisInputError", "finite_norms",
           "fusion_checkpoints", "read_test_set", "read_vectors", "resolve"]
