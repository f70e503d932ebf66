"""The synthesize stage config: which models and which test set, how many samples, how to render and save.

Two sources of test samples:

- `pairs` (default): the test split of the fusion-pairs run the train-fusion run trained on: the boundaries'
  held-out w with their n_b, origins, placed templates, GT composites and canonical maps already made, so the
  edits are rendered with exactly the generator, truncation and templates the networks learnt with;
- `files`: the official inputs given as paths: a StyleGAN2 checkpoint (`network-snapshot-020180.pt`), an
  Unsup3d checkpoint (`checkpoint030.pth`), fusion checkpoints (`checkpoint_latest.pt`), the template PNGs, and
  the test set as the official `w_<kind>_test_<N>.json` / `<kind>_interfacegan_test_<N>.json` (or our
  fit-boundaries' `test_w.npy` / `test_nb_<kind>.npy`). Origins, landmarks, composites and canonical maps are
  made here, as fusion-pairs makes them.

`source: auto` picks `files` when `test_w` is set, else `pairs`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from data_catalog.config import StageConfig
from training.common.config import RuntimeConfig as CommonRuntimeConfig
from training.fusion_pairs.format import ATTRIBUTES

# The official release's file stems: one test set and one basis file per kind; glasses serve both eyewear models.
OFFICIAL_KIND = {"face_mask": "mask", "sunglasses": "glasses", "frame_glasses": "glasses"}


class RuntimeConfig(CommonRuntimeConfig):
    pass


class SynthesizeConfig(StageConfig):
    STAGE = "synthesize"
    source: Literal["auto", "pairs", "files"] = "auto"
    attributes: tuple[str, ...] | None = None  # null: every attribute the fusion run (or `fusion`) has
    # --- source "pairs"
    fusion_run: str | None = None  # train-fusion run id or run folder; null: the current train-fusion run
    # --- source "files" (also allowed with "pairs": `fusion` replaces the run's networks)
    fusion: str | dict[str, str] | None = None  # one checkpoint for all, a run folder, or {attribute: path}
    generator: str | None = None  # rosinality StyleGAN2 .pt; null: the pairs run's
    unsup3d: str | None = None  # Unsup3d checkpoint; null: the pairs run's
    test_w: str | None = None  # JSON list of w (official) or .npy (N, w_dim)
    test_nb: str | dict[str, str] | None = None  # one JSON/.npy for all attributes, or {attribute: path}
    templates: dict[str, str] = Field(default_factory=dict)  # {attribute: template PNG or built-in name}
    # anchors of template PNGs in their pixels, {attribute: {anchor: [x, y]}}; unset: read off the alpha
    anchors: dict[str, dict[str, tuple[float, float]]] = Field(default_factory=dict)
    truncation: float | None = Field(default=None, gt=0, le=1)  # null: the pairs run's; files: 0.5 (official)
    mean_samples: int = Field(default=4096, ge=1)  # files: truncation centre = mean w of this many seeded z
    mean_seed: int = 23914
    detector: str = "retinaface"  # files: landmark detector for placing templates (none: FFHQ canonical)
    canonical_size: int | None = Field(default=None, ge=8)  # files: null = half the fusion network's image size
    canonical_crop: Literal["auto", "aligned", "demo"] = "auto"
    # --- what to make
    limit: int | None = Field(default=None, ge=1)  # first N test samples per attribute; null: all
    batch_size: int = Field(default=8, ge=1)
    minmax: bool = False  # the official per-image min-max normalisation of saved images (distorts metrics)
    strengths: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5)  # edit-strength sweep factors (empty: no sweep)
    strength_samples: int = Field(default=4, ge=0)  # first samples swept per attribute
    grid_rows: int = Field(default=8, ge=1)
    runtime: RuntimeConfig = RuntimeConfig()

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return value
        unknown = [a for a in value if a not in ATTRIBUTES]
        if unknown or not value or len(set(value)) != len(value):
            raise ValueError(f"attributes must be a non-empty list of {', '.join(ATTRIBUTES)} without repeats, "
                             f"got {list(value)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SynthesizeConfig:
        for name, mapping in (("fusion", self.fusion), ("test_nb", self.test_nb), ("templates", self.templates),
                              ("anchors", self.anchors)):
            if isinstance(mapping, dict):
                unknown = [a for a in mapping if a not in ATTRIBUTES]
                if unknown:
                    raise ValueError(f"{name}: unknown attribute(s) {unknown}; known: {', '.join(ATTRIBUTES)}")
        if self.resolved_source == "files":
            missing = [name for name in ("fusion", "generator", "unsup3d", "test_nb")
                       if getattr(self, name) is None]
            if self.test_w is None:
                missing.insert(0, "test_w")
            if missing:
                raise ValueError(f"source 'files' needs {', '.join(missing)} (paths): the test w and n_b files, the "
                                 "fusion, StyleGAN2 and Unsup3d checkpoints")
        if any(s < 0 for s in self.strengths):
            raise ValueError(f"strengths must be >= 0, got {list(self.strengths)}")
        return self

    @property
    def resolved_source(self) -> str:
        if self.source != "auto":
            return self.source
        return "files" if self.test_w is not None else "pairs"


__all__ = ["OFFICIAL_KIND", "RuntimeConfig", "SynthesizeConfig"]
