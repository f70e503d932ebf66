"""The train-stylegan2 stage config: one typed object, saved as config.json in every run folder."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from data_catalog.config import ConfigModel, StageConfig
from training.common.config import RuntimeConfig as CommonRuntimeConfig


class ModelConfig(ConfigModel):
    """Generator/Discriminator constructor arguments (the public config-f at 256 px by default)."""

    size: int = Field(default=256, ge=8, le=1024)
    style_dim: int = Field(default=512, ge=1)
    n_mlp: int = Field(default=8, ge=1)
    channel_multiplier: int = Field(default=2, ge=1)
    channel_max: int | None = Field(default=None, ge=1)  # None: the public channel table
    channel_base: int = Field(default=16384, ge=1)
    lr_mlp: float = Field(default=0.01, gt=0)

    @model_validator(mode="after")
    def _power_of_two(self) -> ModelConfig:
        if self.size & (self.size - 1):
            raise ValueError(f"model.size must be a power of two, got {self.size}")
        return self

    def generator_kwargs(self) -> dict[str, Any]:
        kwargs = self.discriminator_kwargs()
        kwargs.update(style_dim=self.style_dim, n_mlp=self.n_mlp, lr_mlp=self.lr_mlp)
        return kwargs

    def discriminator_kwargs(self) -> dict[str, Any]:
        return {"size": self.size, "channel_multiplier": self.channel_multiplier, "channel_max": self.channel_max,
                "channel_base": self.channel_base}


class DataConfig(ConfigModel):
    split: Literal["train", "val"] = "train"
    xflip: bool = True  # dataset x-flips (doubles the data, as stylegan2-ada's --mirror)
    shuffle_buffer: int = Field(default=1000, ge=0)
    num_workers: int = Field(default=2, ge=0)
    exact_resume: bool = True  # on resume, skip the samples already seen (reads them again, without decoding)


class LossConfig(ConfigModel):
    r1_gamma: float = Field(default=10.0, ge=0)
    d_reg_every: int = Field(default=16, ge=0)  # lazy R1 interval; 0 disables R1
    path_regularize: float = Field(default=2.0, ge=0)
    path_batch_shrink: int = Field(default=2, ge=1)
    path_decay: float = Field(default=0.01, gt=0, le=1)
    g_reg_every: int = Field(default=4, ge=0)  # lazy path-length interval; 0 disables it
    mixing: float = Field(default=0.9, ge=0, le=1)  # style-mixing probability


class OptimConfig(ConfigModel):
    batch: int = Field(default=16, ge=1)  # global batch (all ranks together)
    lr: float = Field(default=0.002, gt=0)
    betas: tuple[float, float] = (0.0, 0.99)
    ema_kimg: float = Field(default=10.0, ge=0)  # EMA half-life in thousands of images
    ema_rampup: float | None = Field(default=0.05, ge=0)  # None: no ramp-up


class AugmentConfig(ConfigModel):
    ada: bool = True
    target: float = Field(default=0.6, gt=0, lt=1)
    initial_p: float = Field(default=0.0, ge=0, le=1)
    adjust_kimg: float = Field(default=500.0, gt=0)  # images for p to move by 1
    interval: int = Field(default=4, ge=1)  # steps between p updates


class ScheduleConfig(ConfigModel):
    total_kimg: float = Field(default=25000.0, gt=0)
    checkpoint_kimg: float = Field(default=50.0, gt=0)  # atomic checkpoint every N kimg (and at the end)
    sample_kimg: float = Field(default=50.0, gt=0)  # sample grid every N kimg
    log_steps: int = Field(default=10, ge=1)  # stats.jsonl / TensorBoard every N steps
    tick_kimg: float = Field(default=4.0, gt=0)  # a progress line (logger sdgan.train-stylegan2) every N kimg
    keep_checkpoints: int = Field(default=5, ge=1)  # newest ones kept (plus the final one)
    grid_seeds: int = Field(default=16, ge=1)  # fixed z seeds 0..N-1 for sample grids


class FidConfig(ConfigModel):
    inception: str | None = None  # TorchScript Inception (NVlabs inception-2015-12-05.pt); None: no FID
    convention: Literal["nvlabs", "float01"] = "nvlabs"
    every_kimg: float = Field(default=500.0, gt=0)
    n_images: int = Field(default=50000, ge=2)
    batch: int = Field(default=32, ge=1)


class RuntimeConfig(CommonRuntimeConfig):
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    compile: bool = False  # torch.compile G and D


class TrainStyleGAN2Config(StageConfig):
    STAGE = "train-stylegan2"
    dataset: str | None = None  # dataset version id; None: the current shard run's version
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    fid: FidConfig = FidConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    resume: str | None = None  # run id or checkpoint path to continue
    # the --set values given with resume (load_config fills them): all that a resume changes in the run's config
    resume_overrides: dict[str, Any] = Field(default_factory=dict)
