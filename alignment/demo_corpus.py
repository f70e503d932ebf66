"""The offline demo corpus: real face photos shipped inside installed packages, given attributes and augmented.

The demo crawls a MEGN query plan (masks, sunglasses, frame glasses, plain faces) from the loopback search
emulator, so it needs a few hundred photos of each kind without any network. Sources: scikit-image's
`astronaut` (NASA, public domain) and insightface's test photos `t1.jpg` (six faces) and
`Tom_Hanks_54745.png`. Faces and 68 landmarks are found once per photo; per class, every face gets an
attribute composited by the alignment stage's code (a seeded random template per face), then each composited
photo becomes augmented variants (flip, crop, scale, rotation, colour, JPEG quality, padding onto a plain,
gradient or noise background) that keep one chosen face whole and large enough to detect.
The folder gets an `index.json` (file, keywords, title, licence, attribute) that the loopback emulator reads.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from alignment.attributes import ATTRIBUTES, Template, composite, random_template, shadow_radius
from alignment.detect import Detector, LandmarkPredictor, make_detector
from data_catalog.atomic import atomic_write_bytes, atomic_write_text

CORPUS_VERSION = 2
CLASSES = ("none", *ATTRIBUTES)
# Every keyword of the demo plan's class (en, ko) plus synonyms. None may be a substring of another class's
# plan keyword: the emulator matches a keyword inside the query or the query inside a keyword.
KEYWORDS = {
    "none": ["face portrait", "얼굴 사진", "portrait photo", "인물 사진", "顔写真"],
    "face_mask": ["person wearing face mask", "마스크 쓴 사람", "masked face", "마스크 착용 사진"],
    "sunglasses": ["person wearing sunglasses", "선글라스 쓴 사람", "sunglasses portrait",
                   "선글라스 착용 사진"],
    "frame_glasses": ["person wearing glasses", "안경 쓴 사람", "eyeglasses portrait", "안경 착용 사진"],
}
TITLES = {"none": "Face portrait", "face_mask": "Person wearing a face mask",
          "sunglasses": "Person wearing sunglasses", "frame_glasses": "Person wearing glasses"}
DEFAULT_VARIANTS = 24  # per photo and class: 3 photos x 4 classes x 24 = 288 images
MIN_SOURCE_SIDE = 224  # smaller photos (Tom Hanks is 112 px) are enlarged before detection and compositing
MIN_IOD = 34.0  # inter-ocular px of the chosen face in every variant; detectors find faces from ~30
MAX_IOD = 110.0
MAX_SIDE = 768  # longest side of a variant before padding: keeps files and the build small
ATTEMPTS = 4  # augmentations tried per variant until the detector finds a face in it
LOOKS = 4  # composites per photo and class (fresh templates); variants cycle through them
POOL_SIZE = 8  # random templates per attribute, drawn once per build
TEMPLATE_SIZE = 256  # drawing cost grows with the square; faces here are at most ~250 px wide


@dataclass(frozen=True)
class SourcePhoto:
    """A real photo with the 68 landmarks of each face the detector found in it."""

    name: str
    image: np.ndarray
    licence: str
    faces: tuple[np.ndarray, ...]


# ----------------------------------------------------------------------------------------------- sources


def _package_file(package: str, *parts: str) -> Path:
    """A data file of an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; it ships the demo photos")
    path = Path(spec.submodule_search_locations[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r}")
    return path


def source_photos() -> Iterator[tuple[str, Image.Image, str]]:
    """(name, image, licence) of every real photo the demo builds on."""
    from skimage import data as skimage_data

    yield "astronaut", Image.fromarray(skimage_data.astronaut()), "public domain (NASA), via scikit-image"
    for name in ("t1.jpg", "Tom_Hanks_54745.png"):
        path = _package_file("insightface", "data", "images", name)
        yield Path(name).stem.lower(), Image.open(path).convert("RGB"), "test image shipped with insightface"


def _iod(landmarks: np.ndarray) -> float:
    return float(np.hypot(*(landmarks[42:48].mean(0) - landmarks[36:42].mean(0))))


def analysed_photos(detector: Detector) -> list[SourcePhoto]:
    """Every source photo with its faces, detected once: compositing and cropping both need them."""
    predictor = LandmarkPredictor()
    photos = []
    for name, image, licence in source_photos():
        factor = math.ceil(MIN_SOURCE_SIDE / min(image.size))
        if factor > 1:
            image = image.resize((image.width * factor, image.height * factor), Image.Resampling.LANCZOS)
        rgb = np.asarray(image, np.uint8)
        faces = tuple(predictor.predict(rgb, d.box) for d in detector.detect(rgb))
        if not faces:
            raise RuntimeError(f"no face found in the demo photo {name!r}")
        photos.append(SourcePhoto(name, rgb, licence, faces))
    return photos


# ----------------------------------------------------------------------------------------------- attributes


def _template(attribute: str, seed: int, number: int) -> Template:
    rng = np.random.default_rng([seed, 1 + ATTRIBUTES.index(attribute), number])
    return random_template(attribute, rng, TEMPLATE_SIZE)


def template_pool(attribute: str, seed: int) -> list[Template]:
    """POOL_SIZE random templates, each from its own rng so they can be drawn in parallel (drawing is the
    slowest part of a small build); face masks always include both the surgical and the cloth style."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool_runner:
        pool = list(pool_runner.map(lambda n: _template(attribute, seed, n), range(POOL_SIZE)))
    while attribute == "face_mask" and len({t.name for t in pool}) < 2:
        pool.append(_template(attribute, seed, len(pool)))
    return pool


def dressed(photo: SourcePhoto, pool: list[Template], rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """The photo with a template from the pool on every face, and the template names used."""
    image, names = photo.image.copy(), []
    height, width = image.shape[:2]
    for landmarks in photo.faces:
        template = pool[int(rng.integers(len(pool)))]
        # Only a face-sized neighbourhood can change (ear loops and temples reach ~1 iod past the jaw), and
        # compositing a region instead of the whole 1280 px photo is several times faster.
        reach = 2.0 * _iod(landmarks) + shadow_radius(landmarks)
        (x0, y0), (x1, y1) = np.floor(landmarks.min(0) - reach), np.ceil(landmarks.max(0) + reach)
        x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1))
        placed, _ = composite(image[y0:y1, x0:x1], landmarks - (x0, y0), template)
        image[y0:y1, x0:x1] = np.asarray(placed)
        names.append(template.name)
    return image, names


# ----------------------------------------------------------------------------------------------- augmentation


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A plain, gradient or noise canvas: what a photo pasted into a page or collage sits on."""
    kind = ("plain", "gradient", "noise")[int(rng.integers(3))]
    first = rng.uniform(0, 255, 3).astype(np.float32)
    if kind == "plain":
        return np.broadcast_to(first.astype(np.uint8), (height, width, 3)).copy()
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = ((t - t.min()) / max(float(t.max() - t.min()), 1.0))[..., None]
        return (first * (1 - t) + rng.uniform(0, 255, 3).astype(np.float32) * t).astype(np.uint8)
    coarse = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, rng.uniform(2, 12), (height, width, 1)).astype(np.float32)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def recolour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and white balance jitter; sometimes greyscale."""
    x = image.astype(np.float32)
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    saturation = 0.0 if rng.random() < 0.06 else rng.uniform(0.6, 1.4)
    x = grey[..., None] + saturation * (x - grey[..., None])
    x = (x - x.mean()) * rng.uniform(0.75, 1.25) + x.mean() * rng.uniform(0.8, 1.2)
    x *= rng.uniform(0.93, 1.07, 3).astype(np.float32)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _window(size: tuple[int, int], face: tuple[float, float, float, float], limit: float,
            rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A crop (x0, y0, x1, y1) inside the image that holds the whole face box, at most `limit` px a side."""
    width, height = size
    fx0, fy0, fx1, fy1 = face
    lo_w, lo_h = fx1 - fx0, fy1 - fy0
    w = rng.uniform(lo_w, max(lo_w, min(width, limit)))
    h_lo, h_hi = max(lo_h, 0.6 * w), min(height, limit, 1.7 * w)
    h = rng.uniform(h_lo, h_hi) if h_lo <= h_hi else rng.uniform(lo_h, max(lo_h, min(height, limit)))
    x0 = rng.uniform(max(0.0, fx1 - w), max(0.0, min(fx0, width - w)))
    y0 = rng.uniform(max(0.0, fy1 - h), max(0.0, min(fy0, height - h)))
    return x0, y0, x0 + w, y0 + h


def _face_box(landmarks: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Landmarks' box with room for forehead and ears, clipped to the image."""
    iod = _iod(landmarks)
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    return (max(0.0, x0 - 0.3 * iod), max(0.0, y0 - 0.9 * iod),
            min(float(size[0]), x1 + 0.3 * iod), min(float(size[1]), y1 + 0.2 * iod))


def _inside(points: np.ndarray, width: int, height: int) -> bool:
    return bool(np.all(points >= 0) and np.all(points[:, 0] < width) and np.all(points[:, 1] < height))


def augment(image: np.ndarray, faces: tuple[np.ndarray, ...], rng: np.random.Generator) -> np.ndarray:
    """One variant: a random face stays whole, with MIN_IOD..MAX_IOD px between its eyes."""
    height, width = image.shape[:2]
    if rng.random() < 0.5:
        image = image[:, ::-1]
        faces = tuple(np.c_[width - 1 - f[:, 0], f[:, 1]] for f in faces)
    face = faces[int(rng.integers(len(faces)))]
    iod = _iod(face)
    top = max(MIN_IOD * 1.1, min(MAX_IOD, 1.25 * iod))
    scale = math.exp(rng.uniform(math.log(MIN_IOD * 1.05), math.log(top))) / iod
    padding = rng.uniform(0.08, 0.35, 4) if rng.random() < 0.35 else None
    angle = rng.uniform(-15, 15) if rng.random() < 0.7 else 0.0
    limit = MAX_SIDE / scale / (1.0 if padding is None else 1.0 + padding.max() * 2)
    x0, y0, x1, y1 = _window((width, height), _face_box(face, (width, height)), limit, rng)
    if scale < 0.8:  # area-average first: a bilinear warp alone would alias when shrinking
        image = cv2.resize(np.ascontiguousarray(image), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        face, (x0, y0, x1, y1), scale = face * scale, (x0 * scale, y0 * scale, x1 * scale, y1 * scale), 1.0
    out_w, out_h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    image = np.ascontiguousarray(image)
    if padding is None:
        for attempt in range(4):  # rotation may push the face out of the crop: straighten until it fits
            matrix = cv2.getRotationMatrix2D(centre, angle * (1 - attempt / 3), scale)
            matrix[:, 2] += (out_w / 2 - centre[0], out_h / 2 - centre[1])
            if _inside(face @ matrix[:, :2].T + matrix[:, 2], out_w, out_h):
                break
        out = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    else:
        crop = image[int(y0):math.ceil(y1), int(x0):math.ceil(x1)]
        rad = math.radians(angle)
        rot_w = out_w * abs(math.cos(rad)) + out_h * abs(math.sin(rad))
        rot_h = out_w * abs(math.sin(rad)) + out_h * abs(math.cos(rad))
        side = max(rot_w, rot_h)
        left, right, above, below = (padding * side).tolist()
        canvas_w, canvas_h = round(rot_w + left + right), round(rot_h + above + below)
        here = (centre[0] - int(x0), centre[1] - int(y0))
        matrix = cv2.getRotationMatrix2D(here, angle, scale)
        matrix[:, 2] += (left + rot_w / 2 - here[0], above + rot_h / 2 - here[1])
        warped = cv2.warpAffine(crop, matrix, (canvas_w, canvas_h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT)
        cover = cv2.warpAffine(np.ones(crop.shape[:2], np.float32), matrix, (canvas_w, canvas_h),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
        back = background(canvas_h, canvas_w, rng).astype(np.float32)
        out = np.round(warped * cover + back * (1 - cover)).astype(np.uint8)
    return recolour(out, rng)


def jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- build


def detectable_variant(image: np.ndarray, faces: tuple[np.ndarray, ...], detector: Detector,
                       key: list[int]) -> tuple[np.ndarray, int]:
    """(variant, JPEG quality) that the detector finds a face in, so every served image is usable downstream;
    tight crops of an occluded face (Tom Hanks's photo has no surroundings) are sometimes missed. After
    ATTEMPTS misses the last try is kept (has not happened with the default seed)."""
    for attempt in range(ATTEMPTS):
        rng = np.random.default_rng([*key, attempt])
        out, quality = augment(image, faces, rng), int(rng.integers(55, 96))
        if detector.detect(out):
            break
    return out, quality


def _photo_entries(photo: SourcePhoto, index: int, pools: dict[str, list[Template]], detector: Detector,
                   variants: int, seed: int) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(index entry, JPEG bytes) of every variant of one photo; each rng is keyed so that outputs
    depend only on the seed and their own position."""
    for class_index, attribute in enumerate(CLASSES):
        looks = []
        for look in range(min(variants, LOOKS)):
            rng = np.random.default_rng([seed, index, class_index, 1_000 + look])
            looks.append(dressed(photo, pools[attribute], rng) if attribute != "none" else (photo.image, []))
        for variant in range(variants):
            image, styles = looks[variant % len(looks)]
            data = jpeg(*detectable_variant(image, photo.faces, detector, [seed, index, class_index, variant]))
            entry = {"file": f"{attribute.replace('_', '-')}-{photo.name}-{variant:03d}.jpg",
                     "keywords": KEYWORDS[attribute], "title": f"{TITLES[attribute]} ({photo.name}, {variant + 1})",
                     "licence": photo.licence, "attribute": attribute, "source": photo.name,
                     "styles": sorted(set(styles))}
            yield entry, data


def _current(index_path: Path, params: dict[str, int]) -> dict[str, Any] | None:
    """The existing index if it is readable, of this version and parameters, and its files all exist."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("version") != CORPUS_VERSION or index.get("params") != params:
        return None
    if not all((index_path.parent / str(e.get("file"))).is_file() for e in index.get("images", [])):
        return None
    return index


def build_demo_corpus(folder: str | Path, variants_per_class: int = DEFAULT_VARIANTS, seed: int = 0) -> Path:
    """Write the corpus into `folder`; a no-op when its index.json is of this version and these parameters.

    Deterministic: the same seed and parameters give the same bytes. A rebuild removes the images the old
    index listed that the new one does not (nothing else in the folder is touched)."""
    if variants_per_class < 1:
        raise ValueError(f"variants_per_class must be >= 1, got {variants_per_class}")
    folder = Path(folder)
    index_path = folder / "index.json"
    params = {"variants_per_class": int(variants_per_class), "seed": int(seed)}
    if _current(index_path, params) is not None:
        return folder
    try:
        old = json.loads(index_path.read_text(encoding="utf-8")).get("images", [])
    except (OSError, ValueError, AttributeError):
        old = []
    folder.mkdir(parents=True, exist_ok=True)
    pools = {attribute: template_pool(attribute, seed) for attribute in ATTRIBUTES}
    entries = []
    detector = make_detector("retinaface")
    for index, photo in enumerate(analysed_photos(detector)):
        for entry, data in _photo_entries(photo, index, pools, detector, variants_per_class, seed):
            atomic_write_bytes(folder / entry["file"], data, durable=False)  # the index, written last, is durable
            entries.append(entry)
    counts = {c: sum(e["attribute"] == c for e in entries) for c in CLASSES}
    document = {"version": CORPUS_VERSION, "params": params, "classes": counts, "images": entries}
    atomic_write_text(index_path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    written = {e["file"] for e in entries}
    for stale in {str(e.get("file")) for e in old if isinstance(e, dict)} - written:
        if Path(stale).name == stale and Path(stale).suffix.lower() in (".jpg", ".jpeg", ".png"):
            (folder / stale).unlink(missing_ok=True)
    return folder
