"""The train-classifier stage config: one typed object, saved as config.json in every run folder."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from data_catalog.config import ConfigModel, StageConfig
from training.common.config import RuntimeConfig
from training.classifier.model import ATTRIBUTES


class ModelConfig(ConfigModel):
    """build_classifier kwargs (recorded as "arch" in checkpoints)."""

    resolution: int = Field(default=128, ge=32, le=256)
    width: int = Field(default=32, ge=4)  # channels after the stem; doubled per halving up to max_width
    max_width: int = Field(default=256, ge=4)
    depth: int = Field(default=2, ge=1)  # residual blocks per resolution
    dropout: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _power_of_two(self) -> ModelConfig:
        if self.resolution & (self.resolution - 1):
            raise ValueError(f"model.resolution must be a power of two, got {self.resolution}")
        return self

    def arch(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "num_attributes": len(ATTRIBUTES), "width": self.width,
                "max_width": self.max_width, "depth": self.depth, "dropout": self.dropout}


class DataConfig(ConfigModel):
    split: Literal["train", "val"] = "train"
    num_workers: int = Field(default=2, ge=0)  # DataLoader workers for the one decoding pass over the shards
    composite_fraction: float = Field(default=0.25, ge=0, le=1)  # share of each batch made of composites
    combine_prob: float = Field(default=0.2, ge=0, le=1)  # composites wearing a mask and glasses at once
    template_pool: int = Field(default=8, ge=1)  # random templates per attribute, drawn once per run
    balance: bool = True  # sample real faces with per-label inverse-frequency weights
    xflip: bool = True
    brightness: float = Field(default=0.1, ge=0, le=1)  # colour jitter amplitudes (images in [-1, 1])
    contrast: float = Field(default=0.1, ge=0, le=1)
    saturation: float = Field(default=0.1, ge=0, le=1)


class OptimConfig(ConfigModel):
    batch: int = Field(default=64, ge=1)  # global batch (all ranks together)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_kimg: float = Field(default=1.0, ge=0)  # linear learning-rate warm-up


class ScheduleConfig(ConfigModel):
    total_kimg: float = Field(default=500.0, gt=0)
    tick_kimg: float = Field(default=10.0, gt=0)
    log_steps: int = Field(default=20, ge=1)
    checkpoint_kimg: float = Field(default=50.0, gt=0)
    keep_checkpoints: int = Field(default=3, ge=1)
    sample_kimg: float | None = Field(default=50.0, gt=0)  # grid of training inputs (composites included)
    grid_size: int = Field(default=16, ge=1)


class CalibrationConfig(ConfigModel):
    enabled: bool = True  # fit a temperature on the val logits (1.0 when off or when val is empty)
    bins: int = Field(default=15, ge=2)  # ECE bins


class LabelCheckConfig(ConfigModel):
    enabled: bool = True
    threshold: float = Field(default=0.9, gt=0.5, lt=1)  # calibrated probability that counts as "strong"
    rows: Literal["all", "disagrees"] = "all"  # which samples get a label_checks row
    batch: int = Field(default=128, ge=1)


class ReportConfig(ConfigModel):
    grid_faces: int = Field(default=8, ge=1)  # most confident and most confused val faces in the grid


class TrainClassifierConfig(StageConfig):
    STAGE = "train-classifier"
    dataset: str | None = None  # dataset version id; None: the current shard run's version
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    label_check: LabelCheckConfig = LabelCheckConfig()
    report: ReportConfig = ReportConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    resume: str | None = None  # run id, run folder or checkpoint (.pt) to continue
    # the --set values given with resume (load_config fills them): all that a resume changes in the run's config
    resume_overrides: dict[str, Any] = Field(default_factory=dict)
