"""`sdgan serve`: serve every deployment of prefect.yaml from one process (no work pool needed).

prefect.yaml stays the single declaration of deployments: `prefect deploy --all` reads it for users
who run workers, and this module reads the same entries for the one-process setup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from data_catalog.manifest import PROJECT_ROOT
from flows.registry import load_flow

DEFAULT_FILE = PROJECT_ROOT / "prefect.yaml"


def read_deployments(path: str | Path = DEFAULT_FILE) -> list[dict[str, Any]]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    deployments = data.get("deployments") or []
    for entry in deployments:
        if not entry.get("name") or not entry.get("entrypoint"):
            raise ValueError(f"{path}: every deployment needs a name and an entrypoint, got {entry}")
    return deployments


def build_deployments(path: str | Path = DEFAULT_FILE, only: list[str] | None = None) -> list[Any]:
    """RunnerDeployments for the entries of `path` (filtered by `flow/deployment` names when given)."""
    built = []
    for entry in read_deployments(path):
        flow = load_flow(entry["entrypoint"])
        full_name = f"{flow.name}/{entry['name']}"
        if only and full_name not in only and flow.name not in only:
            continue
        built.append(
            flow.to_deployment(
                name=entry["name"],
                parameters=entry.get("parameters") or {},
                description=entry.get("description"),
                tags=entry.get("tags") or [],
            )
        )
    if only and not built:
        raise ValueError(f"no deployment in {path} matches {only}")
    return built


def serve(path: str | Path = DEFAULT_FILE, only: list[str] | None = None, limit: int | None = None) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*build_deployments(path, only), limit=limit)
