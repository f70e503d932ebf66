"""Occlusion-aware landmarks: reconcile the detector's 5 points with dlib's 68 before aligning.

Our attributes hide exactly what FFHQ alignment needs: a mask hides the mouth corners, sunglasses the
eyes. dlib's 68-point predictor still places every point and goes astray under occlusion, while a CNN
detector's 5 points (RetinaFace, SCRFD) degrade more gracefully. So each alignment point is compared
between the two sources, in inter-ocular distances: where they agree the 68-point estimate is used (it is
what FFHQ's recipe defines: eye centres as 6-point means); where they disagree the detector's point is
used, and the disagreement lowers the alignment confidence. Which point came from where is recorded.

Disagreement misses glasses: under a lens or rim both sources misplace the eyes alike. Given the image,
`alignment.occlusion.glasses_cover` looks for a dark rim or lens below the eyes; when it finds one, each eye
is the mean of the two sources' estimates (source "blend": two guesses with partly independent errors, on
our faces about half the crop shift of either alone) and the confidence is scaled by COVERED_CONFIDENCE.

Disagreement also misses a face mask's worst effect: the fabric pulls dlib's whole 68-point shape, eyes
included (a cloth mask moves them by a quarter of an inter-ocular distance), while the detector's eyes move
less but are coarse. `alignment.occlusion.mask_cover` finds a mask as a region off the skin's hue over the
mouth; when it does, the confidence is scaled by COVERED_CONFIDENCE and, given a `repredict` callable (the
68-point predictor on the same face box), the region is painted skin-coloured (`fill_skin`) and dlib's eyes
are taken from a second prediction on that bare face (source "inpainted"); where the detector disputes
one, beyond the tolerance, that eye is the mean of the two ("blend"). The mouth cannot be seen by either
source; its rule is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from alignment.occlusion import GLASSES_THRESHOLD, MASK_THRESHOLD, fill_skin, glasses_cover, mask_cover

POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
ALIGNMENT_POINTS = ("left_eye", "right_eye", "mouth_left", "mouth_right")  # what the FFHQ quad uses
SINGLE_SOURCE_CONFIDENCE = 0.5  # no second opinion to check against
COVERED_CONFIDENCE = 0.75  # factor applied when the image shows the eyes or the mouth covered


def five_from_68(landmarks68: np.ndarray) -> np.ndarray:
    """(5, 2) in the detectors' order from dlib's 68: eye centres (6-point means), nose tip, mouth corners."""
    l68 = np.asarray(landmarks68, dtype=np.float64)
    if l68.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {l68.shape}")
    return np.stack([l68[36:42].mean(0), l68[42:48].mean(0), l68[30], l68[48], l68[54]])


def inter_ocular(points5: np.ndarray) -> float:
    return float(np.hypot(*(points5[1] - points5[0])))


@dataclass(frozen=True)
class FusedLandmarks:
    points5: np.ndarray  # what alignment uses
    # per point: "dlib68" | "detector" | "blend" (mean of both: eyes under glasses, or under a face mask where
    # the two disagree) | "inpainted" (eyes of dlib's 68 points predicted again with a face mask painted over)
    sources: dict[str, str]
    disagreement: dict[str, float]  # per point, in inter-ocular distances (nan without a detector estimate)
    confidence: float  # 0..1
    occlusion: dict[str, float] = field(default_factory=dict)  # image cues, when fuse was given the image

    def sources_json(self) -> dict[str, object]:
        record: dict[str, object] = {
            "sources": self.sources,
            "disagreement_iod": {k: (None if math.isnan(v) else round(v, 4)) for k, v in self.disagreement.items()}}
        if self.occlusion:
            record["occlusion"] = {k: round(v, 4) for k, v in self.occlusion.items()}
        return record


def fuse(detector5: np.ndarray | None, landmarks68: np.ndarray | None, detector_score: float = 1.0,
         tolerance: float = 0.12, image: np.ndarray | None = None,
         repredict: Callable[[np.ndarray], np.ndarray] | None = None) -> FusedLandmarks:
    """Pick each alignment point from the more reliable source; see the module docstring.

    `image` (RGB, the one the landmarks were found on) enables the glasses and mask cues; without it only the
    two sources' disagreement is used. `repredict(image) -> (68, 2)` runs the 68-point predictor on another
    version of that image (same face box); with it a detected face mask is painted over and the eyes
    predicted again.
    """
    if landmarks68 is None and detector5 is None:
        raise ValueError("need the detector's 5 points, dlib's 68 points, or both")
    if landmarks68 is None:
        points = np.asarray(detector5, dtype=np.float64)
        nan = {p: float("nan") for p in POINTS}
        return FusedLandmarks(points, {p: "detector" for p in POINTS}, nan, SINGLE_SOURCE_CONFIDENCE * detector_score)
    from68 = five_from_68(landmarks68)
    if detector5 is None:
        nan = {p: float("nan") for p in POINTS}
        return FusedLandmarks(from68, {p: "dlib68" for p in POINTS}, nan, SINGLE_SOURCE_CONFIDENCE)
    det = np.asarray(detector5, dtype=np.float64)
    if det.shape != (5, 2) or not np.isfinite(det).all():
        raise ValueError(f"expected finite (5, 2) detector landmarks, got {det.shape}")
    occlusion: dict[str, float] = {}
    own = dict.fromkeys(POINTS, "dlib68")  # where each point of the 68-point estimate comes from
    if image is not None:
        occlusion["mask"], region = mask_cover(image, det[0], det[1])
        if occlusion["mask"] >= MASK_THRESHOLD and repredict is not None:
            again = np.asarray(repredict(fill_skin(image, region, det[0], det[1])), dtype=np.float64)
            from68[:2] = five_from_68(again)[:2]
            own.update({"left_eye": "inpainted", "right_eye": "inpainted"})
    scale = max(inter_ocular(det), 1e-6)  # the detector's eyes: the more robust reference
    distance = np.hypot(*(from68 - det).T) / scale
    disagree = distance > tolerance
    points = np.where(disagree[:, None], det, from68)
    sources = {p: ("detector" if d else own[p]) for p, d in zip(POINTS, disagree)}
    for i in (0, 1):  # re-predicted eyes that the detector disputes: neither is trusted over the other
        if own[POINTS[i]] == "inpainted" and disagree[i]:
            points[i] = (from68[i] + det[i]) / 2
            sources[POINTS[i]] = "blend"
    used = [POINTS.index(p) for p in ALIGNMENT_POINTS]
    confidence = float(np.clip(detector_score, 0, 1) * math.exp(-float(np.mean(distance[used])) / tolerance))
    if occlusion.get("mask", 0.0) >= MASK_THRESHOLD:
        confidence *= COVERED_CONFIDENCE
    if image is not None:
        eyes = (from68[:2] + det[:2]) / 2
        occlusion["glasses"] = glasses_cover(image, eyes[0], eyes[1])
        if occlusion["glasses"] >= GLASSES_THRESHOLD:
            points[:2] = eyes
            sources.update({"left_eye": "blend", "right_eye": "blend"})
            confidence *= COVERED_CONFIDENCE
    return FusedLandmarks(points, sources, dict(zip(POINTS, map(float, distance))), confidence, occlusion)
