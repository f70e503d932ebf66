"""The `reproduce` flow: the whole DAG, stage by stage, each cached on content hashes."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import outcomes_to_json, run_stages
from flows.stages import DAG_ORDER


@flow(name="reproduce", persist_result=True, result_serializer="json")
def reproduce_flow(
    workspace: str,
    profile: str = "demo",
    overrides: list[str] | None = None,
    force: list[str] | None = None,
    task_runner: str = "thread",
    workers: int = 4,
) -> list[dict[str, Any]]:
    """Every stage in DAG order, then catalog-verify. Stages not built yet are reported, not failed."""
    return outcomes_to_json(run_stages(list(DAG_ORDER), workspace, profile, overrides or [], force or [],
                                           task_runner=task_runner, workers=workers))
