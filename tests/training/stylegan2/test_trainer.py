"""The StyleGAN2 trainer and stage: run files, learning, exact resume after a kill, data parallelism."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from data_catalog.config import ConfigError
from data_catalog.loader import decode_image, read_samples
from data_catalog.workspace import Workspace
from tests.training.stylegan2.stylegan2_helpers import VERSION, tiny_config, toy_workspace
from training.common.distributed import DistContext
from training.stylegan2.checkpoint import generator_from_checkpoint, load_checkpoint
from training.stylegan2.data import fit_resolution, real_batches
from training.stylegan2.stage import DatasetNotFound, run
from training.stylegan2.trainer import StyleGAN2Trainer

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def workspace(tmp_path: Path) -> Workspace:
    return toy_workspace(tmp_path / "ws")


def _run_folder(workspace: Workspace) -> Path:
    (folder,) = sorted(p for p in (workspace.root / "models" / "stylegan2").iterdir() if not p.name.startswith("."))
    return folder


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("sec_per_kimg", "memory_mb", "time")}


def test_training_run_writes_every_run_file(workspace: Workspace, log_records) -> None:
    records = log_records("sdgan.train-stylegan2")
    progress: list[tuple[float, str]] = []
    manifest = run(tiny_config(**{"schedule.tick_kimg": 0.04}), workspace,
                   progress=lambda fraction, line: progress.append((fraction, line)))
    folder = _run_folder(workspace)
    assert folder.name == manifest.run_id
    assert json.loads((folder / "config.json").read_text())["config"]["model"]["size"] == 16
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["dataset_version"] == VERSION and len(dataset["shards"]) == 4
    stats = [json.loads(line) for line in (folder / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats] == [2, 4, 6, 8, 10]
    assert stats[-1]["images_seen"] == 80 and all(r["sec_per_kimg"] > 0 and r["memory_mb"] > 0 for r in stats)
    assert {"loss_d", "loss_g", "real_score", "fake_score", "r1", "path", "ada_p"} <= set().union(*stats)
    assert list((folder / "events").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (folder / "grids").iterdir()) == [
        "fakes-000000000.png", "fakes-000000040.png", "fakes-000000080.png"]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["ckpt-000000040.pt", "ckpt-000000080.pt"]

    checkpoint = load_checkpoint(folder / "checkpoints" / "ckpt-000000080.pt")
    assert {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"} <= set(checkpoint)
    assert isinstance(checkpoint["args"], argparse.Namespace) and checkpoint["args"].size == 16
    assert checkpoint["sdgan"]["images_seen"] == 80 and checkpoint["sdgan"]["dataset_version"] == VERSION
    generator = generator_from_checkpoint(checkpoint)
    assert generator([torch.randn(2, 16)])[0].shape == (2, 3, 16, 16)

    assert manifest.status == "completed" and manifest.counts["images_seen"] == 80
    assert manifest.counts["kimg"] == 0.08  # with its fraction, not rounded down to 0
    assert all("time" in r for r in stats)

    # Live progress: a tick line every 0.04 kimg through the stage's logger and the callback, then "done".
    lines = [r.getMessage() for r in records]
    ticks = [line for line in lines if line.startswith("tick ")]
    assert [t.split("  ")[:3] for t in ticks] == [["tick 1", "kimg 0.040/0.080", "step 5"],
                                                  ["tick 2", "kimg 0.080/0.080", "step 10"]]
    assert all(" loss_d " in t and " loss_g " in t and " augment " in t and " eta " in t for t in ticks)
    assert [f for f, _ in progress] == [0.5, 1.0, 1.0] and [line for _, line in progress[:2]] == ticks
    assert progress[-1][1].startswith("done: 0.080 kimg in ")
    assert {"config.json", "dataset.json", "stats.jsonl", "checkpoint", "grid"} <= set(manifest.files)
    runs = workspace.table("runs")
    assert (runs["stage"] == "train-stylegan2").sum() == 1


def test_a_tiny_run_first_separates_then_closes_the_real_fake_gap(workspace: Workspace) -> None:
    """D learns first (the gap D(real) - D(fake) grows), then G catches up and the gap shrinks again."""
    torch.set_num_threads(1)
    trainer = StyleGAN2Trainer(tiny_config())
    shards = sorted((workspace.root / "primary" / "megn" / VERSION).glob("*.tar"))
    batches = real_batches(shards, 8, shuffle_buffer=16)
    gaps = []
    for _ in range(200):
        stats = trainer.step(next(batches))
        gaps.append(stats["real_score"] - stats["fake_score"])
    windows = [sum(gaps[i:i + 20]) / 20 for i in range(0, 200, 20)]
    peak = max(windows)
    assert peak > 2 * windows[0], windows  # the discriminator learned to tell real from fake
    assert sum(gaps[-40:]) / 40 < 0.5 * peak, windows  # and the generator closed most of that gap


def test_prepare_real_makes_uint8_batches_the_float_images_the_decoder_makes(workspace: Workspace) -> None:
    trainer = StyleGAN2Trainer(tiny_config(**{"data.xflip": "false"}))
    shards = sorted((workspace.root / "primary" / "megn" / VERSION).glob("*.tar"))
    (sample,) = itertools.islice(read_samples(shards), 1)
    as_bytes = decode_image(sample.image, "uint8")[None]
    as_float = decode_image(sample.image, "float")[None]
    real = trainer.prepare_real(as_bytes)
    assert real.dtype == torch.float32 and -1 <= real.min() and real.max() <= 1
    torch.testing.assert_close(real, fit_resolution(as_float, trainer.config.model.size), rtol=0, atol=0)
    torch.testing.assert_close(trainer.prepare_real(as_float), real, rtol=0, atol=0)  # float input still works


def test_resume_continues_kimg_and_reproduces_the_next_steps(workspace: Workspace, tmp_path: Path) -> None:
    every_step = {"schedule.log_steps": 1}  # one stats line per step, so lines compare one to one
    first = run(tiny_config(**every_step), workspace)
    folder = _run_folder(workspace)
    final = load_checkpoint(folder / "checkpoints" / "ckpt-000000080.pt")
    stats = (folder / "stats.jsonl").read_text().splitlines()
    midway = tmp_path / "midway.pt"
    shutil.copy(folder / "checkpoints" / "ckpt-000000040.pt", midway)
    (folder / "checkpoints" / "ckpt-000000080.pt").unlink()  # as if killed between the two checkpoints

    second = run(tiny_config(resume=first.run_id, **every_step), workspace)
    assert second.run_id != first.run_id and second.counts["images_seen"] == 80
    assert _run_folder(workspace) == folder  # continued in the same run folder
    resumed = load_checkpoint(folder / "checkpoints" / "ckpt-000000080.pt")
    assert resumed["sdgan"]["step"] == final["sdgan"]["step"] == 10
    for key in ("g", "d", "g_ema"):
        for name, tensor in final[key].items():
            torch.testing.assert_close(resumed[key][name], tensor, rtol=0, atol=1e-6, msg=f"{key}.{name}")
    assert resumed["sdgan"]["augment"]["p"] == final["sdgan"]["augment"]["p"]
    # The stats logged after the restored checkpoint were replaced, not duplicated, and match the first run.
    after = (folder / "stats.jsonl").read_text().splitlines()
    assert [_comparable(json.loads(x)) for x in after] == [_comparable(json.loads(x)) for x in stats]

    # A bare checkpoint file also resumes (here into a fresh folder, since it is not inside a run folder).
    third = run(tiny_config(resume=str(midway), **every_step), workspace)
    assert third.counts["images_seen"] == 80


def test_resume_refuses_a_changed_model_or_loss(workspace: Workspace) -> None:
    first = run(tiny_config(), workspace)
    with pytest.raises(ConfigError, match="loss"):
        run(tiny_config(resume=first.run_id, **{"loss.r1_gamma": 3}), workspace)
    extended = run(tiny_config(resume=first.run_id, **{"schedule.total_kimg": 0.096}), workspace)
    assert extended.counts["images_seen"] == 96  # the schedule may change: training continues


def test_unknown_dataset_version_is_a_clear_error(workspace: Workspace) -> None:
    with pytest.raises(DatasetNotFound, match="v-missing.*versions: v-toy"):
        run(tiny_config(dataset="v-missing"), workspace)


def test_killed_process_resumes_from_its_last_checkpoint(workspace: Workspace, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import sys\n"
        "from data_catalog.workspace import Workspace\n"
        "from tests.training.stylegan2.stylegan2_helpers import tiny_config\n"
        "from training.stylegan2.stage import run\n"
        "overrides = dict(a.split('=', 1) for a in sys.argv[2:])\n"
        "run(tiny_config(**overrides), Workspace(sys.argv[1]))\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    long_run = {"schedule.total_kimg": "2", "schedule.checkpoint_kimg": "0.04"}
    process = subprocess.Popen([sys.executable, str(script), str(workspace.root),
                                *[f"{k}={v}" for k, v in long_run.items()]], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            checkpoints = list((workspace.root / "models" / "stylegan2").glob("*/checkpoints/ckpt-*.pt"))
            if len(checkpoints) >= 2:
                break
            assert process.poll() is None, "training ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 120 s")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    folder = _run_folder(workspace)
    last = max((folder / "checkpoints").glob("ckpt-*.pt"))
    seen = load_checkpoint(last)["sdgan"]["images_seen"]
    assert seen >= 40

    target = seen + 40
    manifest = run(tiny_config(resume=folder.name, **{**long_run, "schedule.total_kimg": target / 1000}), workspace)
    assert manifest.counts["images_seen"] == target
    steps = [json.loads(line)["step"] for line in (folder / "stats.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "a step was logged twice"
    assert steps[-1] == target // 8
    assert not list(folder.glob("**/.tmp-*")), "a temp file of the killed write was listed or left"


def _fixed_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    real = torch.rand(8, 3, 16, 16, generator=generator) * 2 - 1
    return real, torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)


def _gradients(trainer: StyleGAN2Trainer, real: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor) -> dict:
    grads = {}
    trainer.d_backward(real, [z_d])
    grads.update({f"d_loss.{n}": p.grad.clone() for n, p in trainer.d.named_parameters()})
    trainer.r1_backward(real)
    grads.update({f"r1.{n}": p.grad.clone() for n, p in trainer.d.named_parameters()})
    trainer.g_backward([z_g])
    grads.update({f"g_loss.{n}": p.grad.clone() for n, p in trainer.g.named_parameters()})
    return grads


def _rank_worker(rank: int, rendezvous: str, out: str) -> None:
    torch.set_num_threads(1)
    # A file rendezvous, not MASTER_PORT: no port to race for and no TCPStore threads to tear down.
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        trainer = StyleGAN2Trainer(tiny_config(**{"augment.ada": "false"}), ctx=DistContext(rank, 2))
        real, z_d, z_g = _fixed_inputs()
        # Strided split: the minibatch-stddev groups of one process of 8 (samples i, i+2, ...) are exactly
        # the per-rank batches, so the losses are the same function of the data.
        grads = _gradients(trainer, real[rank::2], z_d[rank::2], z_g[rank::2])
        if rank == 0:
            torch.save(grads, out)
        torch.distributed.barrier()  # leave together: tearing down while the peer still works can abort gloo
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_give_the_gradients_of_one_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    torch.multiprocessing.spawn(_rank_worker, args=(str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    distributed = torch.load(out, weights_only=True)
    trainer = StyleGAN2Trainer(tiny_config(**{"augment.ada": "false"}))
    single = _gradients(trainer, *_fixed_inputs())
    assert set(distributed) == set(single)
    for name, grad in single.items():
        if name.endswith(".noise.weight"):
            continue  # the gradient of a noise strength is the random noise map itself: drawn per process
        torch.testing.assert_close(distributed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_fid_hook_logs_fid_with_cached_real_statistics(workspace: Workspace, tmp_path: Path) -> None:
    from tests.training.stylegan2.test_fid import TinyDetector, save_scripted

    detector = save_scripted(TinyDetector(), tmp_path / "detector.pt")
    fid_settings = {"fid.inception": str(detector), "fid.every_kimg": 0.04, "fid.n_images": 32, "fid.batch": 16}
    run(tiny_config(**fid_settings), workspace)
    folder = _run_folder(workspace)
    fids = [json.loads(line) for line in (folder / "stats.jsonl").read_text().splitlines() if "fid" in line]
    assert [r["images_seen"] for r in fids] == [40, 80]
    assert all(r["fid"] > 0 for r in fids)
    (cache,) = (workspace.root / "models" / "stylegan2" / ".fid-cache").glob("*.npz")
    assert VERSION in cache.name


def test_missing_inception_weights_fail_before_training(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="inception"):
        run(tiny_config(**{"fid.inception": str(tmp_path / "inception-2015-12-05.pt")}), workspace)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_mixed_precision_steps_on_cuda_stay_finite(workspace: Workspace) -> None:
    trainer = StyleGAN2Trainer(tiny_config(**{"runtime.device": "cuda", "runtime.amp": "true"}), device="cuda")
    assert trainer.amp
    shards = sorted((workspace.root / "primary" / "megn" / VERSION).glob("*.tar"))
    batches = real_batches(shards, 8)
    for _ in range(8):
        stats = trainer.step(next(batches))
        assert all(torch.isfinite(torch.as_tensor(v)) for v in stats.values()), stats
    assert all(torch.isfinite(p).all() for p in trainer.g.parameters())


def test_torchrun_with_two_gloo_processes_trains_and_books_one_run(workspace: Workspace) -> None:
    overrides = [f"--set={item}" for item in [
        "model.size=16", "model.style_dim=16", "model.n_mlp=2", "model.channel_max=16", "data.num_workers=0",
        "data.shuffle_buffer=8", "optim.batch=8", "schedule.total_kimg=0.048", "schedule.checkpoint_kimg=0.024",
        "schedule.sample_kimg=0.024", "schedule.log_steps=2", "schedule.grid_seeds=4", "runtime.device=cpu",
        "runtime.threads=1"]]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "flows.cli",
         "train-stylegan2", "--workspace", str(workspace.root), "--dataset", VERSION, "--profile", "demo",
         *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    folder = _run_folder(workspace)
    checkpoint = load_checkpoint(folder / "checkpoints" / "ckpt-000000048.pt")
    assert checkpoint["sdgan"]["images_seen"] == 48 and checkpoint["sdgan"]["step"] == 6  # 4 images per rank
    runs = workspace.table("runs")
    assert list(runs["stage"]) == ["train-stylegan2"] and list(runs["status"]) == ["completed"]
    assert result.stdout.count("run folder:") == 1  # rank 0 reports, rank 1 stays quiet


def test_resume_keeps_the_run_dataset_when_another_version_became_current(workspace: Workspace) -> None:
    first = run(tiny_config(), workspace)
    other = workspace.root / "primary" / "megn" / "v-other"
    shutil.copytree(workspace.root / "primary" / "megn" / VERSION, other)
    # The resumed run is given no dataset; it must not pick up whatever is newest or current.
    resumed = run(tiny_config(dataset="null", resume=first.run_id, **{"schedule.total_kimg": 0.096}), workspace)
    folder = _run_folder(workspace)
    assert json.loads((folder / "dataset.json").read_text())["dataset_version"] == VERSION
    assert resumed.counts["images_seen"] == 96
