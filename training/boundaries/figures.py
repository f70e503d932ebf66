"""Edit-strength figures drawn with PIL (matplotlib is not a dependency): score vs signed distance, edit grids.

The plot answers "how far past the boundary must w go before the classifier sees the attribute", which is
what the test set's distance d should be chosen from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.common.images import save_png

WIDTH, HEIGHT, MARGIN = 640, 420, 56
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (23, 190, 207)]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def score_plot(distances: np.ndarray, scores: np.ndarray, trajectories: Sequence[tuple[np.ndarray, np.ndarray]],
               title: str, path: Path) -> Path:
    """Grey dots: sampled (w·n, logit); coloured lines: logits of G(w + alpha·n) of the grid rows."""
    xs = np.concatenate([distances] + [t[0] for t in trajectories]) if len(distances) else np.zeros(1)
    ys = np.concatenate([scores] + [t[1] for t in trajectories]) if len(scores) else np.zeros(1)
    x_low, x_high = float(xs.min()), float(xs.max())
    y_low, y_high = float(ys.min()), float(ys.max())
    if x_high - x_low < 1e-9:
        x_low, x_high = x_low - 1, x_high + 1
    if y_high - y_low < 1e-9:
        y_low, y_high = y_low - 1, y_high + 1
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = MARGIN, 30, WIDTH - 16, HEIGHT - MARGIN

    def to_px(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px = left + (np.asarray(x) - x_low) / (x_high - x_low) * (right - left)
        py = bottom - (np.asarray(y) - y_low) / (y_high - y_low) * (bottom - top)
        return px, py

    draw.rectangle([left, top, right, bottom], outline="black")
    for value in _ticks(x_low, x_high):
        px, _ = to_px(np.array([value]), np.array([y_low]))
        draw.line([px[0], bottom, px[0], bottom + 4], fill="black")
        draw.text((px[0] - 14, bottom + 6), f"{value:.2f}", fill="black", font=font)
    for value in _ticks(y_low, y_high):
        _, py = to_px(np.array([x_low]), np.array([value]))
        draw.line([left - 4, py[0], left, py[0]], fill="black")
        draw.text((4, py[0] - 6), f"{value:.2f}", fill="black", font=font)
    if x_low < 0 < x_high:  # the boundary itself
        px, _ = to_px(np.array([0.0]), np.array([y_low]))
        draw.line([px[0], top, px[0], bottom], fill=(160, 160, 160))
    px, py = to_px(distances, scores)
    for x, y in zip(px, py):
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(150, 150, 150))
    for index, (xs_row, ys_row) in enumerate(trajectories):
        color = PALETTE[index % len(PALETTE)]
        px, py = to_px(xs_row, ys_row)
        points = list(zip(px.tolist(), py.tolist()))
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
    draw.text((left, 8), title, fill="black", font=font)
    draw.text(((left + right) // 2 - 90, HEIGHT - 20), "signed distance w.n to the boundary", fill="black", font=font)
    draw.text((4, 8), "logit", fill="black", font=font)
    return save_png(image, path)


def label_grid(grid: Image.Image, alphas: Sequence[float], tile: int, path: Path) -> Path:
    """The G(w + alpha·n) grid with a header row naming each column's alpha."""
    header = 14
    out = Image.new("RGB", (grid.width, grid.height + header), "white")
    out.paste(grid, (0, header))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for column, alpha in enumerate(alphas):
        draw.text((column * tile + 2, 1), f"{alpha:+g}", fill="black", font=font)
    return save_png(out, path)
