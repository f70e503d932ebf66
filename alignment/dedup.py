"""Duplicates and identities among aligned faces.

- exact: sha256 of the aligned pixels (the aligned blob's name);
- near: 64-bit perceptual hashes (imagehash's pHash) within a Hamming distance, found through band
  buckets instead of all pairs (pigeonhole: two hashes within distance d agree exactly on at least one
  of d + 1 bands);
- identity: dlib's 128-d face descriptor, grouped by Chinese-whispers clustering (dlib), so that train
  and validation splits never share a person.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from PIL import Image

from alignment.detect import as_rgb_array
from alignment.models import dlib_model


def perceptual_hash(image: Image.Image | np.ndarray) -> str:
    """pHash of the image or of its mirror, whichever is smaller: a flipped copy hashes the same."""
    import imagehash

    pil = image if isinstance(image, Image.Image) else Image.fromarray(as_rgb_array(image))
    return min(str(imagehash.phash(pil)), str(imagehash.phash(pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT))))


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def near_duplicate_groups(hashes: Sequence[str], max_distance: int) -> list[int]:
    """Group index per hash: hashes within `max_distance` (transitively) share a group (union-find)."""
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    bands = max_distance + 1
    width = max(1, 64 // bands)
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    values = [int(h, 16) for h in hashes]
    for index, value in enumerate(values):
        for band in range(bands):
            shift = band * width
            key = (band, (value >> shift) & ((1 << (width if band < bands - 1 else 64 - shift)) - 1))
            for other in buckets[key]:
                if (value ^ values[other]).bit_count() <= max_distance:
                    parent[root(index)] = root(other)
            buckets[key].append(index)
    roots = [root(i) for i in range(len(hashes))]
    first: dict[int, int] = {}
    return [first.setdefault(r, len(first)) for r in roots]


class FaceDescriber:
    """dlib's ResNet face descriptor (128-d), computed from the 68 landmarks."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(str(dlib_model("descriptor")))

    def describe(self, image: np.ndarray, box: tuple[float, float, float, float], landmarks68: np.ndarray) -> np.ndarray:
        dlib = self._dlib
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks68])
        return np.array(self._model.compute_face_descriptor(as_rgb_array(image), shape), dtype=np.float64)


def identity_clusters(descriptors: Sequence[np.ndarray], threshold: float = 0.5) -> list[int]:
    """Cluster label per descriptor (dlib's Chinese whispers; 0.6 is dlib's same-person distance)."""
    import dlib

    if not descriptors:
        return []
    return list(dlib.chinese_whispers_clustering([dlib.vector(list(map(float, d))) for d in descriptors], threshold))
