"""The generic training loop: batches until a total kimg, with logging, ticks, grids, hooks and checkpoints.

A trainer implements the small `Trainable` protocol (one `step` per batch, its checkpoint dict, a sample
grid); `TrainingLoop` owns everything around it that every trainer would otherwise repeat:

- stats windows of `log_steps` steps to `stats.jsonl` and TensorBoard (events a killed run logged after the
  checkpoint a resumed run starts from are hidden with `purge_step`);
- a progress tick every `tick_kimg` (stylegan2-ada's console line: kimg, step, sec/kimg, chosen stats,
  peak memory, ETA) through the logger `sdgan.<stage>` at INFO, and an optional `progress(fraction, line)`
  callback at every tick and at the end;
- sample grids every `sample_kimg`, periodic hooks (e.g. FID) every `every_kimg`, atomic checkpoints every
  `checkpoint_kimg` and at the end, keeping the newest `keep_checkpoints`.

Rank 0 writes files, logs and reports progress; every rank steps, runs the hooks (they may be collective)
and meets at a barrier after each checkpoint. When each thing is due is kept in the trainer's counters
(`state.ticks`, saved in its checkpoints), so a resumed run keeps the same rhythm.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import torch

from training.common.checkpoint import load_checkpoint, save_checkpoint
from training.common.distributed import DistContext, barrier
from training.common.images import save_grid
from training.common.run_folder import RunFolder

# A step's statistics: detached tensors on the device (reading one waits for the GPU, so the loop does it
# once per window, not every step) or plain floats.
StepStats = Mapping[str, torch.Tensor | float]
ProgressCallback = Callable[[float, str], None]


class Counters(Protocol):
    """The counters a trainer keeps and checkpoints: steps, images consumed (all ranks) and due-marks."""

    step: int
    images_seen: int
    ticks: dict[str, int]  # images_seen when each periodic job ("grid", "checkpoint", hooks) last ran


class Trainable(Protocol):
    """What TrainingLoop needs from a trainer."""

    @property
    def state(self) -> Counters: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def ctx(self) -> DistContext: ...

    def step(self, batch: Any) -> StepStats:
        """One optimisation step on this rank's batch; advances `state.step` and `state.images_seen`."""
        ...

    def checkpoint(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything a resume needs (weights, optimisers, counters), with `extra` merged in."""
        ...

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what `checkpoint` saved, counters included."""
        ...

    def sample_grid(self) -> torch.Tensor | None:
        """Images in [-1, 1] (NCHW) to tile into a grid PNG, or None for a trainer without samples."""
        ...

    def window_stats(self) -> Mapping[str, float]:
        """Current values logged once per window besides the step means (e.g. a running mean)."""
        ...


@dataclass(frozen=True)
class Schedule:
    """How long to train and how often to log, tick, sample and checkpoint (kimg: thousands of images)."""

    total_kimg: float
    tick_kimg: float = 4.0
    log_steps: int = 10
    checkpoint_kimg: float | None = None  # None: only the final checkpoint
    keep_checkpoints: int = 5
    sample_kimg: float | None = None  # None: no sample grids

    def __post_init__(self) -> None:
        if self.total_kimg <= 0 or self.tick_kimg <= 0 or self.log_steps < 1 or self.keep_checkpoints < 1:
            raise ValueError(f"invalid schedule {self}: kimg values must be > 0, log_steps and keep_checkpoints >= 1")


@dataclass(frozen=True)
class PeriodicHook:
    """`fn(trainer)` every `every_kimg` on every rank; the stats it returns go to stats.jsonl (rank 0)."""

    name: str
    every_kimg: float
    fn: Callable[[Any], Mapping[str, float] | None]


class _Means:
    """Running sums of step stats: tensors stay on the device until `means()` reads them once."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add(self, stats: StepStats) -> None:
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {key: float(self.sums[key] / self.counts[key]) for key in sorted(self.sums)}


def memory_mb(device: torch.device) -> float:
    """Peak memory: allocated CUDA memory on a GPU, the process's maximum resident size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def format_duration(seconds: float) -> str:
    """0:01:02 (h:mm:ss), as stylegan2-ada prints its ETA."""
    return str(timedelta(seconds=max(0, round(seconds))))


class TrainingLoop:
    """Drives a Trainable to `schedule.total_kimg` (see the module docstring for what it owns)."""

    def __init__(self, trainer: Trainable, folder: RunFolder, schedule: Schedule,
                 batches: Callable[[], Iterable[Any]], *, name: str, hooks: Sequence[PeriodicHook] = (),
                 checkpoint_extra: dict[str, Any] | None = None, tick_fields: Mapping[str, str] | None = None,
                 progress: ProgressCallback | None = None, allowed_globals: Sequence[Any] = ()) -> None:
        """`batches` is called once, in run(), after any resume (so it can start where the counters are);
        `tick_fields` maps stat keys to their labels on tick lines (default: every stat under its own name);
        `allowed_globals` are the extra classes `resume` lets a checkpoint hold."""
        self.trainer = trainer
        self.folder = folder
        self.schedule = schedule
        self.batches = batches
        self.name = name
        self.hooks = list(hooks)
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.tick_fields = tick_fields
        self.progress = progress
        self.allowed_globals = tuple(allowed_globals)
        self.log = logging.getLogger(f"sdgan.{name}")
        self.main = trainer.ctx.is_main
        self.writer: Any = None
        self.final_checkpoint: Path | None = None
        self.hook_stats: dict[str, float] = {}

    @property
    def total_images(self) -> int:
        return round(self.schedule.total_kimg * 1000)

    # ------------------------------------------------------------------ periodic jobs
    def _due(self, name: str, every_kimg: float) -> bool:
        state = self.trainer.state
        return state.images_seen - state.ticks.get(name, 0) >= every_kimg * 1000

    def _mark(self, name: str) -> None:
        self.trainer.state.ticks[name] = self.trainer.state.images_seen

    def save_grid(self) -> Path | None:
        """The trainer's sample grid as `grids/fakes-<images>.png` (rank 0)."""
        if not self.main:
            return None
        images = self.trainer.sample_grid()
        return save_grid(images, self.folder.grid_path(self.trainer.state.images_seen)) if images is not None else None

    def save_checkpoint(self) -> Path | None:
        """Atomic checkpoint on rank 0, the newest `keep_checkpoints` kept; then every rank meets."""
        path = None
        if self.main:
            payload = self.trainer.checkpoint(dict(self.checkpoint_extra))
            path = save_checkpoint(self.folder.checkpoint_path(self.trainer.state.images_seen), payload)
            self.folder.prune_checkpoints(self.schedule.keep_checkpoints)
        barrier(self.trainer.ctx)
        return path

    def resume(self, path: str | Path) -> None:
        """Restore a checkpoint; rank 0 drops the stats lines a killed run logged after it."""
        checkpoint = load_checkpoint(path, map_location=self.trainer.device, allowed_globals=self.allowed_globals)
        self.trainer.load_checkpoint(checkpoint)
        state = self.trainer.state
        if self.main:
            dropped = self.folder.truncate_stats(state.images_seen)
            self.log.info("resumed from %s at kimg %.3f (dropped %d stats lines logged after it)", path,
                          state.images_seen / 1000, dropped)

    def _run_hook(self, hook: PeriodicHook) -> None:
        state = self.trainer.state
        stats = dict(hook.fn(self.trainer) or {})
        self.hook_stats.update(stats)
        if self.main and stats:
            self.folder.append_stats({"step": state.step, "images_seen": state.images_seen,
                                      "kimg": state.images_seen / 1000, **stats})
            self._scalars(stats)
            self.log.info("%s at kimg %.3f: %s", hook.name, state.images_seen / 1000,
                          "  ".join(f"{k} {v:.4g}" for k, v in stats.items()))

    # ------------------------------------------------------------------ reporting
    def _scalars(self, values: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if key not in ("step", "images_seen") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, self.trainer.state.step)
        self.writer.flush()

    def _log_window(self, window: _Means, seconds: float, images: int) -> None:
        state = self.trainer.state
        record = {"step": state.step, "images_seen": state.images_seen, "kimg": state.images_seen / 1000,
                  "sec_per_kimg": seconds / max(images / 1000, 1e-9), "memory_mb": memory_mb(self.trainer.device),
                  **self.trainer.window_stats(), **window.means()}
        self.folder.append_stats(record)
        self._scalars(record)

    def _tick_line(self, tick: int, window: _Means, seconds: float, images: int) -> str:
        state = self.trainer.state
        sec_per_kimg = seconds / max(images / 1000, 1e-9)
        values = {**window.means(), **self.trainer.window_stats()}
        fields = self.tick_fields if self.tick_fields is not None else {key: key for key in values}
        shown = "  ".join(f"{label} {values[key]:.3f}" for key, label in fields.items() if key in values)
        eta = (self.total_images - state.images_seen) / 1000 * sec_per_kimg
        parts = [f"tick {tick}", f"kimg {state.images_seen / 1000:.3f}/{self.total_images / 1000:.3f}",
                 f"step {state.step}", f"sec/kimg {sec_per_kimg:.1f}", shown,
                 f"mem {memory_mb(self.trainer.device):.0f} MB", f"eta {format_duration(eta)}"]
        return "  ".join(p for p in parts if p)

    def _report(self, fraction: float, line: str) -> None:
        """Log a progress line and hand it to the callback; a failing callback never stops training."""
        self.log.info("%s", line)
        if self.progress is None:
            return
        try:
            self.progress(min(max(fraction, 0.0), 1.0), line)
        except Exception:
            self.log.warning("progress callback failed; training continues", exc_info=True)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Train to the total; returns steps, images_seen, kimg (3 decimals), seconds and the last hook stats."""
        trainer, schedule = self.trainer, self.schedule
        state = trainer.state
        total = self.total_images
        tick_images = schedule.tick_kimg * 1000
        run_started = time.perf_counter()
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a killed run logged after the checkpoint this run resumed from
            self.writer = SummaryWriter(str(self.folder.events), purge_step=state.step or None)
            self.log.info("training to %.3f kimg from kimg %.3f (step %d), a tick every %g kimg", total / 1000,
                          state.images_seen / 1000, state.step, schedule.tick_kimg)
            if state.step == 0 and schedule.sample_kimg is not None:
                self._mark("grid")
                self.save_grid()
        batches = iter(self.batches())
        window, tick_window = _Means(), _Means()
        window_started = tick_started = time.perf_counter()
        window_images = tick_images_start = state.images_seen
        last_tick = math.floor(state.images_seen / tick_images)
        try:
            while state.images_seen < total:
                stats = trainer.step(next(batches))
                window.add(stats)
                tick_window.add(stats)
                finished = state.images_seen >= total
                if self.main and (state.step % schedule.log_steps == 0 or finished):
                    self._log_window(window, time.perf_counter() - window_started, state.images_seen - window_images)
                    window, window_started, window_images = _Means(), time.perf_counter(), state.images_seen
                if schedule.sample_kimg is not None and self._due("grid", schedule.sample_kimg):
                    self._mark("grid")
                    self.save_grid()
                for hook in self.hooks:
                    if self._due(hook.name, hook.every_kimg):
                        self._mark(hook.name)
                        self._run_hook(hook)
                if (schedule.checkpoint_kimg is not None and self._due("checkpoint", schedule.checkpoint_kimg)
                        and not finished):
                    self._mark("checkpoint")
                    self.save_checkpoint()
                tick = math.floor(state.images_seen / tick_images)
                if tick > last_tick:
                    if self.main:
                        line = self._tick_line(tick, tick_window, time.perf_counter() - tick_started,
                                               state.images_seen - tick_images_start)
                        self._report(state.images_seen / total, line)
                    last_tick, tick_window = tick, _Means()
                    tick_started, tick_images_start = time.perf_counter(), state.images_seen
            self._mark("checkpoint")
            self.final_checkpoint = self.save_checkpoint()
            if self.main and schedule.sample_kimg is not None and state.ticks.get("grid") != state.images_seen:
                self._mark("grid")
                self.save_grid()
        finally:
            if self.writer is not None:
                self.writer.close()
        seconds = time.perf_counter() - run_started
        if self.main:
            self._report(1.0, f"done: {state.images_seen / 1000:.3f} kimg in {format_duration(seconds)}")
        return {"steps": state.step, "images_seen": state.images_seen, "kimg": round(state.images_seen / 1000, 3),
                "seconds": seconds, **self.hook_stats}
