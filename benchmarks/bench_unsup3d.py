"""Renderer forward + backward as a share of one Unsup3d training step (CelebA networks, 64 px) on CPU.

`.venv/bin/python benchmarks/bench_unsup3d.py [--batch 16] [--steps 5] [--threads 2] [--tiny]` builds the
CelebA model (or the demo's tiny one), trains on synthetic faces rendered from symmetric depth maps, and
times whole training steps and, on the same step's canonical depth and view (the doubled, flipped batch),
`Renderer.warp_canon_to_2d` forward plus its backward. Prints s/step, renderer s/step and the share
(target <= 25%).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.training.unsup3d.synthetic import render_faces, symmetric_scene, to_uint8  # noqa: E402
from training.unsup3d.config import TrainUnsup3dConfig  # noqa: E402
from training.unsup3d.renderer import scale_view  # noqa: E402
from training.unsup3d.trainer import Unsup3dTrainer  # noqa: E402

TINY = {"nf": 16, "zdim": 32, "encoder_nf": 8, "conf_nf": 16, "conf_zdim": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny networks instead of CelebA's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    depth, albedo, light = symmetric_scene(max(64, args.batch))
    faces = to_uint8(render_faces(depth, albedo, light))
    data = {"optim": {"batch": args.batch}, "runtime": {"device": "cpu"}}
    if args.tiny:
        data["model"] = TINY
    trainer = Unsup3dTrainer(TrainUnsup3dConfig.model_validate(data), faces)
    renderer = trainer.model.renderer
    trainer.step()  # warm-up
    step_times, render_times, wide_times = [], [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        trainer.step()
        step_times.append(time.perf_counter() - start)
        with torch.no_grad():
            canon = trainer.model.canonical(trainer.draw_batch(trainer.state.step))
        d = torch.cat([canon["depth"], canon["depth"].flip(2)], 0).requires_grad_()
        v = canon["view"].repeat(2, 1).requires_grad_()
        start = time.perf_counter()
        recon, grid = renderer.warp_canon_to_2d(d, v)
        torch.autograd.backward([recon, grid], [torch.ones_like(recon), torch.ones_like(grid)])
        render_times.append(time.perf_counter() - start)
        # the same depths seen from views spread over the whole configured range (a trained netV's spread)
        gen = torch.Generator().manual_seed(len(wide_times))
        wide = scale_view(torch.rand(v.shape, generator=gen) * 2 - 1).requires_grad_()
        start = time.perf_counter()
        recon, grid = renderer.warp_canon_to_2d(d, wide)
        torch.autograd.backward([recon, grid], [torch.ones_like(recon), torch.ones_like(grid)])
        wide_times.append(time.perf_counter() - start)
    step, render = statistics.median(step_times), statistics.median(render_times)
    model = "tiny" if args.tiny else "CelebA"
    print(f"{model} networks, batch {args.batch} (renderer sees {2 * args.batch}), 64 px, {args.threads} threads")
    print(f"training step  {step:.3f} s/step (median of {args.steps})")
    print(f"renderer fwd+bwd  {render:.3f} s/step  share {render / step:.1%} (target <= 25%)")
    wide = statistics.median(wide_times)
    print(f"renderer fwd+bwd, views over the full +-60 deg / 0.1 range  {wide:.3f} s/step  share {wide / step:.1%}")


if __name__ == "__main__":
    main()
