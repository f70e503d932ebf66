"""Download throughput: our crawl stage (full validation, catalog, journal) vs img2dataset, side by side.

Both download the same N small JPEGs from the loopback emulator (running in its own process) with the
same thread count, one process each. Ours runs with every check on: robots.txt, X-Robots-Tag, opt-out,
content type, size cap, full Pillow decode, blob store, Parquet catalog and journal. img2dataset runs
with resize off and re-encoding disabled, writing plain files.

img2dataset is not a project dependency: install it in a separate venv and point at its python, e.g.
    python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip install img2dataset
    IMG2DATASET_PYTHON=/work/bench-venv/bin/python .venv/bin/python benchmarks/bench_download.py --n 2000

Prints images/s for both and the ratio ours / img2dataset (target >= 1.0).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
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


def run_ours(urls: Path, threads: int, workdir: Path) -> tuple[float, int]:
    from crawling.config import CrawlConfig
    from crawling.stage import run
    from data_catalog import Workspace

    config = CrawlConfig.model_validate({
        "sources": ["urls"], "urls": str(urls), "flush_every": 512,
        "http": {"threads": threads, "per_host_connections": threads, "max_attempts": 1},
        "images": {"min_side": 32},
    })
    ws = Workspace(workdir / "ws")
    started = time.perf_counter()
    manifest = run(config, ws)
    return time.perf_counter() - started, manifest.counts.get("status_ok", 0)


def run_img2dataset(python: str, urls: Path, threads: int, n: int, workdir: Path) -> tuple[float, float, int]:
    out = workdir / "img2dataset"  # must not exist yet: incremental mode skips finished shards
    script = workdir / "run_img2dataset.py"
    script.write_text(IMG2DATASET_SCRIPT)
    args = json.dumps({"urls": str(urls), "out": str(out), "threads": threads, "n": n})
    result = subprocess.run([python, str(script), args], capture_output=True, text=True, cwd=workdir, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"img2dataset failed:\n{result.stderr[-3000:]}")
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    return timing["seconds"], timing["shard_seconds"], len(list(out.rglob("*.jpg")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128, help="side of the test JPEGs")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--img2dataset-python", default=os.environ.get("IMG2DATASET_PYTHON", "/work/bench-venv/bin/python"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        workdir = Path(tmp)
        corpus = workdir / "corpus"
        corpus.mkdir()
        make_corpus(corpus, args.n, args.size)
        emulator = start_emulator(corpus, args.port)
        try:
            urls = workdir / "urls.txt"
            urls.write_text("".join(f"http://127.0.0.1:{args.port}/images/img{i:05d}.jpg\n" for i in range(args.n)))
            ours_s, ours_ok = run_ours(urls, args.threads, workdir)
            theirs_s, theirs_shard_s, theirs_ok = run_img2dataset(args.img2dataset_python, urls, args.threads, args.n, workdir)
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    ours_rate, theirs_rate = ours_ok / ours_s, theirs_ok / theirs_s
    print(f"images: {args.n} x {args.size}px JPEG on loopback, {args.threads} threads, 1 process each, cores={os.cpu_count()}")
    print(f"sdgan crawl (full validation + catalog): {ours_ok} ok in {ours_s:.2f} s = {ours_rate:.1f} images/s")
    print(f"img2dataset (no resize, no re-encode):   {theirs_ok} ok in {theirs_s:.2f} s = {theirs_rate:.1f} images/s")
    print(f"  (img2dataset's own shard timer, without its process start-up: {theirs_shard_s:.2f} s = "
          f"{theirs_ok / theirs_shard_s:.1f} images/s)")
    print(f"ratio ours / img2dataset = {ours_rate / theirs_rate:.2f} (target >= 1.0); "
          f"against its shard timer: {ours_rate / (theirs_ok / theirs_shard_s):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
