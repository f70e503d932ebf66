"""The `align` flow: run the align stage on the workspace's raw images (one task per image batch)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import outcomes_to_json, run_stages


@flow(name="align", persist_result=True, result_serializer="json")
def align_flow(
    workspace: str,
    profile: str = "demo",
    overrides: list[str] | None = None,
    force: list[str] | None = None,
    task_runner: str = "thread",
    workers: int = 4,
    detector: str | None = None,
    output_size: int | None = None,
) -> list[dict[str, Any]]:
    """Detect, align, filter and deduplicate the faces of every raw image not yet processed."""
    extra = ([f"detector={detector}"] if detector else []) + ([f"output_size={int(output_size)}"] if output_size else [])
    return outcomes_to_json(run_stages(["align"], workspace, profile, list(overrides or []) + extra, list(force or []),
                                       task_runner=task_runner, workers=workers))
