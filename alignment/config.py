"""Typed config of the align stage (configs/<profile>/align.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignment.filters import FilterRules
from data_catalog.config import ConfigModel, StageConfig


class DedupRules(ConfigModel):
    near_max_distance: int = Field(default=6, ge=0, le=32)  # Hamming distance between 64-bit pHashes
    identity_threshold: float = Field(default=0.5, gt=0)  # dlib descriptor distance for one person


class AlignConfig(StageConfig):
    STAGE = "align"
    detector: Literal["retinaface", "dlib-hog", "dlib-cnn", "scrfd"] = "retinaface"
    detector_threshold: float = Field(default=0.8, ge=0)
    scrfd_model_dir: str | None = None
    max_faces_per_image: int = Field(default=8, ge=1)
    fusion_tolerance: float = Field(default=0.12, gt=0)  # landmark disagreement, in inter-ocular distances
    output_size: int = Field(default=256, ge=16)
    transform_size: int | None = None  # None: the fast OpenCV path; 4096: NVlabs' exact recipe
    enable_padding: bool = True
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    images_per_task: int = Field(default=32, ge=1)  # one Prefect task per batch of images
    filters: FilterRules = FilterRules()
    dedup: DedupRules = DedupRules()
