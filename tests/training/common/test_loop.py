"""The generic TrainingLoop, driven by a toy Trainable: y = w * x + b fitted by SGD on seeded random batches."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from training.common.checkpoint import load_checkpoint
from training.common.distributed import DistContext
from training.common.loop import PeriodicHook, Schedule, TrainingLoop, format_duration
from training.common.run_folder import RunFolder

BATCH = 4
LOGGER = "sdgan.train-toy"


@dataclass
class ToyCounters:
    step: int = 0
    images_seen: int = 0
    ticks: dict[str, int] = field(default_factory=dict)


class ToyTrainer:
    """A 2-parameter linear model; batch i is always the same data, so runs are repeatable step by step."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        self.optim = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.state = ToyCounters()
        self.device = torch.device("cpu")
        self.ctx = DistContext()

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        x, y = batch
        loss = nn.functional.mse_loss(self.model(x), y)
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        self.state.step += 1
        self.state.images_seen += x.shape[0]
        return {"loss": loss.detach(), "lr": 0.1}

    def checkpoint(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optim": self.optim.state_dict(),
                "counters": {"step": self.state.step, "images_seen": self.state.images_seen,
                             "ticks": dict(self.state.ticks)}, **(extra or {})}

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optim.load_state_dict(checkpoint["optim"])
        self.state = ToyCounters(**checkpoint["counters"])

    def sample_grid(self) -> torch.Tensor:
        return torch.tanh(self.model.weight.detach()).expand(4, 3, 2, 2)

    def window_stats(self) -> dict[str, float]:
        return {"w": float(self.model.weight.detach())}


def toy_batches(trainer: ToyTrainer) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from the trainer's current step on (what a resumed run needs to continue exactly)."""
    index = trainer.state.step
    while True:
        generator = torch.Generator().manual_seed(index)
        x = torch.randn(BATCH, 1, generator=generator)
        yield x, 3 * x - 1 + 0.01 * torch.randn(BATCH, 1, generator=generator)
        index += 1


def make_loop(trainer: ToyTrainer, root: Path, total_kimg: float = 0.064, **kwargs: Any) -> TrainingLoop:
    schedule = Schedule(total_kimg=total_kimg, tick_kimg=kwargs.pop("tick_kimg", 0.016), log_steps=2,
                        checkpoint_kimg=0.008, keep_checkpoints=3, sample_kimg=0.032)
    return TrainingLoop(trainer, RunFolder(root).create(), schedule, lambda: toy_batches(trainer), name="train-toy",
                        checkpoint_extra={"dataset_version": "v-toy"}, **kwargs)


def test_ticks_are_logged_at_the_configured_interval(tmp_path: Path, log_records) -> None:
    records = log_records(LOGGER)
    result = make_loop(ToyTrainer(), tmp_path / "run", tick_fields={"loss": "loss", "w": "weight"}).run()
    lines = [r.getMessage() for r in records if r.levelno == logging.INFO]
    ticks = [line for line in lines if line.startswith("tick ")]
    # 64 images, 4 a step, a tick every 16 images: ticks 1-4 at steps 4, 8, 12, 16
    assert [re.match(r"tick (\d+)  kimg ([\d.]+)/0\.064  step (\d+)", t).groups() for t in ticks] == [
        ("1", "0.016", "4"), ("2", "0.032", "8"), ("3", "0.048", "12"), ("4", "0.064", "16")]
    assert all(re.search(r"sec/kimg [\d.]+  loss [\d.]+  weight -?[\d.]+  mem \d+ MB  eta \d+:\d\d:\d\d$", t)
               for t in ticks), ticks
    assert "lr" not in ticks[0]  # only the chosen fields
    assert re.fullmatch(r"done: 0\.064 kimg in \d+:\d\d:\d\d", lines[-1])
    assert result["steps"] == 16 and result["images_seen"] == 64 and result["kimg"] == 0.064


def test_progress_gets_increasing_fractions_ending_at_one(tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    make_loop(ToyTrainer(), tmp_path / "run", tick_kimg=0.008, progress=lambda f, line: calls.append((f, line))).run()
    fractions = [f for f, _ in calls]
    assert fractions == [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.0]
    assert calls[0][1].startswith("tick 1  kimg 0.008/0.064") and calls[-1][1].startswith("done: 0.064 kimg")


def test_a_failing_progress_callback_does_not_stop_training(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(fraction: float, line: str) -> None:
        raise RuntimeError("artifact service down")

    result = make_loop(ToyTrainer(), tmp_path / "run", progress=broken).run()
    assert result["images_seen"] == 64
    assert any("progress callback failed" in r.getMessage() for r in caplog.records if r.name == LOGGER)


def test_run_files_stats_grids_events_and_pruned_checkpoints(tmp_path: Path) -> None:
    hook_calls: list[int] = []

    def hook(trainer: ToyTrainer) -> dict[str, float]:
        hook_calls.append(trainer.state.images_seen)
        return {"score": float(trainer.state.step)}

    trainer = ToyTrainer()
    loop = make_loop(trainer, tmp_path / "run", hooks=[PeriodicHook("score", 0.032, hook)])
    loop.run()
    folder = loop.folder
    # a checkpoint every 8 images, the newest 3 kept
    assert [p.name for p in folder.list_checkpoints()] == [
        "ckpt-000000048.pt", "ckpt-000000056.pt", "ckpt-000000064.pt"]
    assert loop.final_checkpoint == folder.checkpoint_path(64)
    final = load_checkpoint(loop.final_checkpoint)
    assert final["counters"]["step"] == 16 and final["dataset_version"] == "v-toy"
    assert sorted(p.name for p in folder.grids.iterdir()) == [
        "fakes-000000000.png", "fakes-000000032.png", "fakes-000000064.png"]
    assert list(folder.events.glob("events.out.tfevents.*"))
    stats = folder.read_stats()
    windows = [r for r in stats if "loss" in r]
    assert [r["step"] for r in windows] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert all({"time", "kimg", "sec_per_kimg", "memory_mb", "w", "lr"} <= set(r) for r in windows)
    assert hook_calls == [32, 64]
    assert [(r["images_seen"], r["score"]) for r in stats if "score" in r] == [(32, 8.0), (64, 16.0)]
    assert windows[-1]["loss"] < windows[0]["loss"]  # the toy model learns


def test_resume_continues_the_counters_and_repeats_the_same_steps(tmp_path: Path) -> None:
    straight = ToyTrainer()
    make_loop(straight, tmp_path / "straight").run()

    first = ToyTrainer()
    make_loop(first, tmp_path / "run").run()
    folder = RunFolder(tmp_path / "run")
    for path in folder.list_checkpoints()[1:]:
        path.unlink()  # as if killed after the checkpoint at 48 images
    resumed = ToyTrainer()
    loop = make_loop(resumed, tmp_path / "run")
    loop.resume(folder.latest_checkpoint())
    assert (resumed.state.step, resumed.state.images_seen) == (12, 48)
    assert resumed.state.ticks["checkpoint"] == 48 and resumed.state.ticks["grid"] == 32
    assert [r["step"] for r in folder.read_stats()] == [2, 4, 6, 8, 10, 12]  # later lines dropped
    loop.run()
    assert (resumed.state.step, resumed.state.images_seen) == (16, 64)
    torch.testing.assert_close(resumed.model.weight, straight.model.weight, rtol=0, atol=0)
    torch.testing.assert_close(resumed.model.bias, straight.model.bias, rtol=0, atol=0)
    assert [r["step"] for r in folder.read_stats()] == [2, 4, 6, 8, 10, 12, 14, 16]


def test_schedule_validation_and_duration_format() -> None:
    with pytest.raises(ValueError, match="invalid schedule"):
        Schedule(total_kimg=1, tick_kimg=0)
    assert format_duration(62.4) == "0:01:02" and format_duration(-3) == "0:00:00"
