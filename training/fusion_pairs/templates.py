"""The attribute template of each pair: a built-in drawing, a seeded random style, or a template PNG with anchors.

`alignment.attributes.composite` places a template by its named anchors. Built-in templates carry them; a bare
RGBA PNG (SD-GAN's `templates/mask/surgical.png`, `templates/glasses/glasses_5.png`, `templates/frame_glasses/
normal_1.png`) does not, so they are read off its alpha (pixels with alpha >= 128 are "solid"), matching where
the built-in drawings put theirs (checked against them in the tests):

- face mask: `nose_bridge` is the top of the solid centre column (the nose peak of the upper edge), `chin` 95%
  of the way from there to the bottom of that column (a mask wraps a little under the chin), and the cheeks
  are the ends of the solid run through the centre on the row 27% of the way from nose to chin (ear loops,
  separated from the body by transparent gaps, do not count). Targets: dlib points 28, 8, 2 and 14.
- glasses: the eyes are the alpha-weighted centroids of the left and right halves of the alpha bounding box
  (a lens, or the ring of a frame, is centred on its eye), the temples the box's left and right edges at the
  eyes' mean height (the hinges). Targets: the eye centres and the jaw line at eye height.

Any anchor can be given instead in the config (`templates.anchors`), in the PNG's pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from alignment.attributes import Template, make_template, random_template
from training.fusion_pairs.config import ANCHOR_NAMES, RANDOM_TEMPLATE, TemplatesConfig
from training.fusion_pairs.format import ATTRIBUTES

SOLID = 128  # alpha at or above which a pixel belongs to the template's body
VISIBLE = 8  # alpha above which a pixel counts for the bounding box (ignores faint haze)
MASK_CHIN = 0.95  # chin anchor: this far from the nose bridge to the bottom of the centre column
MASK_CHEEK = 0.27  # cheek row: this far from nose bridge to chin (alignment.attributes' mask geometry)


class TemplateError(ValueError):
    """A template PNG that cannot be used (not RGBA, empty alpha, no solid body where an anchor needs one)."""


def _solid_run(row: np.ndarray, centre: int) -> tuple[int, int] | None:
    """First and last index of the run of True containing `centre` (None when the centre is not solid)."""
    if not row[centre]:
        return None
    left, right = centre, centre
    while left > 0 and row[left - 1]:
        left -= 1
    while right < len(row) - 1 and row[right + 1]:
        right += 1
    return left, right


def mask_anchors(alpha: np.ndarray) -> dict[str, tuple[float, float]]:
    """Face-mask anchors from the alpha channel of a bare mask PNG (see the module docstring)."""
    xs = np.nonzero(alpha > VISIBLE)[1]
    if xs.size == 0:
        raise TemplateError("the template's alpha channel is empty")
    centre = round((int(xs.min()) + int(xs.max())) / 2)
    column = np.nonzero(alpha[:, centre] >= SOLID)[0]
    if column.size == 0:
        raise TemplateError("a face-mask template needs a solid body through its horizontal centre")
    top, bottom = float(column.min()), float(column.max())
    chin = top + MASK_CHIN * (bottom - top)
    cheek_y = round(top + MASK_CHEEK * (chin - top))
    run = _solid_run(alpha[cheek_y] >= SOLID, centre)
    if run is None:
        raise TemplateError(f"no solid body at the cheek row {cheek_y} of the face-mask template")
    return {"nose_bridge": (float(centre), top), "chin": (float(centre), chin),
            "left_cheek": (float(run[0]), float(cheek_y)), "right_cheek": (float(run[1]), float(cheek_y))}


def glasses_anchors(alpha: np.ndarray) -> dict[str, tuple[float, float]]:
    """Glasses anchors from the alpha channel of a bare glasses PNG (see the module docstring)."""
    xs = np.nonzero(alpha > VISIBLE)[1]
    if xs.size == 0:
        raise TemplateError("the template's alpha channel is empty")
    x0, x1 = float(xs.min()), float(xs.max())
    middle = (x0 + x1) / 2
    weight = alpha.astype(np.float64)
    grid_y, grid_x = np.mgrid[:alpha.shape[0], :alpha.shape[1]]
    eyes = []
    for side in (grid_x < middle, grid_x >= middle):
        mass = (weight * side).sum()
        if mass <= 0:
            raise TemplateError("a glasses template needs something on both sides of its centre")
        eyes.append(((weight * side * grid_x).sum() / mass, (weight * side * grid_y).sum() / mass))
    eye_y = (eyes[0][1] + eyes[1][1]) / 2
    return {"left_eye": (float(eyes[0][0]), float(eyes[0][1])), "right_eye": (float(eyes[1][0]), float(eyes[1][1])),
            "left_temple": (x0, eye_y), "right_temple": (x1, eye_y)}


def png_template(path: str | Path, attribute: str,
                 anchors: dict[str, tuple[float, float]] | None = None) -> Template:
    """A template from an RGBA PNG (straight alpha), its anchors from the alpha unless given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"template PNG for {attribute} not found: {path}")
    try:
        with Image.open(path) as image:
            if "A" not in image.getbands() and "transparency" not in image.info:
                raise TemplateError(f"{path} has no alpha channel: a template PNG must be RGBA (transparent "
                                    "outside the attribute)")
            rgba = np.asarray(image.convert("RGBA"), np.uint8).copy()
    except OSError as exc:  # PIL's UnidentifiedImageError, truncated files
        raise TemplateError(f"template PNG for {attribute} is not a readable image: {path} ({exc})") from exc
    try:
        found = mask_anchors(rgba[..., 3]) if attribute == "face_mask" else glasses_anchors(rgba[..., 3])
    except TemplateError as exc:
        raise TemplateError(f"{path}: {exc}") from exc
    found.update({name: (float(x), float(y)) for name, (x, y) in (anchors or {}).items()})
    rgba.flags.writeable = False
    return Template(name=path.stem, attribute=attribute, rgba=rgba, anchors=found)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class TemplateSpec:
    """How one attribute's template is chosen (plain data: it travels in the chunk plan)."""

    attribute: str
    kind: str  # builtin | random | png
    name: str  # built-in name, "random" or the PNG's file name
    size: int
    path: str | None = None
    sha256: str | None = None
    anchors: dict[str, tuple[float, float]] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What pairs.json says about it."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.kind == "png":
            out.update(path=self.path, sha256=self.sha256, anchors={k: list(v) for k, v in self.anchors.items()})
        else:
            out["size"] = self.size
        return out


def template_specs(config: TemplatesConfig) -> dict[str, TemplateSpec]:
    """One spec per attribute the config makes pairs for; PNGs are read now (their anchors recorded)."""
    specs = {}
    for attribute in config.attributes:
        value = getattr(config, attribute)
        png = config.png(attribute)
        if png is not None:
            template = png_template(png, attribute, config.anchors.get(attribute))
            specs[attribute] = TemplateSpec(attribute, "png", png.name, config.size, str(png.resolve()),
                                            file_sha256(png), dict(template.anchors))
        elif value == RANDOM_TEMPLATE:
            specs[attribute] = TemplateSpec(attribute, "random", RANDOM_TEMPLATE, config.size)
        else:
            specs[attribute] = TemplateSpec(attribute, "builtin", value, config.size)
    return specs


class TemplateBook:
    """The template of each (pair, attribute): fixed ones built once; random ones seeded by the pair's z seed."""

    def __init__(self, specs: dict[str, TemplateSpec]) -> None:
        self.specs = specs
        self._fixed: dict[str, Template] = {}
        for attribute, spec in specs.items():
            if spec.kind == "png":
                if file_sha256(Path(spec.path)) != spec.sha256:
                    raise TemplateError(f"{spec.path} changed while the pairs were being made")
                self._fixed[attribute] = png_template(spec.path, attribute, spec.anchors)
            elif spec.kind == "builtin":
                self._fixed[attribute] = make_template(spec.name, spec.size)

    def get(self, attribute: str, seed: int) -> tuple[Template, dict[str, Any]]:
        """(template, what the sample's json records about it)."""
        spec = self.specs[attribute]
        if spec.kind != "random":
            return self._fixed[attribute], {"kind": spec.kind, "name": spec.name}
        rng_seed = [int(seed), ATTRIBUTES.index(attribute)]
        template = random_template(attribute, np.random.default_rng(rng_seed), spec.size)
        return template, {"kind": "random", "name": template.name, "rng_seed": rng_seed}


__all__ = ["ANCHOR_NAMES", "TemplateBook", "TemplateError", "TemplateSpec", "glasses_anchors", "mask_anchors",
           "png_template", "template_specs"]
