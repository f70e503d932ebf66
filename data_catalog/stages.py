"""The DAG, declared once: every stage's name, config class, upstream stages, code paths, shortcuts and outputs.

This is the only place a stage is wired. Flows (`flows/dag.py`), the deployments in `prefect.yaml`, the `sdgan`
subcommands, `sdgan stages` and the code fingerprint `stage_run` records all read it. Stage code is named by
strings and imported lazily, so reading the DAG imports no torch and no stage package (this module imports
nothing of ours either; `data_catalog` stays at the bottom of the package graph).

Adding a stage: its own folder (stage module with `run(config, workspace, inputs)` and the config class),
`configs/demo/<stage>.yaml` and `configs/full/<stage>.yaml`, and one `StageSpec` below; then regenerate
`prefect.yaml` (`sdgan deployments --write`; a test fails until it is).
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Not part of any stage's fingerprint: adding or editing a declaration must not invalidate the other stages.
DECLARATIONS_FILE = "data_catalog/stages.py"


@dataclass(frozen=True)
class Option:
    """A stage shortcut: a flow parameter and a `sdgan <stage> --flag` that stand for config overrides.

    `key` is the config key it sets (None when the stage's `overrides` function translates it). `path`:
    "always" makes the value an absolute path, "if_exists" only when it names an existing file or folder
    (so a run id stays a run id). `forces`: a true value reruns the stage even when it is cached.
    """

    name: str
    type: Any
    help: str
    key: str | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    flag: str | None = None  # CLI spelling when it differs from --<name with dashes>
    path: Literal["always", "if_exists"] | None = None
    forces: bool = False

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def repeatable(self) -> bool:
        return "list" in str(self.type)

    def to_override(self, value: Any) -> str | None:
        if value is None or value is False or (self.repeatable and not value):
            return None
        if self.path == "always" or (self.path == "if_exists" and Path(str(value)).expanduser().exists()):
            value = str(Path(str(value)).expanduser().resolve())
        return f"{self.key}={json.dumps(value)}"  # JSON is YAML: lists keep their type, '1234e5' stays text


@dataclass(frozen=True)
class StageOutputs:
    """What a finished run left for a user, as the CLI prints it and a flow returns it."""

    title: str
    items: dict[str, str] = field(default_factory=dict)  # label -> path or value, in display order
    markdown: str | None = None  # path of a markdown file the flow publishes as a Prefect artifact
    artifact_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "items": dict(self.items), "markdown": self.markdown,
                "artifact_key": self.artifact_key}


@dataclass(frozen=True)
class StageSpec:
    name: str
    summary: str
    upstream: tuple[str, ...] = ()
    module: str | None = None  # exposes `run(config, workspace, inputs)`; None: designed, not built yet
    config_class: str = ""
    function: str = "run"
    # Folders and modules (relative to the project) whose sources are the stage's code version in its cache key.
    code: tuple[str, ...] = ("data_catalog",)
    cacheable: bool = True
    options: tuple[Option, ...] = ()
    overrides: str | None = None  # "module:function(**options) -> list[str]" for options without a `key`
    describe: str | None = None  # "module:function(workspace, manifest) -> StageOutputs"
    cli: Literal["flow", "direct"] | None = None  # `sdgan <name>`: through its flow, or the stage in-process
    cli_help: str = ""
    # (upstream stage, config key): a config that sets the key (a path to an official checkpoint, say) stands in
    # for that upstream run, so the stage is not blocked without one.
    replaced_by: tuple[tuple[str, str], ...] = ()

    def required_upstream(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """The upstream stages this config needs a run of."""
        replaced = {stage for stage, key in self.replaced_by if config.get(key) is not None}
        return tuple(u for u in self.upstream if u not in replaced)

    @property
    def built(self) -> bool:
        return self.module is not None

    @property
    def flow_attribute(self) -> str:
        return self.name.replace("-", "_") + "_flow"

    def load(self) -> tuple[type, Callable[..., Any]]:
        """(config class, stage function), imported now."""
        if self.module is None:
            raise NotImplementedError(f"stage {self.name!r} is not built yet")
        module = importlib.import_module(self.module)
        return getattr(module, self.config_class), getattr(module, self.function)

    def shortcut_overrides(self, options: Mapping[str, Any]) -> tuple[list[str], bool]:
        """(config overrides, force this stage) for shortcut values given by name."""
        known = {o.name: o for o in self.options}
        unknown = set(options) - set(known)
        if unknown:
            raise ValueError(f"{self.name}: unknown option(s) {sorted(unknown)}; options: {sorted(known)}")
        out = [text for o in self.options if o.key and (text := o.to_override(options.get(o.name))) is not None]
        custom = {o.name: options.get(o.name, o.default) for o in self.options if o.key is None}
        if self.overrides is not None and custom:
            out += list(load_reference(self.overrides)(**custom))
        forced = any(o.forces and options.get(o.name) for o in self.options)
        return out, forced

    def outputs(self, workspace: Any, manifest: Any) -> StageOutputs | None:
        return load_reference(self.describe)(workspace, manifest) if self.describe else None


@dataclass(frozen=True)
class Pipeline:
    """A flow over several stages (build-megn, reproduce): declared by its stages only."""

    name: str
    summary: str
    stages: tuple[str, ...]

    @property
    def flow_attribute(self) -> str:
        return self.name.replace("-", "_") + "_flow"


def load_reference(reference: str) -> Callable[..., Any]:
    module, _, name = reference.partition(":")
    return functools.reduce(getattr, name.split("."), importlib.import_module(module))


# The shortcuts of every trainer on training/common (its resume helpers give them the same meaning).
TRAINER_OPTIONS = (
    Option("dataset", str | None, "dataset version id (default: the version of the current shard run)", key="dataset"),
    Option("resume", str | None, "continue a run: run id, run folder or checkpoint (.pt); a .pt outside a run folder "
           "starts a new run folder from its weights", key="resume", path="if_exists"),
)
_STYLEGAN2_CODE = ("data_catalog", "training/__init__.py", "training/common", "training/stylegan2")

STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in [
        StageSpec(
            "crawl",
            "search Google and Naver, download raw images with provenance",
            module="crawling.stage",
            config_class="CrawlConfig",
            code=("data_catalog", "crawling"),
            options=(
                Option("sources", list[str] | None, "search source (repeatable; default: the profile's)",
                       flag="--source", choices=("google", "naver", "google-api", "naver-api", "urls")),
                Option("plan", str | None, "query plan YAML (default: the profile's)"),
                Option("urls", str | None, "URL list (txt, csv or parquet with a url column) for --source urls"),
                Option("endpoint", str | None, "base URL of the (single) search --source, e.g. a loopback emulator"),
                Option("max_per_query", int | None, "results kept per query"),
                Option("retry_failed", bool, "fetch again only the URLs whose last attempt failed (never cached)",
                       default=False, forces=True),
            ),
            overrides="crawling.shortcuts:crawl_overrides",
            cli="flow",
            cli_help="run the crawl stage (search engines or a URL list -> blobs + catalog)",
        ),
        StageSpec(
            "align",
            "detect, landmark, FFHQ-align, filter and deduplicate faces",
            ("crawl",),
            module="alignment.stage",
            config_class="AlignConfig",
            code=("data_catalog", "alignment"),
            options=(
                Option("detector", str | None, "face detector", key="detector",
                       choices=("retinaface", "dlib-hog", "dlib-cnn", "scrfd")),
                Option("output_size", int | None, "aligned crop size in pixels", key="output_size"),
            ),
            cli="flow",
            cli_help="run the align stage (detect, FFHQ-align, filter, deduplicate faces)",
        ),
        StageSpec(
            "shard",
            "write versioned WebDataset shards, splits and the dataset card",
            ("crawl", "align"),  # crawl too: labels and provenance come from its queries and candidates
            module="data_catalog.dataset",
            config_class="ShardConfig",
            code=("data_catalog",),
            describe="data_catalog.dataset:describe",
        ),
        StageSpec(
            "train-stylegan2",
            "train the 256 px StyleGAN2 generator (rosinality checkpoint format)",
            ("shard",),
            module="training.stylegan2.stage",
            config_class="TrainStyleGAN2Config",
            code=_STYLEGAN2_CODE,
            options=TRAINER_OPTIONS,
            describe="training.stylegan2.summary:describe",
            cli="direct",
            cli_help="train (or resume) StyleGAN2 on a dataset version in this process (no Prefect; torchrun-ready)",
        ),
        StageSpec(
            "train-classifier",
            "train the attribute classifier (face mask, sunglasses, frame glasses; one logit each)",
            ("shard",),
            module="training.classifier.stage",
            config_class="TrainClassifierConfig",
            code=("data_catalog", "alignment", "training/__init__.py", "training/common", "training/classifier"),
            options=TRAINER_OPTIONS,
            describe="training.classifier.summary:describe",
            cli="direct",
            cli_help="train (or resume) the attribute classifier on a dataset version in this process (torchrun-ready)",
        ),
        StageSpec(
            "fit-boundaries",
            "fit InterfaceGAN boundaries in W (the semantic prior basis n_b) and the held-out test set",
            ("train-stylegan2", "train-classifier"),
            module="training.boundaries.stage",
            config_class="FitBoundariesConfig",
            code=("data_catalog", "training/__init__.py", "training/common", "training/stylegan2",
                  "training/classifier", "training/boundaries"),
            options=(
                Option("generator", str | None, "a StyleGAN2 checkpoint to use instead of the train-stylegan2 run's "
                       "(e.g. the official SD-GAN network-snapshot-020180.pt)", key="generator", path="always"),
                Option("classifier", str | None, "an attribute classifier checkpoint to use instead of the "
                       "train-classifier run's", key="classifier", path="always"),
            ),
            describe="training.boundaries.summary:describe",
            replaced_by=(("train-stylegan2", "generator"), ("train-classifier", "classifier")),
            cli="direct",
            cli_help="sample, score and fit the InterfaceGAN boundaries in this process (torchrun-ready)",
        ),
        StageSpec(
            "train-unsup3d",
            "learn Unsup3d's photo-geometric autoencoder (canonical depth, albedo, light, view) on MEGN faces",
            ("shard",),
            module="training.unsup3d.stage",
            config_class="TrainUnsup3dConfig",
            code=("data_catalog", "alignment", "training/__init__.py", "training/common", "training/unsup3d"),
            options=TRAINER_OPTIONS,
            describe="training.unsup3d.summary:describe",
            cli="direct",
            cli_help="train (or resume) Unsup3d on a dataset version in this process (torchrun-ready)",
        ),
        StageSpec(
            "fusion-pairs",
            "make fusion training pairs (origin, placed template, GT composite, region, canonical maps, n_b)",
            ("fit-boundaries", "train-unsup3d"),
            module="training.fusion_pairs.stage",
            config_class="FusionPairsConfig",
            code=("data_catalog", "alignment", "training/__init__.py", "training/common", "training/stylegan2",
                  "training/unsup3d", "training/boundaries", "training/fusion_pairs"),
            options=(
                Option("unsup3d", str | None, "an Unsup3d checkpoint to use instead of the train-unsup3d run's "
                       "(e.g. the official SD-GAN checkpoint030.pth)", key="unsup3d", path="always"),
            ),
            describe="training.fusion_pairs.summary:describe",
            replaced_by=(("train-unsup3d", "unsup3d"),),
            cli="direct",
            cli_help="render, landmark, composite and shard fusion training pairs in this process (torchrun-ready)",
        ),
        StageSpec(
            "train-fusion",
            "train the SD-GAN 3D-aware fusion network (the per-sample offset n_o), one per attribute",
            ("fusion-pairs",),
            module="training.fusion.stage",
            config_class="TrainFusionConfig",
            code=("data_catalog", "training/__init__.py", "training/common", "training/stylegan2",
                  "training/fusion_pairs", "training/fusion"),
            options=(
                Option("pairs", str | None, "fusion-pairs run id (default: the current fusion-pairs run)",
                       key="pairs"),
                Option("resume", str | None, "continue a run: run id, run folder or checkpoint (.pt)", key="resume",
                       path="if_exists"),
                Option("init", str | None, "start from these fusion weights (e.g. the official checkpoint_latest.pt)",
                       key="init", path="always"),
            ),
            describe="training.fusion.summary:describe",
            cli="direct",
            cli_help="train (or resume) the fusion networks on a fusion-pairs run in this process (torchrun-ready)",
        ),
        StageSpec(
            "synthesize",
            "put a mask, sunglasses or frame glasses on generated faces: origin, basis G(w + n_b), ours G(w + n_b + n_o)",
            ("train-fusion",),
            module="inference.synthesis.stage",
            config_class="SynthesizeConfig",
            code=("data_catalog", "alignment", "training/__init__.py", "training/common", "training/stylegan2",
                  "training/unsup3d", "training/fusion_pairs", "training/fusion", "inference/__init__.py",
                  "inference/synthesis"),
            options=(
                Option("attribute", list[str] | None, "attribute to synthesize (repeatable; default: all the fusion "
                       "networks have)", choices=("face_mask", "sunglasses", "frame_glasses")),
                Option("fusion_run", str | None, "train-fusion run id or folder (default: the current run)",
                       key="fusion_run", path="if_exists"),
                Option("fusion", str | None, "fusion checkpoint (e.g. the official checkpoint_latest.pt) for every "
                       "attribute, or a train-fusion run folder", key="fusion", path="always"),
                Option("generator", str | None, "StyleGAN2 checkpoint (e.g. the official network-snapshot-020180.pt)",
                       key="generator", path="always"),
                Option("unsup3d", str | None, "Unsup3d checkpoint (e.g. the official checkpoint030.pth)", key="unsup3d",
                       path="always"),
                Option("test_w", str | None, "test w: the official w_<kind>_test_<N>.json or a test_w.npy",
                       key="test_w", path="always"),
                Option("test_nb", str | None, "n_b: the official <kind>_interfacegan_test_<N>.json or a "
                       "test_nb_<kind>.npy", key="test_nb", path="always"),
                Option("template", str | None, "template PNG (e.g. the official templates/mask/surgical.png) for "
                       "the --attribute given"),
                Option("limit", int | None, "first N test samples per attribute", key="limit"),
                Option("batch_size", int | None, "samples per batch", key="batch_size"),
                Option("device", str | None, "cpu, cuda, cuda:N or auto", key="runtime.device"),
                Option("seed", int | None, "runtime seed", key="runtime.seed"),
                Option("truncation", float | None, "psi (default: the pairs run's; official files: 0.5)",
                       key="truncation"),
                Option("minmax", bool, "save with the official per-image min-max normalisation (distorts metrics)",
                       key="minmax", default=False),
            ),
            overrides="inference.synthesis.shortcuts:synthesize_overrides",
            describe="inference.synthesis.summary:describe",
            replaced_by=(("train-fusion", "fusion"),),
            cli="direct",
            cli_help="render origins, basis and SD-GAN edits of the test set, from our models or the official files",
        ),
        StageSpec(
            "evaluate",
            "score the syntheses against the baselines (attribute success, identity, FID/KID, pixels) and report",
            ("shard", "train-classifier", "synthesize"),
            module="inference.evaluation.stage",
            config_class="EvaluateConfig",
            code=("data_catalog", "alignment", "training/__init__.py", "training/common", "training/classifier",
                  "training/stylegan2", "training/fusion_pairs", "training/fusion", "inference/metrics",
                  "inference/__init__.py", "inference/synthesis/__init__.py", "inference/synthesis/layout.py",
                  "inference/evaluation"),
            options=(
                Option("synthesis", str | None, "synthesize run id or folder (default: the current run)",
                       key="synthesis", path="if_exists"),
                Option("classifier", str | None, "attribute classifier checkpoint instead of the train-classifier "
                       "run's", key="classifier", path="always"),
                Option("reference", str | None, "FID reference: a dataset version id, an image folder, or none",
                       key="reference", path="if_exists"),
                Option("inception", str | None, "Inception TorchScript for FID/KID (e.g. inception-2015-12-05.pt)",
                       key="inception", path="always"),
                Option("arcface", str | None, "insightface arcface_torch IResNet weights for ArcFace cosine",
                       key="identity.arcface", path="always"),
                Option("device", str | None, "cpu, cuda, cuda:N or auto", key="runtime.device"),
            ),
            describe="inference.evaluation.summary:describe",
            replaced_by=(("train-classifier", "classifier"), ("shard", "reference")),
            cli="direct",
            cli_help="score a synthesis and write reporting/<run-id>/report.html, report.md and metrics.json",
        ),
        StageSpec(
            "catalog-verify",
            "check that every catalog reference resolves and every blob hashes to its name",
            module="data_catalog.verify",
            config_class="VerifyConfig",
            code=("data_catalog",),
            cacheable=False,
        ),
    ]
}

PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in [
        Pipeline("build-megn", "build a MEGN dataset version: crawl, align and shard", ("crawl", "align", "shard")),
        Pipeline("reproduce", "the whole DAG in order, then catalog-verify (stages not built yet are reported)",
                 tuple(STAGES)),
    ]
}

# The order `reproduce` walks: upstream stages always come first (a test checks it).
DAG_ORDER: tuple[str, ...] = tuple(STAGES)


def get(name: str) -> StageSpec:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None


def code_paths(stage: str) -> tuple[str, ...]:
    """The code paths of a declared stage; an undeclared one (a test's toy stage) is covered by data_catalog."""
    spec = STAGES.get(stage)
    return spec.code if spec is not None else ("data_catalog",)


def flow_names() -> list[str]:
    """Every deployable flow: each built stage, then the pipelines."""
    return [name for name, spec in STAGES.items() if spec.built] + list(PIPELINES)


def flow_stages(name: str) -> tuple[str, ...]:
    if name in PIPELINES:
        return PIPELINES[name].stages
    if name in STAGES and STAGES[name].built:
        return (name,)
    raise KeyError(f"unknown flow {name!r}; flows: {', '.join(flow_names())}")
