"""The `build-megn` flow: crawl -> align+filter -> shard, each stage cached on content hashes.

A second run with nothing changed skips every stage; changing only a filter threshold reruns align and
shard, not crawl. The dataset card of the resulting version is published as a Prefect markdown artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from data_catalog.dataset import version_folder
from data_catalog.workspace import Workspace
from flows.pipeline import outcomes_to_json, run_stages

BUILD_MEGN = ["crawl", "align", "shard"]


def dataset_location(workspace: str | Path) -> dict[str, str] | None:
    """The current dataset version of a workspace: its id, folder, card and shards."""
    ws = Workspace(workspace, create=False)
    manifest = ws.current("shard")
    if manifest is None:
        return None
    folder = version_folder(ws, manifest)
    if folder is None:
        return None
    return {"version": folder.name, "folder": str(folder), "card": str(folder / "card.md"),
            "shards": str(folder / "megn-{train,val}-*.tar")}


def publish_card(workspace: str | Path) -> dict[str, str] | None:
    """The card as a markdown artifact, so the Prefect UI shows what was built."""
    location = dataset_location(workspace)
    if location is not None:
        create_markdown_artifact(key="megn-dataset-card", markdown=Path(location["card"]).read_text(encoding="utf-8"),
                                 description=f"MEGN dataset version {location['version']}")
    return location


def run_dataset_stages(names: list[str], workspace: str, profile: str, overrides: list[str] | None,
                       force: list[str] | None, task_runner: str, workers: int) -> dict[str, Any]:
    """Run dataset stages; the outcomes and where the resulting dataset version is (its card published)."""
    outcomes = run_stages(names, workspace, profile, overrides or [], force or [], task_runner=task_runner,
                          workers=workers)
    return {"stages": outcomes_to_json(outcomes), "dataset": publish_card(workspace)}


@flow(name="build-megn", persist_result=True, result_serializer="json")
def build_megn_flow(
    workspace: str,
    profile: str = "demo",
    overrides: list[str] | None = None,
    force: list[str] | None = None,
    task_runner: str = "thread",
    workers: int = 4,
) -> dict[str, Any]:
    """Build a MEGN dataset version: outcomes per stage and where the card and shards are."""
    return run_dataset_stages(BUILD_MEGN, workspace, profile, overrides, force, task_runner, workers)
