"""68 landmarks of a generated face: detected (alignment's detector + dlib's 68-point model) or FFHQ's canonical ones.

A StyleGAN2 trained on FFHQ-aligned crops draws every face where the FFHQ recipe puts it, so when detection fails
(the demo's 32 px blobs, a face the detector misses) the canonical positions are a sound stand-in: the mean dlib
face of OpenFace's `align_dlib.TEMPLATE` (68 points averaged over many faces, Apache-2.0), mapped into the crop
exactly as `alignment.ffhq` maps a photo's landmarks (its quad from the eye centres and mouth corners). At 1024 px
that puts the eye centres at (384, 484) and (640, 484) and the mouth centre at (512, 763), FFHQ's known layout.

A detection is also refused when its eyes or mouth lie farther than `max_offset` inter-ocular distances from
the canonical ones (a background face, a wrong fit): an aligned generated face cannot be elsewhere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from alignment.ffhq import ffhq_quad

# OpenFace (cmusatyalab/openface, openface/align_dlib.py, Apache-2.0): mean dlib 68-point landmarks, unit box.
OPENFACE_MEAN_68 = np.array([
    (0.0792396913815, 0.339223741112), (0.0829219487236, 0.456955367943), (0.0967927109165, 0.575648016728),
    (0.122141515615, 0.691921601066), (0.168687863544, 0.800341263616), (0.239789390707, 0.895732504778),
    (0.325662452515, 0.977068762493), (0.422318282013, 1.04329000149), (0.531777802068, 1.06080371126),
    (0.641296298053, 1.03981924107), (0.738105872266, 0.972268833998), (0.824444363295, 0.889624082279),
    (0.894792677532, 0.792494155836), (0.939395486253, 0.681546643421), (0.96111933829, 0.562238253072),
    (0.970579841181, 0.441758925744), (0.971193274221, 0.322118743967), (0.163846223133, 0.249151738053),
    (0.21780354657, 0.204255863861), (0.291299351124, 0.192367318323), (0.367460241458, 0.203582210627),
    (0.4392945113, 0.233135599851), (0.586445962425, 0.228141644834), (0.660152671635, 0.195923841854),
    (0.737466449096, 0.182360984545), (0.813236546239, 0.192828009114), (0.8707571886, 0.235293377042),
    (0.51534533827, 0.31863546193), (0.516221448289, 0.396200446263), (0.517118861835, 0.473797687758),
    (0.51816430343, 0.553157797772), (0.433701156035, 0.604054457668), (0.475501237769, 0.62076344024),
    (0.520712933176, 0.634268222208), (0.565874114041, 0.618796581487), (0.607054002672, 0.60157671656),
    (0.252418718401, 0.331052263829), (0.298663015648, 0.302646354002), (0.355749724218, 0.303020650651),
    (0.403718978315, 0.33867711083), (0.352507175597, 0.349987615384), (0.296791759886, 0.350478978225),
    (0.631326076346, 0.334136672344), (0.679073381078, 0.29645404267), (0.73597236153, 0.294721285802),
    (0.782865376271, 0.321305281656), (0.740312274764, 0.341849376713), (0.68499850091, 0.343734332172),
    (0.353167761422, 0.746189164237), (0.414587777921, 0.719053835073), (0.477677654595, 0.706835892494),
    (0.522732900812, 0.717092275768), (0.569832064287, 0.705414478982), (0.635195811927, 0.71565572516),
    (0.69951672331, 0.739419187253), (0.639447159575, 0.805236879972), (0.576410514055, 0.835436670169),
    (0.525398405766, 0.841706377792), (0.47641545769, 0.837505914975), (0.41379548902, 0.810045601727),
    (0.380084785646, 0.749979603086), (0.477955996282, 0.74513234612), (0.523389793327, 0.748924302636),
    (0.571057789237, 0.74332894691), (0.672409137852, 0.744177032192), (0.572539621444, 0.776609286626),
    (0.5240106503, 0.783370783245), (0.477561227414, 0.778476346951)], dtype=np.float64)

DETECTED = "detected"
CANONICAL = "ffhq_canonical"


@functools.cache
def _unit_ffhq() -> np.ndarray:
    """The mean face in FFHQ crop units: (0, 0) the crop's top-left corner, (1, 1) its bottom-right."""
    points = OPENFACE_MEAN_68 * 1000.0  # pixel-sized, as the recipe expects
    top_left, bottom_left, _, top_right = ffhq_quad(points)
    basis = np.stack([top_right - top_left, bottom_left - top_left], axis=1)
    return (points - top_left) @ np.linalg.inv(basis).T


def ffhq_landmarks(size: int) -> np.ndarray:
    """Canonical landmarks (68, 2) float32 of a size x size FFHQ-aligned image, pixel-index coordinates
    (alignment.ffhq's convention: the image's outer corners at -0.5 and size - 0.5)."""
    return (_unit_ffhq() * size - 0.5).astype(np.float32)


def _centres(landmarks: np.ndarray) -> np.ndarray:
    """Image-left eye, image-right eye and mouth centres (3, 2)."""
    return np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[48:68].mean(0)])


def plausible(landmarks: np.ndarray, canonical: np.ndarray, max_offset: float) -> bool:
    """Eyes and mouth each within `max_offset` canonical inter-ocular distances of the canonical ones."""
    if landmarks.shape != (68, 2) or not np.isfinite(landmarks).all():
        return False
    expected = _centres(canonical)
    iod = float(np.hypot(*(expected[1] - expected[0])))
    offsets = np.hypot(*(_centres(landmarks) - expected).T)
    return bool((offsets <= max_offset * iod).all())


@dataclass(frozen=True)
class Found:
    landmarks: np.ndarray  # (68, 2) float32, origin pixels
    source: str  # DETECTED | CANONICAL


class LandmarkFinder:
    """Landmarks for one image size: the first plausible detection (highest score first), else canonical.

    `detector` is one of alignment.detect.DETECTORS or "none" (always canonical: no model is loaded).
    """

    def __init__(self, detector: str, size: int, score_threshold: float | None = None,
                 model_dir: str | None = None, max_offset: float = 0.5) -> None:
        self.size = size
        self.max_offset = max_offset
        self.canonical = ffhq_landmarks(size)
        self._detector = None
        self._predictor = None
        self.version = "none"
        if detector != "none":
            from alignment.detect import LandmarkPredictor, make_detector

            self._detector = make_detector(detector, score_threshold, model_dir)
            self._predictor = LandmarkPredictor()
            self.version = f"{self._detector.version}; {self._predictor.version}"

    def find(self, image: np.ndarray) -> Found:
        """Landmarks of one RGB uint8 (size, size, 3) image."""
        if image.shape[:2] != (self.size, self.size):
            raise ValueError(f"expected a {self.size} px image, got {image.shape}")
        if self._detector is not None:
            for detection in self._detector.detect(image):
                landmarks = self._predictor.predict(image, detection.box)
                if plausible(landmarks, self.canonical, self.max_offset):
                    return Found(landmarks.astype(np.float32), DETECTED)
        return Found(self.canonical.copy(), CANONICAL)


__all__ = ["CANONICAL", "DETECTED", "OPENFACE_MEAN_68", "Found", "LandmarkFinder", "ffhq_landmarks", "plausible"]
