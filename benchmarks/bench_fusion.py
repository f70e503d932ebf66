"""Our fusion network against the official SD-GAN `model.py`: training step and eval forward, time and memory, on CPU.

`.venv/bin/python benchmarks/bench_fusion.py --official /work/.mirror/MontaEllis+SD-GAN/repo [--batch 4]
[--threads 2] [--repeats 3] [--rounds 2] [--canonical 128]` measures, at the official size (256 px face and
template, canonical maps of --canonical px, batch --batch, train mode): one training step (forward, backward of
sum(output * cotangent) to every parameter, gradients set to None before), and the eval-mode forward under
no_grad. `--official` is a clone or bare mirror of MontaEllis/SD-GAN (model.py and localconntect.py are exported
from HEAD) or a folder holding those two files.

Every measurement runs in a fresh subprocess (ours and the official alternate, --rounds times each), so one
model's allocator state never flatters the other. Time: median wall-clock seconds over --repeats steps after two
warm-up steps, with the fastest step and the median process CPU seconds per step next to it (on a shared,
loaded machine wall time swings by 2x between runs; the fastest step and CPU time move much less). Memory:
the peak resident set above the loaded model, i.e. VmHWM after one step minus VmRSS just before it, with the
high-water mark reset (`/proc/self/clear_refs`) after the warm-up steps and glibc's mmap threshold fixed at
128 KiB (`MALLOC_MMAP_THRESHOLD_`), so every tensor is its own mapping, returned to the system when freed, and the
resident set follows live tensors instead of the allocator's cache. Parameter gradients count (a training step
allocates them). Prints both numbers and ours/official; the targets (issue): step time <= 0.9, step memory <= 0.6.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.training.fusion.parity_weights import import_official, official_sources
from training.fusion.network import SemanticFusionNetwork

IMAGE = 256
MMAP_THRESHOLD = str(128 * 1024)


def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE).group(1))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(args: argparse.Namespace) -> dict[str, object]:
    """One implementation, one mode: warm up, reset the high-water mark, measure."""
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)  # both implementations draw the same initial weights from the same RNG stream
    if args.impl == "ours":
        model = SemanticFusionNetwork()
    else:
        model = import_official(args.official_folder).Semantic_Fusion_Network()
    model.train(args.mode == "train")
    gen = torch.Generator().manual_seed(1)
    face = torch.rand(args.batch, 3, IMAGE, IMAGE, generator=gen) * 2 - 1
    template = torch.rand(args.batch, 3, IMAGE, IMAGE, generator=gen) * 2 - 1
    canonical = torch.rand(args.batch, 9, args.canonical, args.canonical, generator=gen) * 2 - 1
    cotangent = torch.randn(args.batch, 14, 512, generator=gen)

    def step() -> None:
        if args.mode == "train":
            model.zero_grad(set_to_none=True)
            (model(face, template, canonical) * cotangent).sum().backward()
        else:
            with torch.no_grad():
                model(face, template, canonical)

    for _ in range(2):
        step()
    model.zero_grad(set_to_none=True)
    baseline = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    step()
    peak = _status_kib("VmHWM") - baseline
    times, cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), _cpu_seconds()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(_cpu_seconds() - start_cpu)
    model_mb = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**20
    return {"times": times, "cpu": cpu, "peak_mb": peak / 1024, "baseline_mb": baseline / 1024, "model_mb": model_mb}


def run_worker(args: argparse.Namespace, impl: str, mode: str) -> dict[str, object]:
    command = [sys.executable, __file__, "--worker", impl, "--mode", mode, "--official-folder", str(args.folder),
               "--batch", str(args.batch), "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--canonical", str(args.canonical)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"{impl} {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", help="MontaEllis/SD-GAN clone or mirror, or a folder with model.py")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per implementation and mode")
    parser.add_argument("--canonical", type=int, default=128)
    parser.add_argument("--modes", default="train,eval")
    parser.add_argument("--worker", choices=("ours", "official"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("train", "eval"), help=argparse.SUPPRESS)
    parser.add_argument("--official-folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.impl = args.worker
        print(json.dumps(worker(args)))
        return
    if not args.official:
        parser.error("--official is required")
    args.folder, commit = official_sources(args.official)
    print(f"official {commit}; batch {args.batch}, {IMAGE} px, canonical {args.canonical} px, "
          f"{args.threads} threads, {args.rounds} rounds x {args.repeats} repeats, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    for mode in args.modes.split(","):
        results: dict[str, list[dict]] = {"ours": [], "official": []}
        for _ in range(args.rounds):
            for impl in ("ours", "official"):
                results[impl].append(run_worker(args, impl, mode))
        summary = {}
        for impl, runs in results.items():
            summary[impl] = {"time": statistics.median(t for run in runs for t in run["times"]),
                             "fastest": min(t for run in runs for t in run["times"]),
                             "cpu": statistics.median(t for run in runs for t in run["cpu"]),
                             "peak": statistics.median(run["peak_mb"] for run in runs),
                             "model": runs[0]["model_mb"]}
            print(f"{mode:5s} {impl:8s} {summary[impl]['time']:7.3f} s  (fastest {summary[impl]['fastest']:6.2f} s, "
                  f"cpu {summary[impl]['cpu']:6.2f} s)  "
                  f"peak above model {summary[impl]['peak']:7.0f} MB  (model {summary[impl]['model']:.0f} MB; "
                  f"per round {[round(run['peak_mb']) for run in runs]})")
        ours, official = summary["ours"], summary["official"]
        print(f"{mode:5s} ours/official: time {ours['time'] / official['time']:.2f} (fastest "
              f"{ours['fastest'] / official['fastest']:.2f}, cpu {ours['cpu'] / official['cpu']:.2f}), "
              f"memory {ours['peak'] / official['peak']:.2f}"
              + ("   targets: time <= 0.9, memory <= 0.6" if mode == "train" else ""))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
