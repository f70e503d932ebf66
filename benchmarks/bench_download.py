"""Download throughput: our crawl stage (full validation, catalog, journal) vs img2dataset, side by side.

Both download the same N small JPEGs from the loopback emulator (running in its own process) with the
same thread count, one process each. Ours runs with every check on: robots.txt, X-Robots-Tag, opt-out,
content type, size cap, full Pillow decode, blob store, Parquet catalog and journal. img2dataset runs
with resize off and re-encoding disabled, writing plain files (an image and a JSON file per sample).

What each number includes (all are images stored / seconds):
  ours, run():                `crawling.stage.run` called in this process, modules already imported: crash
                              recovery, run bookkeeping, downloads, blobs, journal, Parquet, images rows, manifest.
  ours, whole process:        a fresh interpreter doing the same (what `sdgan crawl` runs without Prefect), from
                              exec to exit: start-up and imports included.
  img2dataset, download():    its `download()` call in its own interpreter, after `import img2dataset`: input
                              sharding, the worker process it spawns, downloads, writing, stats.
  img2dataset, whole process: the same from exec to exit.
  img2dataset, shard timer:   the `duration` its worker records for the one shard: the download loop alone
                              (no start-up, no input sharding, no process spawn).

`--repeat K` alternates the tools (even repeats ours first, odd ones img2dataset first) and prints the median
and the range of each number, then the ratios of the medians: ours run() / download(), whole process / whole
process (target >= 1.2 against download(), the issue's "whole process"), and run() / shard timer (target >= 0.9).

img2dataset is not a project dependency: install it in a separate venv and point at its python, e.g.
    python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip install img2dataset
    IMG2DATASET_PYTHON=/work/bench-venv/bin/python .venv/bin/python benchmarks/bench_download.py --n 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMG2DATASET_SCRIPT = """
import glob, json, os, sys, time
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else every process asks pypi.org for updates
from img2dataset import download

if __name__ == "__main__":  # img2dataset spawns processes
    args = json.loads(sys.argv[1])
    started = time.perf_counter()
    download(url_list=args["urls"], input_format="txt", output_folder=args["out"], output_format="files",
             processes_count=1, thread_count=args["threads"], resize_mode="no", disable_all_reencoding=True,
             retries=0, timeout=10, number_sample_per_shard=args["n"] + 10, enable_wandb=False,
             distributor="multiprocessing", compute_hash="sha256", incremental_mode="incremental",
             disallowed_header_directives=["noai", "noimageai"])
    seconds = time.perf_counter() - started
    shard = sum(json.load(open(p))["duration"] for p in glob.glob(os.path.join(args["out"], "*_stats.json")))
    print(json.dumps({"seconds": seconds, "shard_seconds": shard}))
"""

# Ours in a fresh interpreter: the stage function `sdgan crawl` ends up calling, without Prefect around it.
OURS_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[2])
from bench_download import run_ours

seconds, ok = run_ours(**json.loads(sys.argv[1]))
print(json.dumps({"seconds": seconds, "ok": ok}))
"""

Timing = dict[str, float]


def make_corpus(folder: Path, n: int, size: int) -> None:
    for i in range(n):
        buffer = io.BytesIO()
        Image.effect_noise((size, size), 30 + i % 50).convert("RGB").save(buffer, "JPEG", quality=85)
        (folder / f"img{i:05d}.jpg").write_bytes(buffer.getvalue())


def start_emulator(corpus: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "crawling.emulator", "--corpus", str(corpus), "--port", str(port)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "127.0.0.1" in line:
            return process
    raise RuntimeError("emulator did not start")


def run_ours(urls: str | Path, threads: int, workdir: str | Path) -> tuple[float, int]:
    """Seconds of one `crawling.stage.run` over the URL list into a new workspace, and the images stored."""
    from crawling.config import CrawlConfig
    from crawling.stage import run
    from data_catalog import Workspace

    config = CrawlConfig.model_validate({
        "sources": ["urls"], "urls": str(urls), "flush_every": 512,
        "http": {"threads": threads, "per_host_connections": threads, "max_attempts": 1},
        "images": {"min_side": 32},
    })
    ws = Workspace(Path(workdir) / "ws")
    started = time.perf_counter()
    manifest = run(config, ws)
    return time.perf_counter() - started, manifest.counts.get("status_ok", 0)


def time_ours_in_process(urls: Path, threads: int, workdir: Path) -> Timing:
    seconds, ok = run_ours(urls, threads, workdir)
    return {"ok": ok, "ours_run": seconds}


def time_ours_process(urls: Path, threads: int, workdir: Path) -> Timing:
    args = json.dumps({"urls": str(urls), "threads": threads, "workdir": str(workdir)})
    started = time.perf_counter()
    command = [sys.executable, "-c", OURS_SCRIPT, args, str(ROOT / "benchmarks")]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=workdir, timeout=1800)
    whole = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"our crawl failed:\n{result.stderr[-3000:]}")
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    return {"ok": timing["ok"], "ours_process": whole}


def time_img2dataset(python: str, urls: Path, threads: int, n: int, workdir: Path) -> Timing:
    out = workdir / "img2dataset"  # must not exist yet: incremental mode skips finished shards
    script = workdir / "run_img2dataset.py"
    script.write_text(IMG2DATASET_SCRIPT)
    args = json.dumps({"urls": str(urls), "out": str(out), "threads": threads, "n": n})
    started = time.perf_counter()
    result = subprocess.run([python, str(script), args], check=False, capture_output=True, text=True, cwd=workdir,
                            timeout=1800)
    whole = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"img2dataset failed:\n{result.stderr[-3000:]}")
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    ok = len(list(out.rglob("*.jpg")))
    return {"ok": ok, "i2d_call": timing["seconds"], "i2d_process": whole, "i2d_shard": timing["shard_seconds"]}


LABELS = {
    "ours_run": "ours, run() in-process",
    "ours_process": "ours, whole process",
    "i2d_call": "img2dataset, download()",
    "i2d_process": "img2dataset, whole process",
    "i2d_shard": "img2dataset, shard timer",
}


def _timed(label: str, fn: Callable[[Path], Timing], base: Path) -> Timing:
    """One run in a folder of its own, deleted afterwards (a crawl into a used workspace fetches nothing)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=base))
    try:
        return fn(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128, help="side of the test JPEGs")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--repeat", type=int, default=1, help="rounds, alternating which tool goes first")
    parser.add_argument("--img2dataset-python", default=os.environ.get("IMG2DATASET_PYTHON", "/work/bench-venv/bin/python"))
    args = parser.parse_args()
    rates: dict[str, list[float]] = {key: [] for key in LABELS}
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        workdir = Path(tmp)
        corpus = workdir / "corpus"
        corpus.mkdir()
        make_corpus(corpus, args.n, args.size)
        emulator = start_emulator(corpus, args.port)
        try:
            urls = workdir / "urls.txt"
            urls.write_text("".join(f"http://127.0.0.1:{args.port}/images/img{i:05d}.jpg\n" for i in range(args.n)))
            ours = [("ours", lambda d: time_ours_in_process(urls, args.threads, d)),
                    ("ours-process", lambda d: time_ours_process(urls, args.threads, d))]
            python = args.img2dataset_python
            theirs = [("img2dataset", lambda d: time_img2dataset(python, urls, args.threads, args.n, d))]
            for k in range(args.repeat):
                for label, fn in (ours + theirs if k % 2 == 0 else theirs + ours):
                    timing = _timed(label, fn, workdir)
                    ok = timing.pop("ok")
                    if ok != args.n:
                        print(f"warning: {label} stored {ok} of {args.n} images", file=sys.stderr)
                    shown = []
                    for key, seconds in timing.items():
                        rates[key].append(ok / seconds)
                        shown.append(f"{LABELS[key]} {seconds:.2f} s = {ok / seconds:.1f}/s")
                    print(f"[{k + 1}/{args.repeat}] " + "; ".join(shown), flush=True)
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    median = {key: statistics.median(values) for key, values in rates.items()}
    print(f"\nimages: {args.n} x {args.size}px JPEG on loopback, {args.threads} threads, 1 download process each, "
          f"cores={os.cpu_count()}, repeats={args.repeat}")
    print(f"{'':28s} {'median/s':>9s}  range")
    for key, label in LABELS.items():
        print(f"{label:28s} {median[key]:9.1f}  {min(rates[key]):.1f}-{max(rates[key]):.1f}")

    def ratio(ours_key: str, theirs_key: str) -> str:
        paired = [a / b for a, b in zip(rates[ours_key], rates[theirs_key], strict=True)]
        return f"{median[ours_key] / median[theirs_key]:.2f} (per round {min(paired):.2f}-{max(paired):.2f})"

    print(f"ours run() / img2dataset download():      {ratio('ours_run', 'i2d_call')}  (target >= 1.2)")
    print(f"ours whole process / img2dataset's:       {ratio('ours_process', 'i2d_process')}")
    print(f"ours run() / img2dataset shard timer:     {ratio('ours_run', 'i2d_shard')}  (target >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
