"""One fusion training pair as stored in a fusion-pairs shard: the single place that names its members.

A sample holds everything train-fusion needs for one latent w and every attribute, so the expensive parts
(the origin synthesis, landmark detection, the Unsup3d canonical maps) are paid once per w:

    <key>.w.npy                  float32 (w_dim,)        the raw, untruncated w (truncation is applied at synthesis)
    <key>.origin.png             uint8 RGB (S, S)        G(w) with the stage's truncation
    <key>.canonical.npy          float16 (9, Sc, Sc)     Unsup3d normal | shading | albedo, each in [-1, 1]
    <key>.landmarks.npy          float32 (68, 2)         dlib-order landmarks in origin pixels
    <key>.json                   {"seed", "split", "landmark_source", "truncation", "attributes": [...], ...}
    <key>.<attr>.nb.npy          float32 (w_dim,)        n_b for this w (InterfaceGAN basis)
    <key>.<attr>.gt.png          uint8 RGB (S, S)        the attribute template composited on the origin
    <key>.<attr>.template.png    uint8 RGB (S, S)        the placed template layer over black (network input)
    <key>.<attr>.region.png      uint8 L (S, S)          the placed alpha: where the attribute is

`landmark_source` is "detected" or "ffhq_canonical" (generated faces are FFHQ-aligned, so when detection
fails the canonical FFHQ positions stand in, and the sample says so).

A fusion-pairs run folder holds `shards/fusion-<split>-NNNNNN.tar` (each with its `_stats.json`) and
`pairs.json` (`PairsIndex`): which generator and truncation made the pairs, so train-fusion renders with the
same ones, and which shards hold each split.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

ATTRIBUTES = ("face_mask", "sunglasses", "frame_glasses")
LANDMARK_SOURCES = ("detected", "ffhq_canonical")
SPLITS = ("train", "test")  # test: the boundaries' held-out test set, never trained on
SHARD_PREFIX = "fusion"
CANONICAL_CHANNELS = 9
INDEX_FILE = "pairs.json"
SHARDS_DIR = "shards"


class PairFormatError(ValueError):
    """A stored sample that does not decode into a valid pair (missing member, wrong shape or dtype)."""


@dataclass
class AttributePair:
    """What one attribute adds to a pair: its basis vector and its three images."""

    nb: np.ndarray  # float32 (w_dim,)
    gt: np.ndarray  # uint8 (S, S, 3)
    template: np.ndarray  # uint8 (S, S, 3)
    region: np.ndarray  # uint8 (S, S)


@dataclass
class FusionPair:
    key: str
    w: np.ndarray  # float32 (w_dim,)
    origin: np.ndarray  # uint8 (S, S, 3)
    canonical: np.ndarray  # float16 (9, Sc, Sc)
    landmarks: np.ndarray  # float32 (68, 2)
    meta: dict[str, Any]
    attributes: dict[str, AttributePair] = field(default_factory=dict)


@dataclass
class PairsIndex:
    """`pairs.json`: what train-fusion needs to know about a fusion-pairs run without opening a shard."""

    generator: str  # absolute path of the StyleGAN2 checkpoint that rendered the origins
    generator_sha256: str
    truncation: float  # psi, applied to w (and later to w + n_b + n_o) towards the generator's mean w
    truncation_mean: str | None  # path of the .npy mean w used (None: the generator's own mean_w estimate)
    attributes: list[str]
    image_size: int
    canonical_size: int
    w_dim: int
    num_ws: int  # the generator's n_latent: w is repeated to (num_ws, w_dim) for synthesis
    counts: dict[str, int]  # split -> samples
    shards: dict[str, list[str]]  # split -> shard paths relative to the run folder, in order
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PairsIndex:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PairFormatError(f"{INDEX_FILE}: unknown keys {unknown}")
        return cls(**data)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _png(array: np.ndarray) -> bytes:
    """PNG with pinned options, so equal pixels give equal bytes (shards are byte-reproducible)."""
    mode = "L" if array.ndim == 2 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), mode).save(buffer, format="PNG", compress_level=6, optimize=False)
    return buffer.getvalue()


def _check(name: str, array: np.ndarray, dtype: Any, shape: Sequence[int | None]) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.dtype(dtype):
        raise PairFormatError(f"{name}: expected dtype {np.dtype(dtype)}, got {array.dtype}")
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        raise PairFormatError(f"{name}: expected shape {tuple(shape)} (None: any), got {array.shape}")
    return array


def validate(pair: FusionPair) -> FusionPair:
    """Shapes and dtypes agree across members; raises PairFormatError naming the first that does not."""
    w = _check("w", pair.w, np.float32, (None,))
    origin = _check("origin", pair.origin, np.uint8, (None, None, 3))
    size = origin.shape[0]
    if origin.shape[1] != size:
        raise PairFormatError(f"origin: expected a square image, got {origin.shape}")
    _check("canonical", pair.canonical, np.float16, (CANONICAL_CHANNELS, None, None))
    _check("landmarks", pair.landmarks, np.float32, (68, 2))
    source = pair.meta.get("landmark_source")
    if source not in LANDMARK_SOURCES:
        raise PairFormatError(f"meta.landmark_source must be one of {LANDMARK_SOURCES}, got {source!r}")
    if not pair.attributes:
        raise PairFormatError("a pair needs at least one attribute")
    for attr, item in pair.attributes.items():
        if attr not in ATTRIBUTES:
            raise PairFormatError(f"unknown attribute {attr!r}; known: {ATTRIBUTES}")
        _check(f"{attr}.nb", item.nb, np.float32, w.shape)
        _check(f"{attr}.gt", item.gt, np.uint8, (size, size, 3))
        _check(f"{attr}.template", item.template, np.uint8, (size, size, 3))
        _check(f"{attr}.region", item.region, np.uint8, (size, size))
    return pair


def encode(pair: FusionPair) -> list[tuple[str, bytes]]:
    """The sample's tar members, in a fixed order (attributes in ATTRIBUTES order)."""
    validate(pair)
    meta = dict(pair.meta, attributes=[a for a in ATTRIBUTES if a in pair.attributes])
    k = pair.key
    members = [
        (f"{k}.canonical.npy", _npy(pair.canonical)),
        (f"{k}.json", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")),
        (f"{k}.landmarks.npy", _npy(pair.landmarks)),
        (f"{k}.origin.png", _png(pair.origin)),
        (f"{k}.w.npy", _npy(pair.w)),
    ]
    for attr in meta["attributes"]:
        item = pair.attributes[attr]
        members += [
            (f"{k}.{attr}.gt.png", _png(item.gt)),
            (f"{k}.{attr}.nb.npy", _npy(item.nb)),
            (f"{k}.{attr}.region.png", _png(item.region)),
            (f"{k}.{attr}.template.png", _png(item.template)),
        ]
    return members


def _load_npy(sample: Mapping[str, Any], ext: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(sample[ext]), allow_pickle=False)
    except KeyError:
        raise PairFormatError(f"sample {sample.get('__key__')!r}: missing member {ext!r}") from None
    except ValueError as exc:
        raise PairFormatError(f"sample {sample.get('__key__')!r}: member {ext!r} is not a valid .npy: {exc}") from exc


def _load_png(sample: Mapping[str, Any], ext: str, mode: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(sample[ext])) as image:
            if image.mode != mode:
                raise PairFormatError(f"sample {sample.get('__key__')!r}: {ext!r} is {image.mode}, expected {mode}")
            return np.asarray(image).copy()
    except KeyError:
        raise PairFormatError(f"sample {sample.get('__key__')!r}: missing member {ext!r}") from None
    except OSError as exc:
        raise PairFormatError(f"sample {sample.get('__key__')!r}: member {ext!r} is not a valid PNG: {exc}") from exc


def decode(sample: Mapping[str, Any], attributes: Sequence[str] | None = None) -> FusionPair:
    """A grouped shard sample ({"__key__", ext: bytes}, as data_catalog.tar_reader yields) -> a validated pair.

    `attributes`: decode only these (train-fusion trains one network per attribute and skips the rest).
    """
    key = str(sample.get("__key__"))
    try:
        meta = json.loads(sample["json"])
    except KeyError:
        raise PairFormatError(f"sample {key!r}: missing member 'json'") from None
    stored = list(meta.get("attributes", []))
    wanted = stored if attributes is None else list(attributes)
    missing = [a for a in wanted if a not in stored]
    if missing:
        raise PairFormatError(f"sample {key!r} has no {missing} (it holds {stored})")
    pair = FusionPair(
        key=key,
        w=_load_npy(sample, "w.npy"),
        origin=_load_png(sample, "origin.png", "RGB"),
        canonical=_load_npy(sample, "canonical.npy"),
        landmarks=_load_npy(sample, "landmarks.npy"),
        meta=meta,
        attributes={
            a: AttributePair(
                nb=_load_npy(sample, f"{a}.nb.npy"),
                gt=_load_png(sample, f"{a}.gt.png", "RGB"),
                template=_load_png(sample, f"{a}.template.png", "RGB"),
                region=_load_png(sample, f"{a}.region.png", "L"),
            )
            for a in wanted
        },
    )
    return validate(pair)
