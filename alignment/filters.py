"""Per-face quality measures and the rules that reject a face, each failure with its reason.

Measures come from the landmarks (size, pose) and from the aligned crop (blur, colour, padding), so a
rejected face can be explained and the thresholds tuned from the catalog without re-running detection.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from pydantic import Field

from alignment.landmarks import inter_ocular
from data_catalog.config import ConfigModel

# Frontal-face geometry of the 5 points, used by the pose estimate (ratios, not pixels).
FRONTAL_NOSE_DROP = 0.65  # (nose - eye line) / (mouth line - eye line) for a level head (measured: 0.6-0.7)
NOSE_SWING = 1.2  # nose offset from the face midline, in half inter-ocular distances, at 90 degrees yaw


class FilterRules(ConfigModel):
    """Thresholds; a face failing any of them is kept in the catalog as rejected, with the reason."""

    min_det_score: float = Field(default=0.9, ge=0, le=1)
    min_inter_ocular: float = Field(default=24.0, ge=0)  # source pixels
    min_align_confidence: float = Field(default=0.25, ge=0, le=1)
    max_yaw: float = Field(default=45.0, gt=0)  # degrees
    max_pitch: float = Field(default=35.0, gt=0)
    max_roll: float = Field(default=45.0, gt=0)
    max_padded_fraction: float = Field(default=0.35, ge=0, le=1)
    min_blur: float = Field(default=30.0, ge=0)  # variance of the Laplacian of the aligned grey crop
    min_colourfulness: float = Field(default=4.0, ge=0)  # Hasler-Suesstrunk; ~0 for grey images


@dataclass(frozen=True)
class FaceQuality:
    det_score: float
    inter_ocular: float
    align_confidence: float
    yaw: float
    pitch: float
    roll: float
    padded_fraction: float
    blur: float
    colourfulness: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def estimate_pose(points5: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the 5 points: coarse, but enough to drop profile or tilted faces."""
    p = np.asarray(points5, dtype=np.float64)
    eye_vec = p[1] - p[0]
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))
    q = (p - p[:2].mean(0)) @ np.array([[c, -s], [s, c]]).T  # level the eyes, origin between them
    iod = max(float(np.hypot(*eye_vec)), 1e-6)
    mouth = q[3:5].mean(0)
    midline_x = mouth[0] / 2.0  # halfway between the eye centre (x=0) and the mouth centre
    yaw = math.degrees(math.asin(float(np.clip((q[2, 0] - midline_x) / (iod / 2) / NOSE_SWING, -1, 1))))
    drop = q[2, 1] / max(mouth[1], 1e-6)
    pitch = math.degrees(math.asin(float(np.clip((drop - FRONTAL_NOSE_DROP) / 0.5, -1, 1))))
    return yaw, pitch, roll


def blur_score(rgb: np.ndarray) -> float:
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003): 0 for grey images, ~15 for muted, 40+ for vivid ones."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def measure(aligned: np.ndarray, points5: np.ndarray, det_score: float, align_confidence: float,
            padded_fraction: float) -> FaceQuality:
    yaw, pitch, roll = estimate_pose(points5)
    return FaceQuality(det_score, inter_ocular(np.asarray(points5, dtype=np.float64)), align_confidence, yaw, pitch, roll, padded_fraction,
                       blur_score(aligned), colourfulness(aligned))


def judge(quality: FaceQuality, rules: FilterRules) -> str | None:
    """The first rule the face fails (cheapest, most basic first), or None when it passes them all."""
    checks = [
        ("low_det_score", quality.det_score < rules.min_det_score),
        ("too_small", quality.inter_ocular < rules.min_inter_ocular),
        ("low_align_confidence", quality.align_confidence < rules.min_align_confidence),
        ("pose_yaw", abs(quality.yaw) > rules.max_yaw),
        ("pose_pitch", abs(quality.pitch) > rules.max_pitch),
        ("pose_roll", abs(quality.roll) > rules.max_roll),
        ("too_much_padding", quality.padded_fraction > rules.max_padded_fraction),
        ("blurry", quality.blur < rules.min_blur),
        ("grayscale", quality.colourfulness < rules.min_colourfulness),
    ]
    return next((reason for reason, failed in checks if failed), None)
