"""The `crawl` flow: run the crawl stage with the CLI's shortcuts as parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow

from flows.pipeline import outcomes_to_json, run_stages


def crawl_overrides(
    sources: list[str] | None = None,
    plan: str | None = None,
    urls: str | None = None,
    endpoint: str | None = None,
    max_per_query: int | None = None,
    retry_failed: bool = False,
) -> list[str]:
    """Translate the crawl shortcuts into `--set` overrides of the crawl config."""
    out: list[str] = []
    if sources:
        out.append(f"sources={json.dumps(list(sources))}")
    if plan:
        out.append(f"plan={Path(plan).expanduser().resolve()}")
    if urls:
        out.append(f"urls={Path(urls).expanduser().resolve()}")
        if not sources:
            out.append('sources=["urls"]')
    if endpoint:
        engines = [s for s in (sources or []) if s != "urls"]
        if len(engines) != 1:
            raise ValueError("--endpoint needs exactly one search --source (it is that engine's base URL)")
        out.append(f"endpoints={json.dumps({engines[0]: endpoint})}")
    if max_per_query is not None:
        out.append(f"max_per_query={int(max_per_query)}")
    if retry_failed:
        out.append("retry_failed=true")
    return out


@flow(name="crawl", persist_result=True, result_serializer="json")
def crawl_flow(
    workspace: str,
    profile: str = "demo",
    overrides: list[str] | None = None,
    force: list[str] | None = None,
    task_runner: str = "thread",
    workers: int = 4,
    sources: list[str] | None = None,
    plan: str | None = None,
    urls: str | None = None,
    endpoint: str | None = None,
    max_per_query: int | None = None,
    retry_failed: bool = False,
) -> list[dict[str, Any]]:
    """Search, download and catalog raw images. `retry_failed` always runs (it is never a cache hit)."""
    extra = crawl_overrides(sources, plan, urls, endpoint, max_per_query, retry_failed)
    forced = list(force or []) + (["crawl"] if retry_failed else [])
    return outcomes_to_json(run_stages(["crawl"], workspace, profile, list(overrides or []) + extra, forced,
                                           task_runner=task_runner, workers=workers))
