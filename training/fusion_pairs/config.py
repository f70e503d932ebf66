"""The fusion-pairs stage config: which upstream runs, how many training w, truncation, landmarks, templates, shards."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from data_catalog.config import ConfigModel, StageConfig
from training.fusion_pairs.format import ATTRIBUTES

# training.unsup3d.maps.MAP_NAMES, repeated so that reading a config imports no torch (a test keeps them equal)
MAP_NAMES = ("input", "depth", "normal", "shading", "albedo", "image")
# alignment.attributes: the built-in templates of each attribute and the anchors a template PNG may set.
BUILTIN_TEMPLATES: dict[str, tuple[str, ...]] = {"face_mask": ("surgical_mask", "cloth_mask"),
                                                 "sunglasses": ("sunglasses",), "frame_glasses": ("frame_glasses",)}
ANCHOR_NAMES: dict[str, tuple[str, ...]] = {
    "face_mask": ("nose_bridge", "chin", "left_cheek", "right_cheek"),
    "sunglasses": ("left_eye", "right_eye", "left_temple", "right_temple"),
    "frame_glasses": ("left_eye", "right_eye", "left_temple", "right_temple"),
}
RANDOM_TEMPLATE = "random"
DEFAULT_SEED = 2_000_000_000  # disjoint from the boundaries' sampling seeds (0..) and test seeds (1e9..) by default


class TemplatesConfig(ConfigModel):
    """Per attribute: a built-in template name, "random" (a seeded style per pair), a template PNG path, or null
    (no pairs for that attribute). A PNG is straight-alpha RGBA, e.g. SD-GAN's templates/mask/surgical.png."""

    face_mask: str | None = "surgical_mask"
    sunglasses: str | None = "sunglasses"
    frame_glasses: str | None = "frame_glasses"
    size: int = Field(default=512, ge=64, le=4096)  # drawing size (px) of built-in templates
    shadow: bool = True  # the soft contact shadow under the attribute in GT (region.png is the alpha only)
    # Anchors of a template PNG in its pixels, {attribute: {anchor: [x, y]}}; unset ones come from its alpha.
    anchors: dict[str, dict[str, tuple[float, float]]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> TemplatesConfig:
        for attribute in ATTRIBUTES:
            spec = getattr(self, attribute)
            if spec is None or spec == RANDOM_TEMPLATE or spec in BUILTIN_TEMPLATES[attribute]:
                continue
            if not spec.lower().endswith(".png"):
                other = [a for a, names in BUILTIN_TEMPLATES.items() if spec in names]
                hint = f" ({spec!r} is a {other[0]} template)" if other else ""
                raise ValueError(f"templates.{attribute}: {spec!r} is neither a built-in template "
                                 f"{BUILTIN_TEMPLATES[attribute]}, {RANDOM_TEMPLATE!r} nor a .png path{hint}")
        if not self.attributes:
            raise ValueError("templates: every attribute is null; set at least one of " + ", ".join(ATTRIBUTES))
        for attribute, anchors in self.anchors.items():
            if attribute not in ATTRIBUTES:
                raise ValueError(f"templates.anchors: unknown attribute {attribute!r}; known: {list(ATTRIBUTES)}")
            spec = getattr(self, attribute)
            if spec is None or not spec.lower().endswith(".png"):
                raise ValueError(f"templates.anchors.{attribute}: anchors apply to a template PNG only "
                                 f"(templates.{attribute} is {spec!r})")
            unknown = sorted(set(anchors) - set(ANCHOR_NAMES[attribute]))
            if unknown:
                raise ValueError(f"templates.anchors.{attribute}: unknown anchor(s) {unknown}; "
                                 f"known: {list(ANCHOR_NAMES[attribute])}")
        return self

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attributes pairs are made for, in format.ATTRIBUTES order."""
        return tuple(a for a in ATTRIBUTES if getattr(self, a) is not None)

    def png(self, attribute: str) -> Path | None:
        spec = getattr(self, attribute)
        return Path(spec).expanduser() if spec is not None and spec.lower().endswith(".png") else None


class RuntimeConfig(ConfigModel):
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = Field(default=None, ge=1)  # torch CPU threads


class FusionPairsConfig(StageConfig):
    STAGE = "fusion-pairs"
    generator: str | None = None  # StyleGAN2 checkpoint; None: the one the fit-boundaries run used
    boundaries: str | None = None  # fit-boundaries run id; None: the current fit-boundaries run
    unsup3d: str | None = None  # Unsup3d checkpoint (e.g. official checkpoint030.pth); None: the train-unsup3d run's
    n_train: int = Field(default=50_000, ge=1)  # training w: z seeds seed .. seed + n_train - 1
    seed: int = Field(default=DEFAULT_SEED, ge=0)
    test: bool = True  # also write the boundaries' held-out test set as split "test"
    distance: float | None = None  # d of n_b = (d - w·n)·n for training w; None: the boundaries' test_set.distance
    truncation: float = Field(default=0.5, gt=0, le=1)  # psi of G(trunc(w)) (official test.py: 0.5)
    mean_samples: int = Field(default=4096, ge=1)  # truncation centre: mean w of this many seeded z ...
    mean_seed: int = Field(default=0x5D6A, ge=0)  # ... (a checkpoint's latent_avg wins when it has one)
    noise_mode: Literal["const", "none"] = "const"  # what train-fusion can render again
    image_size: int | None = Field(default=None, ge=16)  # None: the generator's size; else origins are resized
    canonical_size: int = Field(default=128, ge=8)  # Unsup3d maps upsampled to this (SD-GAN: 128)
    canonical_channels: tuple[str, str, str] = ("normal", "shading", "albedo")
    canonical_crop: Literal["auto", "aligned", "demo"] = "auto"  # auto: demo crop for official checkpoints
    detector: Literal["retinaface", "dlib-hog", "dlib-cnn", "scrfd", "none"] = "retinaface"
    detector_threshold: float | None = Field(default=None, gt=0, le=1)  # None: the detector's default
    detector_model_dir: str | None = None  # scrfd: folder holding its ONNX file
    max_landmark_offset: float = Field(default=0.5, gt=0)  # farther from FFHQ's positions (x eye distance): refused
    templates: TemplatesConfig = TemplatesConfig()
    chunk_size: int = Field(default=512, ge=1)  # pairs per chunk = per shard: the resumable, fanned-out unit
    batch_size: int = Field(default=16, ge=1)  # generator and Unsup3d batch; batches lie on a global grid
    runtime: RuntimeConfig = RuntimeConfig()

    @field_validator("canonical_channels")
    @classmethod
    def _maps(cls, value: tuple[str, str, str]) -> tuple[str, str, str]:
        unknown = [name for name in value if name not in MAP_NAMES]
        if unknown:
            raise ValueError(f"unknown canonical map(s) {unknown}; maps: {list(MAP_NAMES)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FusionPairsConfig:
        if self.chunk_size % self.batch_size:
            # every pair is rendered in the same batch whatever the chunking, so reruns are byte-identical
            raise ValueError(f"chunk_size ({self.chunk_size}) must be a multiple of batch_size ({self.batch_size})")
        if self.seed + self.n_train > 2**63:
            raise ValueError(f"seed + n_train must stay below 2**63, got {self.seed} + {self.n_train}")
        if self.detector == "scrfd" and not self.detector_model_dir:
            raise ValueError("detector scrfd needs detector_model_dir (a folder holding its ONNX file)")
        return self

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.templates.attributes
