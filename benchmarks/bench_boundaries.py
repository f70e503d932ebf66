"""fit-boundaries speed: sampling + scoring throughput vs the bare generator, and our SVM fit vs InterfaceGAN's.

Run by hand:
    .venv/bin/python benchmarks/bench_boundaries.py --interfacegan /path/to/interfacegan-checkout \
        [--size 32] [--style-dim 64] [--n-mlp 2] [--channel-max 64] [--batch 32] [--samples 512] \
        [--classifier-resolution 32] [--svm-points 10000] [--svm-dim 512] [--repeats 3] [--device cpu]

1. Throughput: random networks of the demo shape (or larger with the flags). "bare" is G alone,
   `g([z])` then nothing, in batches of --batch; "end-to-end" is our `sampling.sample` into a temp folder
   (seeded z per sample, mapping, synthesis with psi, classifier logits at its own resolution, chunk files
   written atomically, then the concatenation). Ratio = end-to-end / bare samples per second (target >= 0.8x).
2. SVM: --svm-points x --svm-dim float32 points with a planted direction; our `fit_boundary` against their
   unmodified `train_boundary` imported from the checkout given (np.int alias set at runtime, global seed),
   same --ratio (chosen_num_or_ratio; default 0.5: all points chosen, 7,000 training) and split ratio 0.7.
   It prints both median times, their ratio (ours / theirs) and the cosine between the two normals.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.boundaries.sampling import SamplingPlan, concatenate_chunks, sample  # noqa: E402
from training.boundaries.svm import fit_boundary  # noqa: E402
from training.classifier.model import ATTRIBUTES, build_classifier  # noqa: E402
from training.classifier.scorer import AttributeScorer  # noqa: E402
from training.stylegan2.handle import GeneratorHandle  # noqa: E402
from training.stylegan2.networks import Generator  # noqa: E402


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    generator = Generator(args.size, style_dim=args.style_dim, n_mlp=args.n_mlp, channel_max=args.channel_max,
                          channel_multiplier=1).to(args.device)
    handle = GeneratorHandle(generator)
    arch = {"resolution": args.classifier_resolution, "num_attributes": len(ATTRIBUTES), "width": 32,
            "max_width": 256, "depth": 1, "dropout": 0.0}
    scorer = AttributeScorer(build_classifier(**arch), ATTRIBUTES, args.classifier_resolution, device=args.device)
    n = args.samples
    z = torch.randn(n, args.style_dim, device=args.device)

    @torch.no_grad()
    def bare() -> None:
        for chunk in z.split(args.batch):
            generator([chunk], randomize_noise=False)

    plan = SamplingPlan(n_samples=n, chunk_size=args.batch * max(1, n // (4 * args.batch)), batch_size=args.batch,
                        truncation=0.7, noise_mode="const", seed=0, style_dim=args.style_dim, attributes=ATTRIBUTES)

    def end_to_end() -> None:
        with tempfile.TemporaryDirectory() as folder:
            sample(Path(folder), plan, handle=handle, scorer=scorer)
            concatenate_chunks(Path(folder), plan)

    t_bare = median_time(bare, args.repeats)
    t_e2e = median_time(end_to_end, args.repeats)
    print(f"throughput ({args.size} px G, style {args.style_dim}, classifier {args.classifier_resolution} px, "
          f"batch {args.batch}, {n} samples, {torch.get_num_threads()} threads, {args.device}):")
    print(f"  bare generator   {n / t_bare:9.1f} samples/s")
    print(f"  end-to-end       {n / t_e2e:9.1f} samples/s  (sampling + scoring + chunk files)")
    print(f"  ratio end-to-end / bare = {t_bare / t_e2e:.2f}x (target >= 0.8x)")


def svm(args: argparse.Namespace) -> None:
    np.int = int  # type: ignore[attr-defined]  # their code uses the alias NumPy 1.24 removed
    sys.path.insert(0, str(Path(args.interfacegan).resolve()))
    from utils.manipulator import train_boundary as theirs_train  # noqa: PLC0415

    rng = np.random.default_rng(0)
    latents = rng.standard_normal((args.svm_points, args.svm_dim)).astype(np.float32)
    direction = rng.standard_normal(args.svm_dim)
    direction /= np.linalg.norm(direction)
    scores = (latents @ direction + 0.3 * rng.standard_normal(args.svm_points)).astype(np.float32)[:, None]
    quiet = logging.getLogger("bench-interfacegan")
    quiet.addHandler(logging.NullHandler())
    results: dict[str, np.ndarray] = {}

    def ours() -> None:
        results["ours"] = fit_boundary(latents, scores, args.ratio, 0.7, seed=0).normal

    def theirs() -> None:
        np.random.seed(0)
        results["theirs"] = theirs_train(latents, scores, args.ratio, 0.7, logger=quiet)

    t_ours, t_theirs = median_time(ours, args.repeats), median_time(theirs, args.repeats)
    cos = float(results["ours"].ravel() @ results["theirs"].ravel())
    k = min(int(args.svm_points * args.ratio) if args.ratio <= 1 else int(args.ratio), args.svm_points // 2)
    print(f"svm ({args.svm_points} x {args.svm_dim} points, chosen_num_or_ratio {args.ratio}: k={k} per side, "
          f"{int(k * 0.7)} x 2 training points):")
    print(f"  ours   {t_ours:.3f} s   theirs {t_theirs:.3f} s   ratio ours / theirs = {t_ours / t_theirs:.2f}x; "
          f"cos(ours, theirs) = {cos:.4f} (different random splits)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interfacegan", required=True, help="a checkout of genforce/interfacegan (not vendored)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--style-dim", type=int, default=64)
    parser.add_argument("--n-mlp", type=int, default=2)
    parser.add_argument("--channel-max", type=int, default=64)
    parser.add_argument("--classifier-resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--svm-points", type=int, default=10_000)
    parser.add_argument("--svm-dim", type=int, default=512)
    parser.add_argument("--ratio", type=float, default=0.5, help="chosen_num_or_ratio for the SVM part "
                        "(0.5: all 10,000 points chosen, 7,000 train; InterfaceGAN's 0.02 of 500,000 is 10,000 "
                        "per side, so 14,000 train points)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if not args.skip_throughput:
        throughput(args)
    svm(args)


if __name__ == "__main__":
    main()
