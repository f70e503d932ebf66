"""The train-fusion stage config: one typed object, saved as config.json in the run folder.

The paper's losses and hyper-parameters were never published, so the loss section is our design (see
`training.fusion.losses`): weights of an inside/outside-region L1, an optional LPIPS, an optional ArcFace
identity term, the non-saturating realism term through the frozen discriminator, and a penalty on n_o.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from data_catalog.config import ConfigModel, StageConfig
from training.common.config import RuntimeConfig as CommonRuntimeConfig
from training.fusion_pairs.format import ATTRIBUTES


class ArchConfig(ConfigModel):
    """FusionArch fields. None means: taken from the pairs run (image_size) or the generator (w_dim, num_ws),
    which is also what an explicit value is checked against."""

    image_size: int | None = Field(default=None, ge=8)  # network input size; null: the pairs' image size
    canonical_channels: int = Field(default=9, ge=1)
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)  # the four ResNet stages of both image branches
    encoder_width: int = Field(default=32, ge=1)  # Zencoder ngf
    style_length: int = Field(default=512, ge=1)  # Zencoder output / ACE style code length
    spade_hidden: int = Field(default=512, ge=1)
    style_slots: int = Field(default=19, ge=3)  # SEAN's fc_mu0..18 (only 0..2 are used; kept for strict loads)
    w_dim: int | None = Field(default=None, ge=1)  # null: the generator's style_dim
    num_ws: int | None = Field(default=None, ge=1)  # null: the generator's n_latent

    @model_validator(mode="after")
    def _positive_widths(self) -> ArchConfig:
        if any(width < 1 for width in self.widths):
            raise ValueError(f"arch.widths must be positive, got {list(self.widths)}")
        return self


class LossConfig(ConfigModel):
    """Term weights (0 turns a term off) and the weights files the optional terms need."""

    l1_inside: float = Field(default=1.0, ge=0)  # L1 to the GT composite inside the attribute region
    l1_outside: float = Field(default=1.0, ge=0)  # ... and outside it (the face that must not change)
    lpips: float = Field(default=0.8, ge=0)  # used only when lpips_vgg16 is set
    lpips_vgg16: str | None = None  # VGG16 ImageNet weights (torchvision state dict, features.N.*)
    lpips_linear: str | None = None  # lpips' vgg.pth (lin0..lin4); null: equal channel weights
    identity: float = Field(default=0.1, ge=0)  # 1 - cos(ArcFace(edit), ArcFace(origin)); only with arcface
    arcface: str | None = None  # insightface arcface_torch iresnet18/34/50/100 state dict (112 px, 512-d)
    realism: float = Field(default=0.01, ge=0)  # softplus(-D(edit)) through the frozen StyleGAN2 discriminator
    offset_norm: float = Field(default=0.01, ge=0)  # mean of n_o^2


class OptimConfig(ConfigModel):
    batch: int = Field(default=8, ge=1)  # global batch (all ranks together)
    lr: float = Field(default=1e-4, gt=0)
    betas: tuple[float, float] = (0.95, 0.999)
    # A fresh network's final InstanceNorm1d scale (regre.in3.weight). The official init, 1, starts n_o at std 1
    # per W+ row, as large as w itself, far from any useful edit; a small start lets training begin at the basis
    # edit. Not applied when starting from `init` weights or resuming. null: keep the official init.
    start_offset_scale: float | None = Field(default=0.01, ge=0)


class DataConfig(ConfigModel):
    split: Literal["train", "test"] = "train"
    shuffle_buffer: int = Field(default=256, ge=0)  # samples (raw bytes) per reader; 0: shard and key order
    num_workers: int = Field(default=2, ge=0)  # DataLoader workers per rank (each needs its own shard)
    exact_resume: bool = True  # on resume, continue the stream exactly (skips whole passes without reading)


class ScheduleConfig(ConfigModel):
    """Per attribute: each network trains for total_kimg."""

    total_kimg: float = Field(default=400.0, gt=0)
    tick_kimg: float = Field(default=4.0, gt=0)
    log_steps: int = Field(default=50, ge=1)
    checkpoint_kimg: float = Field(default=20.0, gt=0)  # numbered snapshot + checkpoint_latest.pt
    keep_checkpoints: int = Field(default=3, ge=1)
    sample_kimg: float | None = Field(default=20.0, gt=0)  # grid origin | basis | ours | GT; null: none
    grid_rows: int = Field(default=8, ge=1)  # held-out (test split) pairs in the grid


class EvalConfig(ConfigModel):
    pairs: int = Field(default=256, ge=0)  # test-split pairs scored after training (report.json); 0: none
    batch: int = Field(default=8, ge=1)


class RuntimeConfig(CommonRuntimeConfig):
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    compile: bool = False  # torch.compile the network and G's synthesis on CUDA; ignored on CPU


class TrainFusionConfig(StageConfig):
    STAGE = "train-fusion"
    pairs: str | None = None  # fusion-pairs run id; null: the current fusion-pairs run
    resume: str | None = None  # run id, run folder or checkpoint (.pt) to continue
    # the --set values given with resume (load_config fills them): all that a resume changes in the run's config
    resume_overrides: dict[str, Any] = Field(default_factory=dict)
    # Fine-tuning start: one fusion checkpoint for every attribute (e.g. the official checkpoint_latest.pt), a
    # folder holding <attribute>/checkpoint_latest.pt (a train-fusion run folder), or {attribute: path}.
    init: str | dict[str, str] | None = None
    attributes: tuple[str, ...] | None = None  # null: every attribute of the pairs run, in ATTRIBUTES order
    arch: ArchConfig = ArchConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    eval: EvalConfig = EvalConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _known_attributes(self) -> TrainFusionConfig:
        for name in (self.attributes or ()) + tuple(self.init if isinstance(self.init, dict) else ()):
            if name not in ATTRIBUTES:
                raise ValueError(f"unknown attribute {name!r}; known: {', '.join(ATTRIBUTES)}")
        if self.attributes is not None and (not self.attributes or len(set(self.attributes)) != len(self.attributes)):
            raise ValueError(f"attributes must be a non-empty list without repeats, got {list(self.attributes)}")
        return self
