"""Face detection and per-face model speed on the real photos available offline.

Run by hand: `.venv/bin/python benchmarks/bench_detect.py [--reps 3]`. Images: scikit-image's astronaut
(1 face), insightface's t1.jpg (6 faces) and Tom_Hanks_54745.png (1 face). Prints, for each detector,
images/s and faces/s (faces found / time), then the per-face cost of dlib's 68-point landmarks and face
descriptor, which the align stage runs on every detected face.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignment.dedup import FaceDescriber  # noqa: E402
from alignment.detect import LandmarkPredictor, make_detector  # noqa: E402


def images() -> list[np.ndarray]:
    from skimage import data

    folder = Path(importlib.util.find_spec("insightface").submodule_search_locations[0]) / "data" / "images"
    return [data.astronaut()] + [np.asarray(Image.open(folder / n).convert("RGB")) for n in ("t1.jpg", "Tom_Hanks_54745.png")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    photos = images()
    print(f"{len(photos)} photos, sizes {[p.shape[:2] for p in photos]}, reps {args.reps}")
    for name in ("retinaface", "dlib-hog", "dlib-cnn"):
        detector = make_detector(name)
        detector.detect(photos[0])  # warm-up (model load)
        started = time.perf_counter()
        found = sum(len(detector.detect(p)) for _ in range(args.reps) for p in photos)
        seconds = time.perf_counter() - started
        print(f"{name:<11} {args.reps * len(photos) / seconds:7.2f} images/s  {found / seconds:7.2f} faces/s  "
              f"({found // args.reps} faces per pass)")
    retina, predictor, describer = make_detector("retinaface"), LandmarkPredictor(), FaceDescriber()
    faces = [(p, d) for p in photos for d in retina.detect(p)]
    started = time.perf_counter()
    marks = [predictor.predict(p, d.box) for p, d in faces for _ in range(args.reps)]
    landmark_ms = (time.perf_counter() - started) / len(marks) * 1000
    started = time.perf_counter()
    for _ in range(args.reps):
        for (p, d), l68 in zip(faces, marks):
            describer.describe(p, d.box, l68)
    descriptor_ms = (time.perf_counter() - started) / (args.reps * len(faces)) * 1000
    print(f"dlib 68 landmarks {landmark_ms:.2f} ms/face, dlib descriptor {descriptor_ms:.1f} ms/face")


if __name__ == "__main__":
    main()
