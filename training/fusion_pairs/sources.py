"""What the pairs are made from: the fit-boundaries run, the generator its boundaries belong to, and Unsup3d.

The boundaries are normals in the W space of one generator, so by default the pairs are rendered by that very
generator: the file the boundaries run recorded (report.json's path, checked against the sha256 in its
chunks/plan.json), or, when that path is gone (a moved workspace), the checkpoint of the train-stylegan2 run
the boundaries run took as input, if its sha256 matches. A `generator` path in the config overrides it (and a
different file is reported, since the boundaries then belong to another W space).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_catalog.hashing import sha256_file
from data_catalog.manifest import Manifest
from data_catalog.workspace import RunNotFound, Workspace
from training.fusion_pairs.config import FusionPairsConfig

logger = logging.getLogger("sdgan.fusion-pairs")

BOUNDARIES = "fit-boundaries"
UNSUP3D = "train-unsup3d"
STYLEGAN2 = "train-stylegan2"
# The official test kinds (fit-boundaries' test_set.kinds keys) and the attribute each stands for.
KIND_OF = {"face_mask": "mask", "sunglasses": "glasses", "frame_glasses": "frame_glasses"}


class SourceError(FileNotFoundError):
    """An upstream run or file the pairs need is missing or does not match what it should be."""


@dataclass(frozen=True)
class BoundariesRun:
    """A completed fit-boundaries run: its manifest, folder and saved config."""

    workspace: Workspace
    manifest: Manifest
    folder: Path
    config: dict[str, Any]

    def file(self, name: str) -> Path:
        entry = self.manifest.files.get(name)
        if entry is None:
            raise SourceError(f"fit-boundaries run {self.manifest.run_id} has no {name!r} output (it has "
                              f"{sorted(self.manifest.files)}); run fit-boundaries again")
        path = self.workspace.resolve(entry.path)
        if not path.is_file():
            raise SourceError(f"{path} (output {name!r} of fit-boundaries run {self.manifest.run_id}) is missing")
        return path

    def sha256(self, name: str) -> str:
        return self.manifest.files[name].sha256

    @property
    def sampling_seeds(self) -> range:
        sampling = self.config.get("sampling", {})
        start = int(sampling.get("seed", 0))
        return range(start, start + int(sampling.get("n_samples", 0)))

    @property
    def test_seeds(self) -> range:
        test = self.config.get("test_set", {})
        start = int(test.get("seed", 0))
        return range(start, start + int(test.get("n", 0)))

    @property
    def test_distance(self) -> float:
        return float(self.config.get("test_set", {}).get("distance", 3.0))

    def boundary_name(self, attribute: str) -> str:
        """The boundary its test set used for this attribute's kind (a conditional one, say), else the primal."""
        kinds = self.config.get("test_set", {}).get("kinds", {})
        return str(kinds.get(KIND_OF[attribute], attribute))

    def recorded_generator(self) -> tuple[Path | None, str | None]:
        """(path, sha256) of the generator the run sampled with, as it recorded them (either may be None)."""
        path = None
        report = self.folder / "report.json"
        if report.is_file():
            value = json.loads(report.read_text(encoding="utf-8")).get("generator")
            path = Path(value) if value else None
        plan = self.folder / "chunks" / "plan.json"
        sha = None
        if plan.is_file():
            sha = json.loads(plan.read_text(encoding="utf-8")).get("sources", {}).get("generator_sha256")
        return path, sha


def find_boundaries(workspace: Workspace, config: FusionPairsConfig, inputs: Sequence[Manifest]) -> BoundariesRun:
    """The run named by `boundaries`, else the upstream / current fit-boundaries run."""
    try:
        manifest = workspace.chosen_run(BOUNDARIES, config.boundaries, inputs)
    except RunNotFound as exc:
        raise SourceError(str(exc)) from None
    if manifest is None:
        raise SourceError(f"fusion-pairs needs the InterfaceGAN boundaries: run fit-boundaries first, or set "
                          f"`boundaries` to a fit-boundaries run id (no completed run in {workspace.root})")
    if "report.json" not in manifest.files:
        raise SourceError(f"fit-boundaries run {manifest.run_id} lists no report.json; run fit-boundaries again")
    folder = workspace.resolve(manifest.files["report.json"].path).parent
    saved = folder / "config.json"
    config_data = json.loads(saved.read_text(encoding="utf-8")).get("config", {}) if saved.is_file() else {}
    return BoundariesRun(workspace, manifest, folder, config_data)


def _generator_file(path: Path) -> Path:
    from training.stylegan2.handle import resolve_checkpoint

    return resolve_checkpoint(path)


def resolve_generator(workspace: Workspace, config: FusionPairsConfig,
                      boundaries: BoundariesRun) -> tuple[Path, str, bool]:
    """(checkpoint file, its sha256, whether it is the boundaries' generator)."""
    recorded_path, recorded_sha = boundaries.recorded_generator()
    if config.generator is not None:
        path = _generator_file(Path(config.generator).expanduser())
        sha = sha256_file(path)
        same = recorded_sha is None or sha == recorded_sha
        if not same:
            logger.warning("fusion-pairs: generator %s (sha256 %s) is not the one fit-boundaries run %s used "
                           "(sha256 %s): its boundaries belong to another W space", path, sha[:12],
                           boundaries.manifest.run_id, recorded_sha[:12])
        return path, sha, same
    candidates: list[Path] = []
    if recorded_path is not None and recorded_path.exists():
        candidates.append(_generator_file(recorded_path))
    for ref in boundaries.manifest.inputs:
        if ref.stage == STYLEGAN2:
            with_checkpoint = workspace.manifest(ref.run_id)
            if "checkpoint" in with_checkpoint.files:
                candidates.append(workspace.resolve(with_checkpoint.files["checkpoint"].path))
    for path in candidates:
        if path.is_file():
            sha = sha256_file(path)
            if recorded_sha is None or sha == recorded_sha:
                return path, sha, True
    raise SourceError(f"the generator fit-boundaries run {boundaries.manifest.run_id} used is not available "
                      f"(recorded: {recorded_path}, sha256 {recorded_sha}); put it back or set `generator` to it")


def resolve_unsup3d(workspace: Workspace, config: FusionPairsConfig,
                    inputs: Sequence[Manifest]) -> tuple[Path, Manifest | None]:
    """(Unsup3d checkpoint, the train-unsup3d run it came from or None for a config path)."""
    if config.unsup3d is not None:
        path = Path(config.unsup3d).expanduser()
        if not path.is_file():
            raise SourceError(f"Unsup3d checkpoint not found: {path}")
        return path, None
    manifest = next((m for m in inputs if m.stage == UNSUP3D), None) or workspace.current(UNSUP3D)
    if manifest is None or "checkpoint" not in manifest.files:
        raise SourceError(f"fusion-pairs needs Unsup3d networks: set `unsup3d` (a checkpoint path, e.g. --unsup3d "
                          f"checkpoint030.pth, the official CelebA model) or run train-unsup3d first (no completed "
                          f"train-unsup3d run with a checkpoint in {workspace.root})")
    path = workspace.resolve(manifest.files["checkpoint"].path)
    if not path.is_file():
        raise SourceError(f"{path} (checkpoint of train-unsup3d run {manifest.run_id}) is missing")
    return path, manifest


__all__ = ["KIND_OF", "BoundariesRun", "SourceError", "find_boundaries", "resolve_generator", "resolve_unsup3d"]
