"""The folder a synthesize run writes: the single place that names its files (evaluate reads it through this).

    reporting/syntheses/<run-id>/
        config.json                     the SynthesizeConfig
        synthesis.json                  SynthesisInfo: source, generator, truncation, fusion weights, counts
        index.parquet                   one row per (attribute, sample): INDEX_COLUMNS
        report.md                       what was made, with the grids
        <attribute>/origins/0000.png              G(w)                          (official name)
        <attribute>/interfacegan_origins/0000.png G(w + n_b): the basis alone   (official name)
        <attribute>/predict_images/0000.png       G(w + n_b + n_o): SD-GAN       (official name)
        <attribute>/gt/0000.png                   the template composited on the origin by its landmarks
        <attribute>/regions/0000.png              L: where the attribute is (the placed template's alpha)
        <attribute>/grid.png                      rows: origin | basis | ours | GT
        <attribute>/strength/<method>/<alpha>/0000.png   edit-strength sweep of the first samples:
                                                  basis G(w + a·n_b), ours G(w + a·(n_b + n_o))
        strength.parquet                one row per sweep image: STRENGTH_COLUMNS

Images are RGB PNGs of the generator's size, pixels = round((clamp(x, -1, 1) + 1) * 127.5), unless the run was
made with `minmax` (the official per-image min-max normalisation, kept only to reproduce the released images;
`SynthesisInfo.minmax` says so and evaluate warns). File names are `f"{i:04d}.png"` with i the sample's
position in the test set, as the official test.py writes them. All paths in the tables are relative to the run
folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SYNTHESES_DIR = Path("reporting") / "syntheses"
INFO_FILE = "synthesis.json"
INDEX_FILE = "index.parquet"
STRENGTH_FILE = "strength.parquet"
REPORT_FILE = "report.md"
GRID_FILE = "grid.png"
ORIGINS = "origins"
BASIS = "interfacegan_origins"
OURS = "predict_images"
GT = "gt"
REGIONS = "regions"
STRENGTH = "strength"
# Image folders by method name as evaluate and the report call them.
METHOD_FOLDERS = {"origin": ORIGINS, "interfacegan": BASIS, "sdgan": OURS, "template_paste": GT}
SWEEP_METHODS = ("interfacegan", "sdgan")
INDEX_COLUMNS = ("attribute", "index", "name", "key", "seed", "origin", "interfacegan", "sdgan", "template_paste",
                 "region", "nb_norm", "no_norm", "region_area", "landmark_source")
STRENGTH_COLUMNS = ("attribute", "index", "method", "alpha", "path")


def image_name(index: int) -> str:
    """The official test.py's name for the i-th test sample."""
    return f"{index:04d}.png"


def alpha_name(alpha: float) -> str:
    """A sweep folder name that sorts and round-trips: 0.5 -> "a0.50"."""
    return f"a{alpha:.2f}"


@dataclass
class SynthesisInfo:
    """`synthesis.json`: where the inputs came from, so a reader never has to open the config to interpret images."""

    source: str  # "pairs" (a fusion-pairs test split) or "files" (test w / n_b JSON or .npy and model paths)
    attributes: list[str]
    counts: dict[str, int]  # attribute -> samples
    image_size: int
    generator: str
    generator_sha256: str
    truncation: float
    noise_mode: str
    fusion: dict[str, str]  # attribute -> fusion checkpoint used
    fusion_sha256: dict[str, str]
    minmax: bool
    strengths: list[float]
    strength_samples: int
    pairs_run: str | None = None
    test_files: dict[str, str] = field(default_factory=dict)  # what the w and n_b came from
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SynthesisInfo:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, folder: str | Path) -> SynthesisInfo:
        path = Path(folder) / INFO_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a synthesize run folder (no {INFO_FILE})")
        return cls.from_json(path.read_text(encoding="utf-8"))


__all__ = ["BASIS", "GRID_FILE", "GT", "INDEX_COLUMNS", "INDEX_FILE", "INFO_FILE", "METHOD_FOLDERS", "ORIGINS", "OURS",
           "REGIONS", "REPORT_FILE", "STRENGTH", "STRENGTH_COLUMNS", "STRENGTH_FILE", "SWEEP_METHODS", "SYNTHESES_DIR",
           "SynthesisInfo", "alpha_name", "image_name"]
