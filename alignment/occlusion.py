"""Image cues for what covers the alignment points: is there a glasses rim or lens over the eyes?

Landmark disagreement is no occlusion cue under glasses: dlib's 68 points and the detector's 5 both place
the eyes on the lenses, a little off and alike. The image itself is: both sunglasses and frame glasses put
a dark horizontal band (the lower rim, or the lens) right below each eye, where a bare face shows lower
eyelid and cheek skin. `glasses_cover` measures that band against the cheek's brightness.

All geometry is in inter-ocular distances (IOD) along the eye line (``u``) and towards the chin (``w``), so
scale and roll follow the face.
"""

from __future__ import annotations

import numpy as np

# Below-eye band searched for a rim, in IOD towards the chin, and its half-width along the eye line.
BAND_FROM, BAND_TO, BAND_HALF_WIDTH = 0.18, 0.42, 0.30
BAND_ROWS = 8  # the band is cut into this many strips parallel to the eye line
CHEEK_OFFSET, CHEEK_RADIUS = 0.55, 0.15  # cheek reference patch, IOD below the eye
DARK_FRACTION = 0.6  # a pixel is dark below this fraction of the cheek's median brightness
GLASSES_THRESHOLD = 0.5  # mean over both eyes of the darkest strip's dark share


def _brightness(image: np.ndarray) -> np.ndarray:
    rgb = np.asarray(image)
    return rgb.max(axis=2).astype(np.float32) if rgb.ndim == 3 else rgb.astype(np.float32)  # HSV value


def _eye_cover(value: np.ndarray, eye: np.ndarray, axis: np.ndarray, down: np.ndarray, iod: float) -> float:
    """Share of the darkest strip below one eye that is dark against the cheek (0: bare, 1: a rim across)."""
    height, width = value.shape
    reach = (BAND_TO + CHEEK_OFFSET) * iod + 2
    x0, x1 = int(max(0, eye[0] - reach)), int(min(width, eye[0] + reach + 1))
    y0, y1 = int(max(0, eye[1] - reach)), int(min(height, eye[1] + reach + 1))
    if x1 <= x0 or y1 <= y0:
        return 0.0
    ys, xs = np.mgrid[y0:y1, x0:x1]
    dx, dy = xs - eye[0], ys - eye[1]
    u, w = dx * axis[0] + dy * axis[1], dx * down[0] + dy * down[1]
    local = value[y0:y1, x0:x1]
    cheek = local[(np.abs(u) <= CHEEK_RADIUS * iod) & (np.abs(w - CHEEK_OFFSET * iod) <= CHEEK_RADIUS * iod)]
    band = (w > BAND_FROM * iod) & (w < BAND_TO * iod) & (np.abs(u) < BAND_HALF_WIDTH * iod)
    if cheek.size == 0 or band.sum() < BAND_ROWS:
        return 0.0
    dark = local[band] < DARK_FRACTION * float(np.median(cheek))
    strip = ((w[band] - BAND_FROM * iod) / ((BAND_TO - BAND_FROM) * iod) * BAND_ROWS).astype(int).clip(0, BAND_ROWS - 1)
    shares = [dark[strip == k].mean() for k in range(BAND_ROWS) if (strip == k).any()]
    return float(max(shares, default=0.0))


def glasses_cover(image: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray) -> float:
    """0..1: how much a dark rim or lens crosses below both eyes; >= GLASSES_THRESHOLD reads as glasses."""
    left, right = np.asarray(left_eye, np.float64), np.asarray(right_eye, np.float64)
    iod = float(np.hypot(*(right - left)))
    if iod < 4:
        return 0.0
    axis = (right - left) / iod
    down = np.array([-axis[1], axis[0]])
    value = _brightness(image)
    return float(np.mean([_eye_cover(value, eye, axis, down, iod) for eye in (left, right)]))
