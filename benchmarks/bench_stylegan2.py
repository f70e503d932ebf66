"""StyleGAN2 training-step speed on CPU: our networks vs rosinality/stylegan2-pytorch, side by side.

Run by hand:
    .venv/bin/python benchmarks/bench_stylegan2.py --rosinality /path/to/stylegan2-pytorch \
        [--sizes 64 256] [--batch 4] [--repeats 3] [--channel-multiplier 2] [--style-dim 512] [--n-mlp 8]

Config-f-like networks (style 512, n_mlp 8, channel_multiplier 2 by default) at each size, with identical
weights in both implementations (ours are copied into rosinality's, strictly). Per size and network it
times one forward + backward: G `img, _ = g([z]); img.sum().backward()` (randomize_noise on both), D
`d(x).sum().backward()` for an input that requires grad. One warm-up call each, then the repeats alternate
ours / rosinality so both see the same machine load; the median seconds per image is reported with the
ratio ours / rosinality (target: <= 0.8x). rosinality runs its CPU fallbacks (upfirdn2d_native, leaky_relu);
its CUDA extensions are stubbed out at import. 256 px config-f on 2 cores takes ~seconds per image: use
--batch 2 and few repeats there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.training.stylegan2.parity_weights import import_rosinality
from training.stylegan2.networks import Discriminator, Generator

TARGET = 0.8


def g_step(g: nn.Module, z: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        g.zero_grad(set_to_none=True)
        image, _ = g([z])
        image.sum().backward()
    return step


def d_step(d: nn.Module, images: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        d.zero_grad(set_to_none=True)
        x = images.detach().requires_grad_(True)
        d(x).sum().backward()
    return step


def seconds(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def side_by_side(ours: Callable[[], None], theirs: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median seconds per call of each, after one warm-up each, alternating which goes first."""
    ours()
    theirs()
    t_ours, t_theirs = [], []
    for rep in range(repeats):
        if rep % 2:
            t_theirs.append(seconds(theirs))
            t_ours.append(seconds(ours))
        else:
            t_ours.append(seconds(ours))
            t_theirs.append(seconds(theirs))
    return statistics.median(t_ours), statistics.median(t_theirs)


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    target.load_state_dict(source.state_dict(), strict=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rosinality", required=True, type=Path, help="checkout of rosinality/stylegan2-pytorch")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channel-multiplier", type=int, default=2)
    parser.add_argument("--style-dim", type=int, default=512)
    parser.add_argument("--n-mlp", type=int, default=8)
    parser.add_argument("--models", nargs="+", choices=["G", "D"], default=["G", "D"])
    args = parser.parse_args()

    rosinality = import_rosinality(args.rosinality)
    torch.manual_seed(0)
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; style {args.style_dim}, "
          f"n_mlp {args.n_mlp}, channel_multiplier {args.channel_multiplier}, batch {args.batch}, "
          f"median of {args.repeats} (after 1 warm-up), forward + backward")
    print(f"{'size':>5} {'model':<6}{'ours s/img':>12}{'rosinality s/img':>18}{'ours/theirs':>13}")
    rows = []
    for size in args.sizes:
        for model in args.models:
            if model == "G":
                kwargs = {"size": size, "style_dim": args.style_dim, "n_mlp": args.n_mlp,
                          "channel_multiplier": args.channel_multiplier}
                ours_net, theirs_net = Generator(**kwargs), rosinality.Generator(**kwargs)
                copy_weights(ours_net, theirs_net)
                data = torch.randn(args.batch, args.style_dim)
                step = g_step
            else:
                kwargs = {"size": size, "channel_multiplier": args.channel_multiplier}
                ours_net, theirs_net = Discriminator(**kwargs), rosinality.Discriminator(**kwargs)
                copy_weights(ours_net, theirs_net)
                data = torch.randn(args.batch, 3, size, size)
                step = d_step
            t_ours, t_theirs = side_by_side(step(ours_net, data), step(theirs_net, data), args.repeats)
            per_ours, per_theirs = t_ours / args.batch, t_theirs / args.batch
            rows.append((size, model, per_ours, per_theirs))
            print(f"{size:>5} {model:<6}{per_ours:>12.4f}{per_theirs:>18.4f}{per_ours / per_theirs:>12.2f}x",
                  flush=True)
            del ours_net, theirs_net
    total_ours = sum(r[2] for r in rows)
    total_theirs = sum(r[3] for r in rows)
    print(f"{'all':>5} {'G+D':<6}{total_ours:>12.4f}{total_theirs:>18.4f}{total_ours / total_theirs:>12.2f}x"
          f"   (target: ours <= {TARGET}x)")


if __name__ == "__main__":
    main()
