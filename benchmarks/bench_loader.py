"""Training-read throughput: MEGN WebDataset shards vs a folder of individual JPEG files, side by side.

Run by hand:
    .venv/bin/python benchmarks/bench_loader.py [--samples 2000] [--batch-size 32] [--workers 2] [--repeats 3]
        [--image-dtype uint8|float] [--drop-caches] [--dir /path/on/disk]

Builds N synthetic 256x256 JPEGs (smooth random images, quality 90) in a temp dir (`--dir` picks the
parent: use a disk, not tmpfs, or "cold" means nothing), writes them as shards (write_shards, 250 per
shard) and as one file per image, then times full passes of (a) MegnDataset through make_loader and (b) a
map-style folder Dataset with the same PIL decode, tensor conversion and collate, same batch size and
workers. The images cross the worker boundary as uint8 (what the StyleGAN2 trainer asks for) unless
`--image-dtype float`. Warm runs read from the page cache; cold runs first evict every file of both layouts
with posix_fadvise(DONTNEED) (no root needed; the files are fsynced first, since dirty pages cannot be
dropped), or with `--drop-caches` through /proc/sys/vm/drop_caches (root), which also forgets directory
entries and inodes, so every open of a file goes to the disk as on a freshly booted node. Runs alternate
between the two layouts. The "io-only" readers read the same bytes without decoding, in the main process,
to show what the layout alone costs: `io-only` is our tar reader (read_samples) against Path.read_bytes,
`io-tarfile` is webdataset's tarfile-based reader against the same files. Prints samples/s per run, the
median per reader and mode, and the ratio shards/folder (the issue's target: >= 2x).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_catalog.loader import collate_samples, decode_image, list_shards, make_loader, read_samples
from data_catalog.shards import ShardSample, write_shards


def synthetic_jpeg(rng: np.random.Generator, size: int, quality: int) -> bytes:
    """A smooth random image (upsampled noise plus a gradient): compresses like a photo, not like noise."""
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    ramp = np.linspace(-30, 30, size, dtype=np.float32)[None, :, None]
    array = np.clip(np.asarray(image, dtype=np.float32) + ramp + rng.normal(0, 4, (size, size, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class FolderDataset(torch.utils.data.Dataset):
    """The baseline: one file per image, opened and decoded per index, same output as MegnDataset."""

    def __init__(self, files: list[Path], labels: list[int], image_dtype: str) -> None:
        self.files = files
        self.labels = labels
        self.image_dtype = image_dtype

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        return {"image": decode_image(path.read_bytes(), self.image_dtype), "label": self.labels[index],
                "key": path.stem, "metadata": {}}


def build(root: Path, samples: int, size: int, quality: int) -> tuple[list[Path], list[Path], list[int]]:
    rng = np.random.default_rng(0)
    images = [synthetic_jpeg(rng, size, quality) for _ in range(samples)]
    labels = [i % 4 for i in range(samples)]
    shard_dir, folder = root / "shards", root / "folder"
    write_shards((ShardSample(f"img{i:07d}", data, "jpg", {"index": i}, label)
                  for i, (data, label) in enumerate(zip(images, labels))), shard_dir, "train", max_count=250)
    folder.mkdir()
    files = []
    for i, data in enumerate(images):
        path = folder / f"img{i:07d}.jpg"
        path.write_bytes(data)
        files.append(path)
    os.sync()  # dirty pages cannot be evicted: flush everything before the first cold run
    return list_shards(shard_dir, "train"), files, labels


def evict(paths: list[Path], drop_caches: bool) -> None:
    if drop_caches:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_bytes(paths: list[Path]) -> int | None:
    """Page-cache residency via util-linux `fincore`, to show the eviction worked; None where it is absent."""
    if shutil.which("fincore") is None:
        return None
    result = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", *map(str, paths)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    return sum(int(line.split()[0]) for line in result.stdout.splitlines() if line.strip())


def timed_pass(run: Callable[[], int], expected: int) -> float:
    """Samples/s of one full pass, worker start-up included (a training epoch pays it too)."""
    start = time.perf_counter()
    seen = run()
    elapsed = time.perf_counter() - start
    if seen != expected:
        raise RuntimeError(f"a pass yielded {seen} samples, expected {expected}")
    return seen / elapsed


def count_batches(loader: torch.utils.data.DataLoader) -> int:
    return sum(len(batch["key"]) for batch in loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp dir (default: system temp)")
    parser.add_argument("--image-dtype", choices=("uint8", "float"), default="uint8")
    parser.add_argument("--drop-caches", action="store_true",
                        help="cold runs drop the page, dentry and inode caches (root) instead of fadvise")
    args = parser.parse_args()

    torch.set_num_threads(1)  # the work is decode-bound and lives in the workers; keep the parent quiet
    with tempfile.TemporaryDirectory(prefix="bench-loader-", dir=args.dir) as tmp:
        start = time.perf_counter()
        shards, files, labels = build(Path(tmp), args.samples, args.size, args.quality)
        shard_mb = sum(p.stat().st_size for p in shards) / 1e6
        folder_mb = sum(p.stat().st_size for p in files) / 1e6
        print(f"built {args.samples} {args.size}x{args.size} JPEGs (q{args.quality}) in "
              f"{time.perf_counter() - start:.1f} s: {len(shards)} shards ({shard_mb:.1f} MB), "
              f"{len(files)} files ({folder_mb:.1f} MB) under {tmp}")
        print(f"batch size {args.batch_size}, workers {args.workers}, repeats {args.repeats}, images "
              f"{args.image_dtype}, cold = {'drop_caches' if args.drop_caches else 'fadvise(DONTNEED)'}, "
              f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
              "(other processes skew the rates: compare the ratio, and rerun on a quiet machine)\n")

        loaders: dict[str, Callable[[], int]] = {
            "shards": lambda: count_batches(make_loader(shards, args.batch_size, args.workers, rank=0, world_size=1,
                                                        image_dtype=args.image_dtype)),
            "folder": lambda: count_batches(torch.utils.data.DataLoader(
                FolderDataset(files, labels, args.image_dtype), batch_size=args.batch_size, num_workers=args.workers,
                shuffle=False, collate_fn=collate_samples, prefetch_factor=4 if args.workers else None)),
        }
        io_only: dict[str, Callable[[], int]] = {  # what the layout itself costs: bytes in, no decode, one process
            "shards": lambda: sum(1 for _ in read_samples(shards)),
            "folder": lambda: sum(1 for path in files if path.read_bytes()),
        }
        io_tarfile: dict[str, Callable[[], int]] = {  # the same, through webdataset's tarfile-based reader
            "shards": lambda: sum(1 for _ in wds.DataPipeline(wds.SimpleShardList(list(map(str, shards))),
                                                              wds.tarfile_to_samples())),
            "folder": io_only["folder"],
        }
        everything = [*shards, *files]
        results: dict[tuple[str, str, str], list[float]] = {}
        residency: list[int] = []
        print(f"{'reader':<10} {'mode':<5} {'run':>3} {'shards samples/s':>17} {'folder samples/s':>17} {'ratio':>7}")
        for reader, runs in (("loader", loaders), ("io-only", io_only), ("io-tarfile", io_tarfile)):
            for mode in ("warm", "cold"):
                if mode == "warm":
                    for run_pass in runs.values():  # one untimed pass puts every file in the page cache
                        timed_pass(run_pass, args.samples)
                for repeat in range(args.repeats):
                    rates = {}
                    for name, run_pass in runs.items():
                        if mode == "cold":
                            evict(everything, args.drop_caches)
                            resident = resident_bytes(everything)
                            if resident is not None:
                                residency.append(resident)
                        rates[name] = timed_pass(run_pass, args.samples)
                        results.setdefault((reader, mode, name), []).append(rates[name])
                    print(f"{reader:<10} {mode:<5} {repeat + 1:>3} {rates['shards']:>17.0f} {rates['folder']:>17.0f} "
                          f"{rates['shards'] / rates['folder']:>6.2f}x")

        print(f"\n{'reader':<10} {'mode':<5} {'shards median':>14} {'folder median':>14} {'shards/folder':>14}")
        for reader in ("loader", "io-only", "io-tarfile"):
            for mode in ("warm", "cold"):
                shard_rate = statistics.median(results[(reader, mode, "shards")])
                folder_rate = statistics.median(results[(reader, mode, "folder")])
                print(f"{reader:<10} {mode:<5} {shard_rate:>14.0f} {folder_rate:>14.0f} "
                      f"{shard_rate / folder_rate:>13.2f}x")
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
        if residency:
            print(f"cold runs: at most {max(residency) / 1e6:.2f} MB of {shard_mb + folder_mb:.1f} MB still "
                  "in the page cache after eviction (fincore)")
        else:
            print("cold runs: eviction not verified (no util-linux fincore)")


if __name__ == "__main__":
    main()
