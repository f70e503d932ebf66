"""Code-drawn attribute templates (face masks, sunglasses, frame glasses) and landmark-guided compositing.

SD-GAN learns to put an occluding attribute on a face, so the corpus needs faces wearing one together with
the exact pixels it covers. Rather than ship third-party artwork, every template here is drawn by code
(supersampled, then averaged down, for antialiasing) as straight-alpha RGBA with named anchor points.
`composite` maps those anchors onto targets derived from the 68 dlib landmarks with a homography, so scale,
roll and yaw follow the face, and returns the placed alpha: the ground truth of where the attribute is.

Landmark order is dlib's: jaw 0-16 (0 at the image-left ear, 8 the chin), brows 17-26, nose bridge 27-30,
nostrils 31-35, image-left eye 36-41, image-right eye 42-47, outer mouth 48-59, inner mouth 60-67.
"left"/"right" in anchor names are image sides, never the wearer's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

ATTRIBUTES = ("face_mask", "sunglasses", "frame_glasses")
TEMPLATE_NAMES = ("surgical_mask", "cloth_mask", "sunglasses", "frame_glasses")
_ATTRIBUTE_OF = {"surgical_mask": "face_mask", "cloth_mask": "face_mask",
                 "sunglasses": "sunglasses", "frame_glasses": "frame_glasses"}
MASK_ANCHORS = ("nose_bridge", "chin", "left_cheek", "right_cheek")
GLASSES_ANCHORS = ("left_eye", "right_eye", "left_temple", "right_temple")

SUPERSAMPLE = 3  # drawing resolution factor; averaged down for antialiased edges

# Face masks, in units of the template width. Anchor proportions match a frontal dlib face:
# cheek span (jaw 2 -> 14) / nose-to-chin (28 -> 8) ~ 1.3, and jaw 2/14 sit ~27% of the way down.
_MASK_MARGIN = 0.09  # room on each side for the ear loops
_MASK_ASPECT = 1.30
_MASK_TOP = 0.05  # the nose_bridge anchor (top of the nose peak)
_MASK_CHEEK_FRACTION = 0.27
_MASK_TOP_DROP = 0.16  # how far the top edge falls from the nose peak to the sides, in nose-to-chin units
_MASK_BELOW_CHIN = 0.035  # the mask wraps slightly under the chin
_MASK_HEIGHT = 0.745

# Glasses, in units of the template width. Temples sit ~1.08 inter-ocular distances from the centre.
_GLASSES_TEMPLE_X = 0.03
_GLASSES_HEIGHT = 0.42
_GLASSES_CENTRE_Y = 0.19
_EYE_NOSE_RATIO = 0.57  # nominal eye-line-to-nose-tip distance per inter-ocular distance (sets vertical scale)

_SUNGLASSES_SHAPES = ("rounded", "aviator", "round")
_FRAME_SHAPES = ("rectangle", "round", "cat_eye")

_SHADOW_STRENGTH = 0.28  # darkening right under an opaque attribute
_SHADOW_SIGMA = 0.08  # in inter-ocular distances
_SHADOW_OFFSET = 0.06  # in inter-ocular distances, towards the chin
_MAX_PERSPECTIVE = 4.0  # largest ratio of homogeneous w over the template before we distrust the fit


@dataclass(frozen=True, eq=False)
class Template:
    """An attribute drawn by code: straight-alpha RGBA (read-only) and anchors in template pixel coords."""

    name: str
    attribute: str
    rgba: np.ndarray
    anchors: dict[str, tuple[float, float]]


# ----------------------------------------------------------------------------------------------- drawing


class _Canvas:
    """Supersampled premultiplied-RGBA surface; every coordinate given to it is in template pixels."""

    def __init__(self, width: int, height: int, ss: int = SUPERSAMPLE) -> None:
        self.width, self.height, self.ss = width, height, ss
        self.data = np.zeros((height * ss, width * ss, 4), np.float32)
        self.x = ((np.arange(width * ss, dtype=np.float32) + 0.5) / ss - 0.5)[None, :]
        self.y = ((np.arange(height * ss, dtype=np.float32) + 0.5) / ss - 0.5)[:, None]

    def _hi(self, points: np.ndarray) -> list[tuple[float, float]]:
        scaled = (np.asarray(points, np.float64) + 0.5) * self.ss - 0.5
        return [(float(px), float(py)) for px, py in scaled]

    def _layer(self, draw: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
        img = Image.new("L", (self.width * self.ss, self.height * self.ss), 0)
        draw(ImageDraw.Draw(img))
        return np.asarray(img, np.float32) / 255.0

    def polygon(self, points: np.ndarray) -> np.ndarray:
        """Coverage (hi-res, 0/1) of a filled polygon."""
        pts = self._hi(points)
        return self._layer(lambda d: d.polygon(pts, fill=255))

    def polyline(self, points: np.ndarray, width: float) -> np.ndarray:
        """Coverage of a stroked polyline with round joints and caps."""
        pts = self._hi(points)
        w = max(1, round(width * self.ss))
        r = w / 2.0

        def draw(d: ImageDraw.ImageDraw) -> None:
            d.line(pts, fill=255, width=w, joint="curve")
            for px, py in (pts[0], pts[-1]):
                d.ellipse((px - r, py - r, px + r, py + r), fill=255)

        return self._layer(draw)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        (x0, y0), (x1, y1) = self._hi(np.array([[cx - rx, cy - ry], [cx + rx, cy + ry]]))
        return self._layer(lambda d: d.ellipse((x0, y0, x1, y1), fill=255))

    def paint(self, coverage: np.ndarray, rgb: Sequence[float] | np.ndarray,
              alpha: float | np.ndarray = 1.0) -> None:
        """Porter-Duff 'over' of a colour (tuple or per-pixel array, 0-255) weighted by coverage*alpha."""
        a = (coverage * alpha).astype(np.float32)[..., None]
        col = np.asarray(rgb, np.float32) / 255.0
        self.data[..., :3] = col * a + self.data[..., :3] * (1.0 - a)
        self.data[..., 3:] = a + self.data[..., 3:] * (1.0 - a)

    def recolor(self, coverage: np.ndarray, rgb: Sequence[float] | np.ndarray) -> None:
        """Change colour where coverage > 0 but keep alpha: details (pleats, seams) inside a filled shape."""
        c = coverage.astype(np.float32)[..., None]
        col = np.asarray(rgb, np.float32) / 255.0
        self.data[..., :3] = self.data[..., :3] * (1.0 - c) + col * self.data[..., 3:] * c

    def shade(self, factor: np.ndarray) -> None:
        """Multiply colour (not alpha) by a broadcastable factor, e.g. curvature shading."""
        self.data[..., :3] = np.minimum(self.data[..., :3] * factor[..., None], self.data[..., 3:])

    def to_rgba(self) -> np.ndarray:
        """Average the supersamples (premultiplied, so edges do not fringe) and un-premultiply to uint8."""
        h, w, s = self.height, self.width, self.ss
        small = self.data.reshape(h, s, w, s, 4).mean(axis=(1, 3))
        alpha = np.clip(small[..., 3:], 0.0, 1.0)
        rgb = np.where(alpha > 1e-6, small[..., :3] / np.maximum(alpha, 1e-6), 0.0)
        out = np.concatenate([np.clip(rgb, 0.0, 1.0), alpha], axis=-1)
        return np.round(out * 255.0).astype(np.uint8)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _scaled(rgb: Sequence[float], factor: float, add: float = 0.0) -> tuple[float, float, float]:
    return tuple(float(np.clip(c * factor + add, 0.0, 255.0)) for c in rgb)  # type: ignore[return-value]


def _inner_distance(canvas: _Canvas, coverage: np.ndarray) -> np.ndarray:
    """Distance (template px) from each inside pixel to the shape's edge: drives translucent borders."""
    binary = (coverage > 0.5).astype(np.uint8)
    return cv2.distanceTransform(binary, cv2.DIST_L2, 5).astype(np.float32) / canvas.ss


def _fabric_noise(canvas: _Canvas, seed: int, amount: float, cell: float) -> np.ndarray:
    """Low-amplitude, seed-determined texture so flat fills do not look synthetic."""
    rng = np.random.default_rng(seed)
    gh, gw = max(2, int(canvas.height / cell)), max(2, int(canvas.width / cell))
    small = rng.normal(0.0, 1.0, (gh, gw)).astype(np.float32)
    big = cv2.resize(small, (canvas.width * canvas.ss, canvas.height * canvas.ss), interpolation=cv2.INTER_CUBIC)
    return 1.0 + amount * np.clip(big, -2.5, 2.5)


def _bezier(p0: Sequence[float], p1: Sequence[float], p2: Sequence[float], n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)


# ----------------------------------------------------------------------------------------------- masks


@dataclass(frozen=True)
class _MaskGeometry:
    """Key positions (template px) shared by both masks, so anchors and outlines agree."""

    width: int
    height: int
    cx: float
    left: float  # cheek anchors' x
    right: float
    top: float  # nose_bridge anchor y
    chin: float  # chin anchor y
    bottom: float  # lowest edge (under the chin)
    cheek_y: float
    side_top: float  # y where the top edge meets the sides

    @classmethod
    def of(cls, size: int) -> _MaskGeometry:
        body_w = (1.0 - 2 * _MASK_MARGIN) * size
        nose_chin = body_w / _MASK_ASPECT
        top = _MASK_TOP * size
        return cls(width=size, height=round(_MASK_HEIGHT * size), cx=(size - 1) / 2.0,
                   left=_MASK_MARGIN * size, right=(1.0 - _MASK_MARGIN) * size, top=top,
                   chin=top + nose_chin, bottom=top + nose_chin + _MASK_BELOW_CHIN * size,
                   cheek_y=top + _MASK_CHEEK_FRACTION * nose_chin,
                   side_top=top + _MASK_TOP_DROP * nose_chin)

    @property
    def half(self) -> float:
        return (self.right - self.left) / 2.0

    def anchors(self) -> dict[str, tuple[float, float]]:
        return {"nose_bridge": (self.cx, self.top), "chin": (self.cx, self.bottom - _MASK_BELOW_CHIN * self.width),
                "left_cheek": (self.left, self.cheek_y), "right_cheek": (self.right, self.cheek_y)}

    def top_edge(self, x: np.ndarray) -> np.ndarray:
        """Peaked over the nose, falling towards the cheeks (keeps the eyes clear)."""
        u = np.clip(np.abs(x - self.cx) / (self.half + 0.005 * self.width), 0.0, 1.0)
        return self.top + (self.side_top - self.top) * u**1.5


def _ear_loop(canvas: _Canvas, start: Sequence[float], end: Sequence[float], bulge_x: float,
              width: float) -> np.ndarray:
    control = (bulge_x, (start[1] + end[1]) / 2.0)
    return canvas.polyline(_bezier(start, control, end), width)


def _draw_surgical(size: int, color: tuple[int, int, int], seed: int) -> np.ndarray:
    g = _MaskGeometry.of(size)
    cv = _Canvas(g.width, g.height)
    inset = 0.045 * size  # the sides lean inwards towards the jaw
    side_bottom = g.top + 0.62 * (g.chin - g.top)
    xs_top = np.linspace(g.left - 0.005 * size, g.right + 0.005 * size, 80)
    half_bottom = g.half - inset
    t = np.linspace(1.0, -1.0, 80)
    xs_bottom = g.cx + t * half_bottom
    ys_bottom = g.bottom - (g.bottom - side_bottom) * np.abs(t) ** 2.5
    outline = np.concatenate([np.stack([xs_top, g.top_edge(xs_top)], 1), np.stack([xs_bottom, ys_bottom], 1)])
    body = cv.polygon(outline)

    def bottom_edge(x: np.ndarray) -> np.ndarray:
        v = np.clip(np.abs(x - g.cx) / half_bottom, 0.0, 1.0)
        return g.bottom - (g.bottom - side_bottom) * v**2.5

    dist = _inner_distance(cv, body)
    alpha = 0.78 + 0.19 * _smoothstep(dist / (0.02 * size))  # slightly translucent non-woven border
    fill = np.asarray(color, np.float32) * _fabric_noise(cv, seed, 0.018, 6.0)[..., None]
    cv.paint(body, np.clip(fill, 0, 255), alpha)
    across = np.clip(np.abs(cv.x - g.cx) / g.half, 0.0, 1.0)
    cv.shade(np.broadcast_to(1.0 - 0.14 * across**2, body.shape))  # the mask curves away at the cheeks
    cv.recolor(body * (dist < 0.016 * size), _scaled(color, 0.93))  # sealed border band
    xs = np.linspace(g.left - 0.02 * size, g.right + 0.02 * size, 120)
    for f in (0.30, 0.50, 0.70):  # pleats: a fold shadow with a lit ridge under it
        ys = g.top_edge(xs) + f * (bottom_edge(xs) - g.top_edge(xs))
        cv.recolor(body * cv.polyline(np.stack([xs, ys], 1), 0.007 * size), _scaled(color, 0.76))
        cv.recolor(body * cv.polyline(np.stack([xs, ys + 0.009 * size], 1), 0.006 * size), _scaled(color, 1.06, 12))
    wire_x = np.linspace(g.cx - 0.13 * size, g.cx + 0.13 * size, 40)
    wire = cv.polyline(np.stack([wire_x, g.top_edge(wire_x) + 0.016 * size], 1), 0.008 * size)
    cv.recolor(body * wire, _scaled(color, 0.88))
    for sign, x_top, x_bottom in ((-1, g.left - 0.005 * size, g.left + inset), (1, g.right + 0.005 * size,
                                                                                 g.right - inset)):
        bulge = (g.left - 0.13 * size) if sign < 0 else (g.right + 0.13 * size)
        loop = _ear_loop(cv, (x_top, g.side_top + 0.012 * size), (x_bottom, side_bottom - 0.015 * size),
                         bulge, 0.008 * size)
        cv.paint(loop, (238, 238, 236), 0.95)
    return cv.to_rgba()


def _cloth_pattern(cv: _Canvas, seed: int, size: int) -> np.ndarray | None:
    """Seed-chosen pattern coverage: None (solid), stripes or dots."""
    kind = ("solid", "stripes", "dots")[seed % 3]
    rng = np.random.default_rng(seed)
    if kind == "solid":
        return None
    if kind == "stripes":
        angle = float(rng.choice([0.0, math.pi / 4, -math.pi / 4]))
        period = size * float(rng.uniform(0.045, 0.08))
        phase = (cv.x * math.sin(angle) + cv.y * math.cos(angle)) / period
        return ((phase % 1.0) < 0.45).astype(np.float32)
    spacing = size * float(rng.uniform(0.055, 0.085))
    radius = spacing * float(rng.uniform(0.18, 0.3))
    row = np.round(cv.y / spacing)
    shift = (row % 2) * spacing / 2.0
    dx = cv.x - shift - np.round((cv.x - shift) / spacing) * spacing
    dy = cv.y - row * spacing
    return ((dx * dx + dy * dy) < radius * radius).astype(np.float32)


def _draw_cloth(size: int, color: tuple[int, int, int], seed: int) -> np.ndarray:
    g = _MaskGeometry.of(size)
    cv = _Canvas(g.width, g.height)
    a, b, p = g.half + 0.005 * size, g.bottom - g.side_top, 2.5
    xs_top = np.linspace(g.cx - a, g.cx + a, 80)
    theta = np.linspace(0.0, math.pi, 120)  # superellipse lower half hugging cheeks and chin
    cos, sin = np.cos(theta), np.sin(theta)
    xs_low = g.cx + a * np.sign(cos) * np.abs(cos) ** (2 / p)
    ys_low = g.side_top + b * np.abs(sin) ** (2 / p)
    outline = np.concatenate([np.stack([xs_top, g.top_edge(xs_top)], 1), np.stack([xs_low, ys_low], 1)])
    body = cv.polygon(outline)
    dist = _inner_distance(cv, body)
    alpha = 0.9 + 0.09 * _smoothstep(dist / (0.008 * size))
    fill = np.asarray(color, np.float32) * _fabric_noise(cv, seed + 1, 0.025, 3.0)[..., None]
    cv.paint(body, np.clip(fill, 0, 255), alpha)
    pattern = _cloth_pattern(cv, seed, size)
    if pattern is not None:
        light = sum(color) / 3.0 > 140
        second = _scaled(color, 0.55) if light else tuple(c + 0.65 * (250 - c) for c in color)
        cv.recolor(body * pattern, second)
    across = np.clip(np.abs(cv.x - g.cx) / a, 0.0, 1.0)
    under_chin = np.clip((cv.y - (g.chin - 0.08 * size)) / (0.1 * size), 0.0, 1.0)
    cv.shade(1.0 - 0.22 * across**2 - 0.10 * under_chin)
    cv.recolor(body * (dist < 0.012 * size), _scaled(color, 0.82))  # hem
    seam_y = np.linspace(g.top, g.bottom, 40)
    seam = cv.polyline(np.stack([np.full_like(seam_y, g.cx), seam_y], 1), 0.006 * size)
    cv.recolor(body * seam, _scaled(color, 0.68))
    for sign in (-1, 1):
        x_edge = g.cx + sign * (a - 0.01 * size)
        low_y = g.side_top + 0.45 * b
        low_x = g.cx + sign * a * (1 - 0.45 ** p) ** (1 / p) - sign * 0.01 * size
        loop = _ear_loop(cv, (x_edge, g.side_top + 0.02 * size), (low_x, low_y),
                         g.cx + sign * (a + 0.08 * size), 0.014 * size)
        cv.paint(loop, _scaled(color, 0.78), 0.97)
    return cv.to_rgba()


# ----------------------------------------------------------------------------------------------- glasses


@dataclass(frozen=True)
class _GlassesGeometry:
    """Lens centres and temple ends (template px)."""

    width: int
    height: int
    cy: float
    eye_left: float
    eye_right: float
    temple_left: float
    temple_right: float

    @classmethod
    def of(cls, size: int) -> _GlassesGeometry:
        cx = (size - 1) / 2.0
        temple_half = cx - _GLASSES_TEMPLE_X * size
        half_iod = temple_half / 2.16  # jaw 0 -> 16 spans ~2.16 inter-ocular distances at eye height
        return cls(width=size, height=round(_GLASSES_HEIGHT * size), cy=_GLASSES_CENTRE_Y * size,
                   eye_left=cx - half_iod, eye_right=cx + half_iod,
                   temple_left=cx - temple_half, temple_right=cx + temple_half)

    @property
    def iod(self) -> float:
        return self.eye_right - self.eye_left

    def anchors(self) -> dict[str, tuple[float, float]]:
        return {"left_eye": (self.eye_left, self.cy), "right_eye": (self.eye_right, self.cy),
                "left_temple": (self.temple_left, self.cy), "right_temple": (self.temple_right, self.cy)}


def _lens_outline(cx: float, cy: float, a: float, b: float, shape: str, side: int, n: int = 120) -> np.ndarray:
    """Closed lens outline; side -1 is the image-left lens (its outer edge faces -x)."""
    exponent = {"rounded": 3.5, "aviator": 2.3, "round": 2.0, "rectangle": 5.0, "cat_eye": 2.6}[shape]
    th = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(th), np.sin(th)
    x = a * np.sign(c) * np.abs(c) ** (2 / exponent)
    y = b * np.sign(s) * np.abs(s) ** (2 / exponent)
    if shape == "aviator":  # teardrop: deeper, with the low point drifting towards the nose
        low = y > 0
        y = np.where(low, y * 1.3, y)
        x = np.where(low, x - side * 0.12 * a * (y / b), x)
    elif shape == "cat_eye":  # outer top corner swept up
        outer = np.clip(x * side / a, 0.0, 1.0)
        y = np.where(y < 0, y - 0.3 * b * outer**2, y)
    return np.stack([cx + x, cy + y], 1)


def _lens_size(shape: str, iod: float, sunglasses: bool) -> tuple[float, float]:
    a = (0.40 if sunglasses else 0.38) * iod
    ratio = {"rounded": 0.8, "aviator": 0.74, "round": 0.92, "rectangle": 0.6, "cat_eye": 0.62}[shape]
    return a, a * ratio


def _rim(cv: _Canvas, cx: float, cy: float, a: float, b: float, shape: str, side: int, width: float
         ) -> np.ndarray:
    outer = cv.polygon(_lens_outline(cx, cy, a + width / 2, b + width / 2, shape, side))
    inner = cv.polygon(_lens_outline(cx, cy, a - width / 2, b - width / 2, shape, side))
    return outer * (1.0 - inner)


def _temple_stub(cv: _Canvas, x_from: float, x_to: float, y: float, width: float) -> np.ndarray:
    """Tapered arm stub from the hinge outwards (the rest of the arm is hidden behind the head)."""
    pts = np.array([[x_from, y - width / 2], [x_to, y - width * 0.35], [x_to, y + width * 0.35],
                    [x_from, y + width / 2]])
    return cv.polygon(pts)


def _highlight(cv: _Canvas, cx: float, cy: float, a: float, b: float, side: int, offset: float,
               thickness: float) -> np.ndarray:
    """A slanted reflection streak across the upper-outer part of a lens."""
    x0 = cx + side * offset * a
    pts = np.array([[x0 - thickness * a, cy - 1.4 * b], [x0 + thickness * a, cy - 1.4 * b],
                    [x0 + thickness * a - 0.9 * a, cy + 0.2 * b], [x0 - thickness * a - 0.9 * a, cy + 0.2 * b]])
    return cv.polygon(pts)


def _draw_glasses(size: int, color: tuple[int, int, int], seed: int, sunglasses: bool) -> np.ndarray:
    g = _GlassesGeometry.of(size)
    cv = _Canvas(g.width, g.height)
    shapes = _SUNGLASSES_SHAPES if sunglasses else _FRAME_SHAPES
    shape = shapes[seed % len(shapes)]
    a, b = _lens_size(shape, g.iod, sunglasses)
    frame_rgb = (18, 18, 20) if sunglasses else color
    rim_w = (0.022 if sunglasses else 0.02) * size
    for side, ex in ((-1, g.eye_left), (1, g.eye_right)):
        lens = cv.polygon(_lens_outline(ex, g.cy, a, b, shape, side))
        down = np.clip((cv.y - (g.cy - b)) / (2.6 * b), 0.0, 1.0)
        if sunglasses:  # dark, denser at the top, a little lighter and warmer at the bottom
            top_rgb, bottom_rgb = np.array(_scaled(color, 0.8)), np.array(_scaled(color, 1.35, 14))
            rgb = top_rgb + (bottom_rgb - top_rgb) * down[..., None]
            cv.paint(lens, np.broadcast_to(rgb, lens.shape + (3,)), 0.94 - 0.08 * down)
            cv.paint(lens * _highlight(cv, ex, g.cy, a, b, side, 0.55, 0.12), (255, 255, 255), 0.22)
            cv.paint(lens * _highlight(cv, ex, g.cy, a, b, side, 0.95, 0.05), (255, 255, 255), 0.14)
        else:  # clear lens with a faint blue-grey tint and a faint reflection away from the pupil
            cv.paint(lens, (200, 218, 232), 0.08 + 0.04 * down)
            cv.paint(lens * _highlight(cv, ex, g.cy, a, b, side, 1.25, 0.07), (255, 255, 255), 0.16)
        rim = _rim(cv, ex, g.cy, a, b, shape, side, rim_w)
        cv.paint(rim, frame_rgb)
        cv.recolor(rim * (cv.y < g.cy - 0.55 * b), _scaled(frame_rgb, 1.25, 30))  # lit upper rim
        hinge_x = ex + side * (a + rim_w * 0.2)
        hinge_y = g.cy - 0.45 * b
        temple_x = g.temple_left if side < 0 else g.temple_right
        cv.paint(_temple_stub(cv, hinge_x, temple_x, hinge_y, (0.028 if sunglasses else 0.022) * size), frame_rgb)
        cv.paint(cv.ellipse(hinge_x + side * 0.01 * size, hinge_y, 0.018 * size, 0.022 * size), frame_rgb)
    inner_left, inner_right = g.eye_left + a * 0.9, g.eye_right - a * 0.9
    mid = (g.width - 1) / 2.0
    bridge = _bezier((inner_left, g.cy - 0.5 * b), (mid, g.cy - 0.85 * b), (inner_right, g.cy - 0.5 * b))
    cv.paint(cv.polyline(bridge, (0.022 if sunglasses else 0.014) * size), frame_rgb)
    if not sunglasses:  # translucent nose pads
        for side in (-1, 1):
            pad = cv.ellipse(mid + side * 0.055 * size, g.cy + 0.35 * b, 0.012 * size, 0.024 * size)
            cv.paint(pad, (225, 225, 222), 0.55)
    return cv.to_rgba()


# ----------------------------------------------------------------------------------------------- templates

_DEFAULT_COLORS: dict[str, tuple[int, int, int]] = {
    "surgical_mask": (168, 204, 228), "cloth_mask": (40, 48, 70),
    "sunglasses": (24, 26, 30), "frame_glasses": (28, 28, 30)}


def _check_color(color: object) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(c) for c in color)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"color must be three integers 0-255, got {color!r}") from exc
    if len(rgb) != 3 or any(c < 0 or c > 255 for c in rgb):
        raise ValueError(f"color must be three integers 0-255, got {color!r}")
    return rgb  # type: ignore[return-value]


def make_template(name: str, size: int = 512, color: tuple[int, int, int] | None = None,
                  seed: int = 0) -> Template:
    """Draw a template. `color` is the fabric (masks), lens (sunglasses) or frame (frame_glasses) colour;
    `seed` picks pattern/shape variants and texture. Same arguments, same pixels (results are cached)."""
    if name not in TEMPLATE_NAMES:
        raise ValueError(f"unknown template {name!r}; expected one of {TEMPLATE_NAMES}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 64 <= size <= 4096:
        raise ValueError(f"size must be an integer in [64, 4096], got {size!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rgb = _DEFAULT_COLORS[name] if color is None else _check_color(color)
    return _make_template_cached(name, int(size), rgb, int(seed))


@functools.lru_cache(maxsize=64)
def _make_template_cached(name: str, size: int, color: tuple[int, int, int], seed: int) -> Template:
    if name == "surgical_mask":
        rgba, anchors = _draw_surgical(size, color, seed), _MaskGeometry.of(size).anchors()
    elif name == "cloth_mask":
        rgba, anchors = _draw_cloth(size, color, seed), _MaskGeometry.of(size).anchors()
    else:
        rgba = _draw_glasses(size, color, seed, sunglasses=name == "sunglasses")
        anchors = _GlassesGeometry.of(size).anchors()
    rgba.flags.writeable = False  # shared through the cache
    return Template(name=name, attribute=_ATTRIBUTE_OF[name], rgba=rgba,
                    anchors={k: (float(x), float(y)) for k, (x, y) in anchors.items()})


_SURGICAL_COLORS = ((168, 204, 228), (160, 214, 196), (236, 238, 240), (150, 190, 225), (205, 225, 240))
_CLOTH_COLORS = ((30, 30, 34), (40, 48, 70), (120, 124, 130), (232, 230, 226), (214, 150, 170),
                 (160, 40, 45), (90, 100, 60), (200, 180, 150), (60, 110, 160))
_LENS_COLORS = ((24, 26, 30), (60, 40, 26), (34, 54, 40), (40, 50, 70), (70, 70, 72))
_FRAME_COLORS = ((28, 28, 30), (92, 56, 30), (190, 160, 90), (170, 170, 176), (30, 40, 80), (120, 30, 40))


def _jitter(rgb: Sequence[int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    noise = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(rgb, noise))  # type: ignore[return-value]


def random_template(attribute: str, rng: np.random.Generator, size: int = 512) -> Template:
    """A random style/colour of an attribute, for augmentation; reproducible given the generator state."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator")
    if attribute == "face_mask":
        name = "surgical_mask" if rng.random() < 0.5 else "cloth_mask"
        palette = _SURGICAL_COLORS if name == "surgical_mask" else _CLOTH_COLORS
    elif attribute == "sunglasses":
        name, palette = "sunglasses", _LENS_COLORS
    else:
        name, palette = "frame_glasses", _FRAME_COLORS
    color = _jitter(palette[int(rng.integers(len(palette)))], rng, 12)
    return make_template(name, size, color, int(rng.integers(0, 2**31 - 1)))


# ----------------------------------------------------------------------------------------------- placement


def _as_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3); greyscale and RGBA are converted (alpha dropped), anything else is refused."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), np.uint8).copy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    try:
        lm = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError("landmarks must be a numeric (68, 2) array") from exc
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise ValueError("landmarks contain NaN or infinite values")
    if _iod(lm) < 2.0 or np.hypot(*(lm[8] - lm[28])) < 2.0 or np.hypot(*(lm[14] - lm[2])) < 2.0:
        raise ValueError("landmarks are degenerate (eyes, nose/chin or cheeks coincide)")
    return lm


def _eye_centres(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return lm[36:42].mean(0), lm[42:48].mean(0)


def _iod(lm: np.ndarray) -> float:
    left, right = _eye_centres(lm)
    return float(np.hypot(*(right - left)))


def _glasses_targets(lm: np.ndarray) -> dict[str, np.ndarray]:
    """Eye centres, and temples: jaw 0/16 projected onto the eye line, kept outside the outer eye corners."""
    left, right = _eye_centres(lm)
    mid, axis = (left + right) / 2.0, (right - left) / np.hypot(*(right - left))
    iod = _iod(lm)

    def along(p: np.ndarray) -> float:
        return float(np.dot(p - mid, axis))

    t_left = min(along(lm[0]), along(lm[36]) - 0.3 * iod)
    t_right = max(along(lm[16]), along(lm[45]) + 0.3 * iod)
    return {"left_eye": left, "right_eye": right, "left_temple": mid + t_left * axis,
            "right_temple": mid + t_right * axis}


def _correspondences(lm: np.ndarray, template: Template) -> tuple[np.ndarray, np.ndarray]:
    """Template anchor points and their image targets. Glasses anchors lie on one line, so each is paired
    with a point one nominal eye-to-nose-tip distance below it, mapped to the face's real one (measured
    across the eye line, so yaw, which swings the nose tip sideways, does not shear the glasses; the mouth
    is not used because smiles move it)."""
    if template.attribute == "face_mask":
        targets = {"nose_bridge": lm[28], "chin": lm[8], "left_cheek": lm[2], "right_cheek": lm[14]}
    else:
        targets = _glasses_targets(lm)
    missing = [k for k in targets if k not in template.anchors]
    if missing:
        raise ValueError(f"template {template.name!r} lacks anchors {missing}")
    src = np.array([template.anchors[k] for k in targets], np.float64)
    dst = np.array([targets[k] for k in targets], np.float64)
    if template.attribute != "face_mask":
        t_iod = abs(template.anchors["right_eye"][0] - template.anchors["left_eye"][0])
        left, right = _eye_centres(lm)
        axis = (right - left) / np.hypot(*(right - left))
        normal = np.array([-axis[1], axis[0]])  # image-down for an upright face
        depth = float(np.dot(lm[30] - (left + right) / 2.0, normal))
        if depth < 0.2 * _EYE_NOSE_RATIO * _iod(lm):  # nose tip above the eyes: implausible, use nominal
            depth = _EYE_NOSE_RATIO * _iod(lm)
        src = np.concatenate([src, src + [0.0, _EYE_NOSE_RATIO * t_iod]])
        dst = np.concatenate([dst, dst + depth * normal])
    return src, dst


def _apply(hom: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map points; also return the homogeneous w (its sign flips where the plane folds through infinity)."""
    p = np.c_[pts, np.ones(len(pts))] @ hom.T
    return p[:, :2] / p[:, 2:3], p[:, 2]


def _plausible(hom: np.ndarray | None, width: int, height: int) -> bool:
    if hom is None or not np.all(np.isfinite(hom)):
        return False
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)
    _, w = _apply(hom, corners)
    if np.all(w < 0):
        w = -w
    return bool(np.all(w > 1e-9) and w.max() / w.min() <= _MAX_PERSPECTIVE)


def _fit_homography(src: np.ndarray, dst: np.ndarray, width: int, height: int) -> np.ndarray:
    """Perspective fit (exact for 4 points, least squares beyond); affine least squares if it is wild."""
    hom: np.ndarray | None = None
    try:
        if len(src) == 4:
            hom = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
        else:
            hom, _ = cv2.findHomography(src, dst, 0)
    except cv2.error:
        hom = None
    if _plausible(hom, width, height):
        return hom / hom[2, 2] if abs(hom[2, 2]) > 1e-12 else hom  # type: ignore[index]
    design = np.c_[src, np.ones(len(src))]
    affine, *_ = np.linalg.lstsq(design, dst, rcond=None)
    hom = np.vstack([affine.T, [0.0, 0.0, 1.0]])
    if not np.isfinite(hom).all() or abs(np.linalg.det(hom[:2, :2])) < 1e-6:
        raise ValueError("landmarks are degenerate: no usable transform for the template")
    return hom


def _local_scale(hom: np.ndarray, point: Sequence[float]) -> float:
    """Image pixels per template pixel near `point` (sqrt of the Jacobian's area change)."""
    p = np.array([point, [point[0] + 1.0, point[1]], [point[0], point[1] + 1.0]], np.float64)
    q, _ = _apply(hom, p)
    (ax, ay), (bx, by) = q[1] - q[0], q[2] - q[0]
    return math.sqrt(abs(float(ax * by - ay * bx)))


def _premultiplied_for(template: Template, hom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied float template, pre-shrunk with area averaging when the face is small (bilinear
    warping alone would alias thin rims and loops), and the homography adjusted to the shrunk pixels."""
    rgba = template.rgba.astype(np.float32) / 255.0
    rgba[..., :3] *= rgba[..., 3:]
    h, w = rgba.shape[:2]
    factor = min(1.0, 1.25 * _local_scale(hom, ((w - 1) / 2.0, (h - 1) / 2.0)))
    if factor >= 0.999:
        return rgba, hom
    nw, nh = max(2, round(w * factor)), max(2, round(h * factor))
    small = cv2.resize(rgba, (nw, nh), interpolation=cv2.INTER_AREA)
    fx, fy = nw / w, nh / h
    to_small = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
    return small, hom @ np.linalg.inv(to_small)


def shadow_radius(landmarks: np.ndarray) -> float:
    """How far (px) the soft shadow can reach beyond the placed attribute; pixels further away are untouched."""
    iod = _iod(_check_landmarks(landmarks))
    return _SHADOW_OFFSET * iod + (_shadow_kernel(iod) // 2) + 2.0


def _shadow_kernel(iod: float) -> int:
    return 2 * math.ceil(3.0 * max(_SHADOW_SIGMA * iod, 0.3)) + 1


def _shadow(alpha: np.ndarray, hom: np.ndarray, template: Template, lm: np.ndarray) -> np.ndarray:
    """The placed alpha, nudged towards the chin and blurred: a contact shadow with a finite reach."""
    iod = _iod(lm)
    h, w = template.rgba.shape[:2]
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    q, _ = _apply(hom, np.array([centre, [centre[0], centre[1] + 1.0]]))
    down = q[1] - q[0]
    down = down / max(float(np.hypot(*down)), 1e-9)
    shift = down * _SHADOW_OFFSET * iod
    moved = cv2.warpAffine(alpha, np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]]),
                           (alpha.shape[1], alpha.shape[0]), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    k = _shadow_kernel(iod)
    return cv2.GaussianBlur(moved, (k, k), max(_SHADOW_SIGMA * iod, 0.3), borderType=cv2.BORDER_CONSTANT)


def composite(image: Image.Image | np.ndarray, landmarks: np.ndarray, template: Template,
              shadow: bool = True) -> tuple[Image.Image, np.ndarray]:
    """Place `template` on the face given by 68 landmarks.

    Returns the RGB result and the coverage mask (H, W) float32 in [0, 1]: the template's alpha as placed,
    i.e. the ground truth of where the attribute is. Pixels the attribute and its shadow do not reach are
    returned bit-identical."""
    rgb = _as_rgb(image)
    lm = _check_landmarks(landmarks)
    if not isinstance(template, Template) or template.attribute not in ATTRIBUTES:
        raise ValueError("template must be a Template of a known attribute")
    th, tw = template.rgba.shape[:2]
    src, dst = _correspondences(lm, template)
    hom = _fit_homography(src, dst, tw, th)
    premult, warp_hom = _premultiplied_for(template, hom)
    height, width = rgb.shape[:2]
    warped = cv2.warpPerspective(premult, warp_hom, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0, 0.0))
    alpha = np.clip(warped[..., 3], 0.0, 1.0).astype(np.float32)
    colour = np.minimum(np.clip(warped[..., :3], 0.0, 1.0), alpha[..., None])
    base = rgb.astype(np.float32) / 255.0
    touched = alpha > 0.0
    if shadow:
        dark = _shadow(alpha, hom, template, lm)
        base = base * (1.0 - _SHADOW_STRENGTH * dark[..., None])
        touched |= dark > 0.0
    blended = base * (1.0 - alpha[..., None]) + colour
    out = rgb.copy()
    out[touched] = np.round(np.clip(blended[touched], 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(out, "RGB"), alpha
