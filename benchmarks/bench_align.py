"""FFHQ alignment speed and fidelity: the exact recipe (transform_size=4096) vs our fast path, side by side.

Run by hand:
    .venv/bin/python benchmarks/bench_align.py [--reps 5] [--output-size 256]

Faces: skimage's astronaut and insightface's Tom Hanks photo with the fixture landmarks
(tests/fixtures/ffhq/), plus the astronaut upscaled 3x, which makes the recipe take its shrink step and our
fast path its area reduction. Both paths run on the same inputs in the same process, alternating. Prints
per face ms/face and faces/s for both, the speed ratio exact / fast (target >= 10x), the PSNR of fast vs
exact (target >= 35 dB) and, where a golden reference PNG exists for the size, the PSNR of the exact path
against the real NVlabs/ffhq-dataset output (expected: identical, "inf").
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignment.ffhq import align

FIXTURES = ROOT / "tests" / "fixtures" / "ffhq"
EXACT = 4096


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def load_faces() -> list[tuple[str, Image.Image, np.ndarray]]:
    """(name, image, 68 landmarks); the upscaled astronaut exercises the large-source code paths."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    astronaut_lm = np.load(FIXTURES / "astronaut_landmarks.npy")
    folder = Path(importlib.util.find_spec("insightface").submodule_search_locations[0]) / "data" / "images"
    tom = Image.open(folder / "Tom_Hanks_54745.png").convert("RGB")
    big = astronaut.resize((astronaut.width * 3, astronaut.height * 3), Image.Resampling.LANCZOS)
    return [("astronaut", astronaut, astronaut_lm),
            ("tom_hanks", tom, np.load(FIXTURES / "tom_hanks_landmarks.npy")),
            ("astronaut_x3", big, astronaut_lm * 3 + 1)]


def golden(name: str, size: int) -> Image.Image | None:
    path = FIXTURES / f"{name}_ref{size}.png"
    return Image.open(path).convert("RGB") if path.is_file() else None


def time_per_call(fn: Callable[[], object], reps: int) -> float:
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - started) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="exact-path repetitions per face (fast: 10x more)")
    parser.add_argument("--output-size", type=int, default=256)
    args = parser.parse_args()
    size = args.output_size

    print(f"output {size} px, exact = transform_size {EXACT}, fast = transform_size None")
    print(f"{'face':<14}{'exact ms':>10}{'fast ms':>10}{'exact f/s':>11}{'fast f/s':>10}{'ratio':>8}"
          f"{'fast/exact dB':>15}{'exact/golden dB':>17}")
    totals = [0.0, 0.0]
    for name, image, landmarks in load_faces():
        exact = align(image, landmarks, size, transform_size=EXACT)  # also warms up caches and threads
        fast = align(image, landmarks, size)
        run_exact = partial(align, image, landmarks, size, transform_size=EXACT)
        run_fast = partial(align, image, landmarks, size)
        t_exact = t_fast = 0.0
        for _ in range(args.reps):  # alternate so both see the same machine load
            t_exact += time_per_call(run_exact, 1)
            t_fast += time_per_call(run_fast, 10)
        t_exact /= args.reps
        t_fast /= args.reps
        totals[0] += t_exact
        totals[1] += t_fast
        ref = golden(name, size)
        vs_golden = f"{psnr(exact.image, ref):.2f}" if ref is not None else "n/a"
        print(f"{name:<14}{t_exact * 1e3:>10.1f}{t_fast * 1e3:>10.2f}{1 / t_exact:>11.2f}{1 / t_fast:>10.1f}"
              f"{t_exact / t_fast:>7.1f}x{psnr(fast.image, exact.image):>15.2f}{vs_golden:>17}")
    print(f"{'all faces':<14}{totals[0] * 1e3:>10.1f}{totals[1] * 1e3:>10.2f}{3 / totals[0]:>11.2f}"
          f"{3 / totals[1]:>10.1f}{totals[0] / totals[1]:>7.1f}x   (targets: ratio >= 10x, fast/exact >= 35 dB)")


if __name__ == "__main__":
    main()
