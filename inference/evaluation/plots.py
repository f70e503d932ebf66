"""The report's plots (matplotlib, Agg backend): edit strength against the attribute probability and identity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METHOD_NAMES = {"sdgan": "SD-GAN (basis + offset)", "interfacegan": "InterfaceGAN (basis only)",
                "template_paste": "template paste (GT composite)"}
DLIB_SAME_PERSON = 0.6  # dlib's same-person distance, drawn as a guide


def _curves(axes: Any, values: Mapping[str, Mapping[str, float]]) -> None:  # axes: a matplotlib Axes
    for method, by_alpha in values.items():
        alphas = sorted(by_alpha, key=float)
        axes.plot([float(a) for a in alphas], [by_alpha[a] for a in alphas], marker="o",
                  label=METHOD_NAMES.get(method, method))


def strength_plot(strength: Mapping[str, Mapping[str, float]], attribute: str, threshold: float, path: Path,
                  identity: Mapping[str, Mapping[str, float]] | None = None) -> Path:
    """Mean calibrated probability of the attribute against the edit strength a, per method; with `identity`
    (method -> a -> mean dlib distance to the origin) a second panel beside it. Writes a PNG, returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if identity else 1
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.2), dpi=100, squeeze=False)
    left = axes[0][0]
    _curves(left, strength)
    left.axhline(threshold, color="grey", linestyle=":", linewidth=1, label=f"success level {threshold:.2f}")
    left.set_xlabel("edit strength a  (w + a·n_b, w + a·(n_b + n_o))")
    left.set_ylabel(f"mean p({attribute})")
    left.set_ylim(-0.02, 1.02)
    left.legend(fontsize=7, loc="best")
    left.grid(alpha=0.3)
    if identity:
        right = axes[0][1]
        _curves(right, identity)
        right.axhline(DLIB_SAME_PERSON, color="grey", linestyle=":", linewidth=1,
                      label=f"dlib same person < {DLIB_SAME_PERSON}")
        right.set_xlabel("edit strength a")
        right.set_ylabel("mean dlib distance to the origin")
        right.set_ylim(bottom=0)
        right.legend(fontsize=7, loc="best")
        right.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})  # no version stamp: same bytes every run
    plt.close(figure)
    return path


def side_by_side(sources: Sequence[Path], path: Path, gap: int = 8) -> Path:
    """The images left to right on white, top-aligned, as one PNG (a run's related figures as one)."""
    from PIL import Image

    images = []
    for source in sources:
        with Image.open(source) as image:
            images.append(image.convert("RGB"))
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(i.height for i in images)), "white")
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


__all__ = ["METHOD_NAMES", "side_by_side", "strength_plot"]
