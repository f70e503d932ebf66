"""The `catalog-verify` flow: consistency check of a workspace, as a deployable flow."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import outcomes_to_json, run_stages


@flow(name="catalog-verify", persist_result=True, result_serializer="json")
def catalog_verify_flow(
    workspace: str,
    profile: str = "demo",
    overrides: list[str] | None = None,
    force: list[str] | None = None,
    task_runner: str = "thread",
    workers: int = 4,
) -> list[dict[str, Any]]:
    """Re-hash every blob and output file of `workspace` and check every catalog reference."""
    return outcomes_to_json(run_stages(["catalog-verify"], workspace, profile, overrides or [], force or [],
                                           task_runner=task_runner, workers=workers))
