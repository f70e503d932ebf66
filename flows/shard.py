"""The `shard` flow: write a dataset version (shards, samples table, card) from the current align run."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.build_megn import run_dataset_stages


@flow(name="shard", persist_result=True, result_serializer="json")
def shard_flow(
    workspace: str,
    profile: str = "demo",
    overrides: list[str] | None = None,
    force: list[str] | None = None,
    task_runner: str = "thread",
    workers: int = 4,
) -> dict[str, Any]:
    """Shard the faces the current align run kept; cached when neither they nor the config changed."""
    return run_dataset_stages(["shard"], workspace, profile, overrides, force, task_runner, workers)
