"""The DAG: every stage, what it depends on, and where its code lives.

Stage code is imported lazily (torch-heavy stages must not slow down `sdgan catalog ls`). A stage whose
`module` is None is part of the design but not built yet; flows report it as such instead of failing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from data_catalog.config import StageConfig
from data_catalog.manifest import Manifest
from data_catalog.workspace import Workspace

StageFn = Callable[[StageConfig, Workspace, list[Manifest]], Manifest]


@dataclass(frozen=True)
class StageSpec:
    name: str
    summary: str
    upstream: tuple[str, ...] = ()
    module: str | None = None  # module exposing `run(config, workspace, inputs)` and the config class
    config_class: str = ""
    function: str = "run"
    packages: tuple[str, ...] = ("data_catalog",)  # sources whose hash is the stage's code version
    cacheable: bool = True

    @property
    def built(self) -> bool:
        return self.module is not None

    def load(self) -> tuple[type[StageConfig], StageFn]:
        if self.module is None:
            raise NotImplementedError(f"stage {self.name!r} is not built yet")
        module = importlib.import_module(self.module)
        return getattr(module, self.config_class), getattr(module, self.function)


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in [
        StageSpec(
            "crawl",
            "search Google and Naver, download raw images with provenance",
            module="crawling.stage",
            config_class="CrawlConfig",
            packages=("data_catalog", "crawling"),
        ),
        StageSpec(
            "align",
            "detect, landmark, FFHQ-align, filter and deduplicate faces",
            ("crawl",),
            module="alignment.stage",
            config_class="AlignConfig",
            packages=("data_catalog", "alignment"),
        ),
        StageSpec(
            "shard",
            "write versioned WebDataset shards, splits and the dataset card",
            ("crawl", "align"),  # crawl too: labels and provenance come from its queries and candidates
            module="data_catalog.dataset",
            config_class="ShardConfig",
            packages=("data_catalog",),
        ),
        StageSpec(
            "train-stylegan2",
            "train the 256 px StyleGAN2 generator (rosinality checkpoint format)",
            ("shard",),
            module="training.stylegan2.stage",
            config_class="TrainStyleGAN2Config",
            packages=("data_catalog", "alignment", "training"),
        ),
        StageSpec("train-classifier", "train the attribute classifier", ("shard",)),
        StageSpec("fit-boundaries", "fit InterfaceGAN boundaries (semantic prior basis)", ("train-stylegan2", "train-classifier")),
        StageSpec("train-unsup3d", "learn Unsup3d canonical 3D maps", ("shard",)),
        StageSpec("train-fusion", "train the SD-GAN 3D-aware fusion network (offset)", ("fit-boundaries", "train-unsup3d")),
        StageSpec("synthesize", "put a mask, sunglasses or frame glasses on generated faces", ("train-fusion",)),
        StageSpec("evaluate", "score the syntheses: FID, attribute accuracy, identity", ("synthesize",)),
        StageSpec(
            "catalog-verify",
            "check that every catalog reference resolves and every blob hashes to its name",
            module="data_catalog.verify",
            config_class="VerifyConfig",
            packages=("data_catalog",),
            cacheable=False,
        ),
    ]
}

# The order `reproduce` walks: upstream stages always come first.
DAG_ORDER: tuple[str, ...] = tuple(STAGES)


def get(name: str) -> StageSpec:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None
