"""Image cues for what covers the alignment points: a glasses rim or lens over the eyes, a face mask over the mouth.

Landmark disagreement is no occlusion cue under glasses: dlib's 68 points and the detector's 5 both place
the eyes on the lenses, a little off and alike. The image itself is: both sunglasses and frame glasses put
a dark horizontal band (the lower rim, or the lens) right below each eye, where a bare face shows lower
eyelid and cheek skin. `glasses_cover` measures that band against the cheek's brightness.

A face mask pulls dlib's whole 68-point shape, eyes included. `mask_cover` finds it as a region off the
skin's hue over the mouth and chin (see its constants' comment); `fill_skin` paints that region in the
forehead's colour, so that the predictor can be run again on a bare lower face.

All geometry is in inter-ocular distances (IOD) along the eye line (``u``) and towards the chin (``w``), so
scale and roll follow the face.
"""

from __future__ import annotations

import cv2
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


# Face masks. The mask cue compares the mouth-and-chin area with the forehead's skin in the Lab a*b* plane:
# lips, shading and stubble keep skin's hue (red-orange) while a mask's fabric is off that hue (blue, navy)
# or grey. A pixel is foreign when its chroma along the skin's hue falls below SKIN_HUE_FRACTION of the
# forehead's. Images without skin chroma (greyscale) cannot be judged and score 0, nor can fabric of skin's
# hue (beige, pink): such a mask is missed and fuse falls back to its disagreement rule.
FOREHEAD_FROM, FOREHEAD_TO, FOREHEAD_HALF_WIDTH = -0.6, -0.3, 0.35  # IOD from the eye midpoint
MOUTH_FROM, MOUTH_TO, MOUTH_HALF_WIDTH = 0.85, 1.3, 0.45  # where the mouth and chin top are
REGION_FROM, REGION_TO, REGION_HALF_WIDTH = 0.15, 2.0, 1.1  # how far a mask's outline is followed
MIN_SKIN_CHROMA = 5.0  # Lab units; below this the forehead gives no usable hue
SKIN_HUE_FRACTION = 0.3
MASK_THRESHOLD = 0.5  # share of the mouth area that is foreign
FILL_GROW = 0.05  # IOD: the painted region reaches this far past the foreign pixels (outline antialiasing)


_REACH = float(np.hypot(REGION_HALF_WIDTH, REGION_TO))  # IOD: the farthest any zone gets from the eye midpoint


def _face_window(shape: tuple[int, ...], left: np.ndarray, right: np.ndarray
                 ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, float]:
    """The window around the face that holds every zone, and its pixels' (u, w) in IOD: along the eye line
    and towards the chin, from the eyes' midpoint (only the window is computed: images can be large)."""
    iod = float(np.hypot(*(right - left)))
    axis = (right - left) / iod
    mid = (left + right) / 2
    reach = _REACH * iod + 2
    y0, y1 = int(np.clip(mid[1] - reach, 0, shape[0])), int(np.clip(mid[1] + reach + 1, 0, shape[0]))
    x0, x1 = int(np.clip(mid[0] - reach, 0, shape[1])), int(np.clip(mid[0] + reach + 1, 0, shape[1]))
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs - mid[0], ys - mid[1]
    u, w = (dx * axis[0] + dy * axis[1]) / iod, (dx * -axis[1] + dy * axis[0]) / iod
    return (slice(y0, y1), slice(x0, x1)), u, w, iod


def _forehead(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (np.abs(u) <= FOREHEAD_HALF_WIDTH) & (w >= FOREHEAD_FROM) & (w <= FOREHEAD_TO)


def mask_cover(image: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray) -> tuple[float, np.ndarray]:
    """(score 0..1, region): the share of the mouth area off the skin's hue (>= MASK_THRESHOLD reads as a face
    mask) and a boolean (H, W) map of the foreign region connected to the mouth area (empty below the
    threshold), holes filled: what to paint over before predicting landmarks again."""
    rgb = np.asarray(image)
    region = np.zeros(rgb.shape[:2], bool)
    left, right = np.asarray(left_eye, np.float64), np.asarray(right_eye, np.float64)
    if rgb.ndim != 3 or float(np.hypot(*(right - left))) < 4:
        return 0.0, region
    window, u, w, iod = _face_window(rgb.shape, left, right)
    forehead = _forehead(u, w)
    mouth = (np.abs(u) <= MOUTH_HALF_WIDTH) & (w >= MOUTH_FROM) & (w <= MOUTH_TO)
    if forehead.sum() < 8 or mouth.sum() < 8:
        return 0.0, region
    lab = cv2.cvtColor(rgb[window][..., :3].astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    skin = np.median(lab[forehead][:, 1:], axis=0)
    chroma = float(np.hypot(*skin))
    if chroma < MIN_SKIN_CHROMA:
        return 0.0, region
    along = lab[..., 1] * (skin[0] / chroma) + lab[..., 2] * (skin[1] / chroma)
    foreign = along < SKIN_HUE_FRACTION * chroma
    score = float(foreign[mouth].mean())
    if score < MASK_THRESHOLD:
        return score, region
    zone = (np.abs(u) <= REGION_HALF_WIDTH) & (w >= REGION_FROM) & (w <= REGION_TO)
    candidate = (foreign & zone).astype(np.uint8)
    k = max(3, int(0.04 * iod) | 1)
    candidate = cv2.morphologyEx(candidate, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    _, labels = cv2.connectedComponents(candidate, connectivity=8)
    keep = np.unique(labels[mouth & (candidate > 0)])
    found = np.isin(labels, keep[keep > 0])
    # fill holes (a mask's pattern, a fold): whatever the background cannot reach from the window's border
    outside = np.pad(~found, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2)
    region[window] = found | (outside[1:-1, 1:-1] == 1)
    return score, region


def fill_skin(image: np.ndarray, region: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray) -> np.ndarray:
    """A copy of `image` with `region` (grown a little, edges feathered) painted the forehead's skin colour:
    a bare, featureless lower face, on which a landmark predictor is no longer pulled by the fabric."""
    rgb = np.asarray(image)[..., :3]
    out = rgb.copy()
    region = np.asarray(region, bool)
    left, right = np.asarray(left_eye, np.float64), np.asarray(right_eye, np.float64)
    iod = float(np.hypot(*(right - left)))
    if not region.any() or iod < 4:
        return out
    window, u, w, _ = _face_window(rgb.shape, left, right)
    forehead = _forehead(u, w)
    skin = np.median(rgb[window][forehead], axis=0) if forehead.any() else np.median(rgb[~region], axis=0)
    k = max(3, int(FILL_GROW * iod) | 1)
    ys, xs = np.nonzero(region)
    y0, y1 = max(0, ys.min() - 2 * k), min(rgb.shape[0], ys.max() + 2 * k + 1)
    x0, x1 = max(0, xs.min() - 2 * k), min(rgb.shape[1], xs.max() + 2 * k + 1)
    grown = cv2.dilate(region[y0:y1, x0:x1].astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    weight = cv2.GaussianBlur(grown.astype(np.float32), (k, k), 0)[..., None]
    out[y0:y1, x0:x1] = np.round(rgb[y0:y1, x0:x1] * (1 - weight) + skin * weight).astype(np.uint8)
    return out
