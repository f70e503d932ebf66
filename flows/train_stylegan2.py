"""The `train-stylegan2` flow: train (or resume) StyleGAN2 on a MEGN dataset version, cached on content hashes.

A second run with the same config, code and dataset is a cache hit (the existing run folder is reused);
changing the config or the shard run trains again. `sdgan train-stylegan2` calls the stage function
directly instead (no Prefect), which is also what runs under `torchrun`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow

from data_catalog.manifest import Manifest
from data_catalog.workspace import Workspace
from flows.pipeline import outcomes_to_json, run_stages

STAGE = "train-stylegan2"


def train_overrides(dataset: str | None = None, resume: str | None = None) -> list[str]:
    """The `--dataset` / `--resume` shortcuts as overrides, JSON-quoted so an id like `1234e5` stays a string."""
    out: list[str] = []
    if dataset:
        out.append(f"dataset={json.dumps(str(dataset))}")
    if resume:
        # a path is made absolute (flow runs may start in another directory); a run id stays as it is
        path = Path(resume).expanduser()
        value = str(path.resolve()) if path.suffix == ".pt" or path.exists() else str(resume)
        out.append(f"resume={json.dumps(value)}")
    return out


def model_location(workspace: str | Path, manifest: Manifest | None = None) -> dict[str, Any] | None:
    """Where a train-stylegan2 run left its model (default: the workspace's current run)."""
    ws = Workspace(workspace, create=False)
    manifest = manifest or ws.current(STAGE)
    if manifest is None or "checkpoint" not in manifest.files:
        return None
    checkpoint = ws.resolve(manifest.files["checkpoint"].path)
    grid = manifest.files.get("grid")
    images = int(manifest.counts.get("images_seen", 0))
    return {"run_id": manifest.run_id, "folder": str(checkpoint.parent.parent), "checkpoint": str(checkpoint),
            "grid": str(ws.resolve(grid.path)) if grid else None, "images_seen": images, "kimg": images / 1000}


@flow(name="train-stylegan2", persist_result=True, result_serializer="json")
def train_stylegan2_flow(
    workspace: str,
    profile: str = "demo",
    overrides: list[str] | None = None,
    force: list[str] | None = None,
    task_runner: str = "thread",
    workers: int = 4,
    dataset: str | None = None,
    resume: str | None = None,
) -> dict[str, Any]:
    """Train StyleGAN2 on `dataset` (default: the current shard run's version); outcomes and the model's place."""
    outcomes = run_stages([STAGE], workspace, profile, list(overrides or []) + train_overrides(dataset, resume),
                          force or [], task_runner=task_runner, workers=workers)
    return {"stages": outcomes_to_json(outcomes), "model": model_location(workspace)}
