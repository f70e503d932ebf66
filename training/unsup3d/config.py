"""The train-unsup3d stage config (`train_celeba.yml` defaults): one typed object, saved as config.json per run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from data_catalog.config import ConfigModel, StageConfig
from training.common.config import RuntimeConfig


class ModelConfig(ConfigModel):
    """Network widths; the defaults are the CelebA model (netD/netA EDDeconv nf 64 zdim 256, ...)."""

    size: Literal[64] = 64  # Unsup3d's encoders reduce 64x64 to 1x1: the networks only take 64 px
    nf: int = Field(default=64, ge=16)  # netD and netA width (multiple of 16: GroupNorm)
    zdim: int = Field(default=256, ge=1)  # netD and netA bottleneck
    encoder_nf: int = Field(default=32, ge=1)  # netL and netV width
    conf_nf: int = Field(default=64, ge=16)  # netC width (multiple of 16)
    conf_zdim: int = Field(default=128, ge=1)
    use_conf: bool = True  # netC confidence maps (else unit-weighted L1)

    @model_validator(mode="after")
    def _groupnorm_widths(self) -> ModelConfig:
        for name in ("nf", "conf_nf"):
            if getattr(self, name) % 16:
                raise ValueError(f"model.{name} must be a multiple of 16 (GroupNorm(16, nf)), got {getattr(self, name)}")
        return self


class LossConfig(ConfigModel):
    lam_perc: float = Field(default=1.0, ge=0)  # only used when perceptual.vgg16 is set
    lam_flip: float = Field(default=0.5, ge=0)
    lam_depth_sm: float = Field(default=0.0, ge=0)  # depth smoothness (Unsup3d's synthetic cars only)


class CameraConfig(ConfigModel):
    min_depth: float = Field(default=0.9, gt=0)
    max_depth: float = Field(default=1.1, gt=0)
    border_depth: float | None = None  # None: 0.7 max + 0.3 min (1.04, as Unsup3d trains)
    rot_center_depth: float = Field(default=1.0, gt=0)
    fov: float = Field(default=10.0, gt=0, lt=180)
    xyz_rotation_range: float = Field(default=60.0, ge=0)  # degrees
    xy_translation_range: float = Field(default=0.1, ge=0)
    z_translation_range: float = Field(default=0.0, ge=0)
    min_amb_light: float = 0.0
    max_amb_light: float = 1.0
    min_diff_light: float = 0.0
    max_diff_light: float = 1.0
    renderer: Literal["torch", "neural_renderer"] = "torch"

    @model_validator(mode="after")
    def _range(self) -> CameraConfig:
        if self.max_depth <= self.min_depth:
            raise ValueError(f"camera.max_depth ({self.max_depth}) must exceed camera.min_depth ({self.min_depth})")
        return self

    @property
    def border(self) -> float:
        return self.border_depth if self.border_depth is not None else 0.7 * self.max_depth + 0.3 * self.min_depth


class OptimConfig(ConfigModel):
    batch: int = Field(default=64, ge=1)  # global batch (all ranks together)
    lr: float = Field(default=1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=5e-4, ge=0)


class DataConfig(ConfigModel):
    split: Literal["train", "val"] = "train"
    num_workers: int = Field(default=2, ge=0)  # DataLoader workers for the one decoding pass over the shards
    xflip: bool = True  # random horizontal flips of the inputs (Unsup3d's loader)


class ScheduleConfig(ConfigModel):
    total_kimg: float = Field(default=5000.0, gt=0)
    tick_kimg: float = Field(default=10.0, gt=0)
    log_steps: int = Field(default=50, ge=1)
    checkpoint_kimg: float = Field(default=100.0, gt=0)
    keep_checkpoints: int = Field(default=2, ge=1)
    sample_kimg: float | None = Field(default=50.0, gt=0)
    grid_seeds: int = Field(default=8, ge=1)  # faces in the sample grid, drawn once from the seed


class PerceptualConfig(ConfigModel):
    vgg16: str | None = None  # VGG16 weights: torchvision state dict (features.N.*) or TorchScript; None: off


class TrainUnsup3dConfig(StageConfig):
    STAGE = "train-unsup3d"
    dataset: str | None = None  # dataset version id; None: the current shard run's version
    resume: str | None = None  # run id, run folder or checkpoint (.pt) to continue
    # the --set values given with resume (load_config fills them): all that a resume changes in the run's config
    resume_overrides: dict[str, Any] = Field(default_factory=dict)
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    camera: CameraConfig = CameraConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    perceptual: PerceptualConfig = PerceptualConfig()
    runtime: RuntimeConfig = RuntimeConfig()
