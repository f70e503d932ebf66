"""The fit-boundaries stage config: sampling, SVM, which boundaries, the held-out test set and the figure."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from data_catalog.config import ConfigModel, StageConfig

# The official JSON kinds (SD-GAN's data/w_<kind>_test_1000.json) and the classifier attribute each edits by default.
TEST_KINDS: dict[str, str] = {"mask": "face_mask", "glasses": "sunglasses", "frame_glasses": "frame_glasses"}


class SamplingConfig(ConfigModel):
    """How many (w, scores) pairs to draw. Sample i has z seed `seed + i`, whatever the chunking."""

    n_samples: int = Field(default=500_000, ge=4)
    chunk_size: int = Field(default=10_240, ge=1)  # rows per resumable chunk file (a multiple of batch_size)
    batch_size: int = Field(default=32, ge=1)  # generator + classifier batch; batches sit on a global grid
    truncation: float = Field(default=1.0, gt=0, le=1)  # psi of the scored images; latents.npy holds untruncated w
    noise_mode: Literal["const", "random", "none"] = "const"
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _chunks_hold_whole_batches(self) -> SamplingConfig:
        # A sample is always rendered in the same batch (same float rounding), so chunking and resuming cannot
        # change a single byte of latents.npy / scores.npy.
        if self.chunk_size % self.batch_size:
            raise ValueError(f"sampling.chunk_size ({self.chunk_size}) must be a multiple of sampling.batch_size "
                             f"({self.batch_size})")
        return self


class SvmConfig(ConfigModel):
    """InterfaceGAN's train_boundary parameters (its defaults), plus the split seed it lacks."""

    chosen_num_or_ratio: float = Field(default=0.02, gt=0)
    split_ratio: float = Field(default=0.7, gt=0, le=1)
    invalid_value: float | None = None
    seed: int = Field(default=0, ge=0)


class ConditionalBoundary(ConfigModel):
    """`attribute` edited while the signed distance to each condition's boundary stays fixed."""

    attribute: str
    conditions: tuple[str, ...] = Field(min_length=1)

    @property
    def name(self) -> str:
        """File stem: boundary_<name>.npy, e.g. face_mask_cond_sunglasses_cond_frame_glasses."""
        return "_cond_".join((self.attribute, *self.conditions))


class TestSetConfig(ConfigModel):
    """Held-out w (own seeds) with per-sample basis n_b = (distance - w·n)·n for each official kind."""

    n: int = Field(default=1000, ge=1)
    seed: int = Field(default=1_000_000_000, ge=0)  # z seeds seed..seed+n-1, disjoint from the sampling seeds
    distance: float = 3.0  # d: signed distance past the boundary every w + n_b lands at
    kinds: dict[Literal["mask", "glasses", "frame_glasses"], str] = Field(default_factory=lambda: dict(TEST_KINDS))


class FigureConfig(ConfigModel):
    alphas: tuple[float, ...] = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)  # grid columns: G(w + alpha·n)
    rows: int = Field(default=4, ge=1)  # test-set w shown per grid
    scatter_points: int = Field(default=2000, ge=1)  # sampled points in the score-vs-distance plot


class RuntimeConfig(ConfigModel):
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = Field(default=None, ge=1)  # torch CPU threads


class FitBoundariesConfig(StageConfig):
    STAGE = "fit-boundaries"
    generator: str | None = None  # StyleGAN2 checkpoint or run folder; None: the train-stylegan2 run's checkpoint
    classifier: str | None = None  # attribute classifier checkpoint; None: the train-classifier run's checkpoint
    sampling: SamplingConfig = SamplingConfig()
    svm: SvmConfig = SvmConfig()
    attributes: tuple[str, ...] | None = None  # boundaries to fit; None: every attribute the classifier scores
    conditional: tuple[ConditionalBoundary, ...] = (
        ConditionalBoundary(attribute="sunglasses", conditions=("frame_glasses",)),
        ConditionalBoundary(attribute="face_mask", conditions=("sunglasses", "frame_glasses")),
    )
    test_set: TestSetConfig = TestSetConfig()
    figure: FigureConfig = FigureConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _consistent(self) -> FitBoundariesConfig:
        sampled = range(self.sampling.seed, self.sampling.seed + self.sampling.n_samples)
        held_out = range(self.test_set.seed, self.test_set.seed + self.test_set.n)
        if sampled.start < held_out.stop and held_out.start < sampled.stop:
            raise ValueError(f"test_set seeds {held_out.start}..{held_out.stop - 1} overlap the sampling seeds "
                             f"{sampled.start}..{sampled.stop - 1}: the test set must be held out")
        for cond in self.conditional:
            if cond.attribute in cond.conditions or len(set(cond.conditions)) != len(cond.conditions):
                raise ValueError(f"conditional boundary {cond.name}: conditions must be distinct and differ from "
                                 "the attribute")
        return self

    def boundary_names(self, attributes: tuple[str, ...]) -> list[str]:
        """Every boundary the config asks for, given the attributes fitted."""
        return list(attributes) + [cond.name for cond in self.conditional]
