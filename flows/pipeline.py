"""Run a chain of stages inside a flow: resolve configs, wire manifests, report what ran or was cached."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from data_catalog import stages
from data_catalog.config import StageConfig
from data_catalog.lock import FROM_ENV, parse_wait, workspace_lock
from data_catalog.manifest import Manifest
from data_catalog.workspace import Workspace
from flows.artifacts import artifact_markdown
from flows.caching import CACHED, stage_task
from flows.fanout import TASK_RUNNERS

# Prefect-free, so the CLI checks a run before Prefect starts; re-exported here for existing callers.
from flows.preflight import FORCE_ALL, PipelineError, check_force, resolve_configs, split_overrides  # noqa: F401


@dataclass
class StageOutcome:
    stage: str
    status: str  # ran | cached | failed | not built yet | blocked
    run_id: str | None = None
    detail: str = ""


def run_stages(
    names: Sequence[str],
    workspace: str | Path,
    profile: str = "demo",
    overrides: Iterable[str] = (),
    force: Iterable[str] = (),
    config_dir: str | Path | None = None,
    task_runner: str = "thread",
    workers: int = 4,
    lock_wait: str | float | None = None,
) -> list[StageOutcome]:
    """Run `names` in order in `workspace`, holding the workspace's lock for the whole chain.

    `lock_wait`: seconds (or "forever") to queue behind another process using the workspace; None:
    `$SDGAN_LOCK_WAIT`, else stop at once with a message naming that process.
    """
    configs = resolve_configs(names, profile, list(overrides), config_dir)
    forced = check_force(names, force)
    if task_runner not in TASK_RUNNERS:
        raise PipelineError(f"unknown task runner {task_runner!r}; choose one of {', '.join(TASK_RUNNERS)}")
    ws = Workspace(workspace)
    with workspace_lock(ws.root, wait=FROM_ENV if lock_wait is None else parse_wait(str(lock_wait), "lock_wait")):
        return _run_locked(names, ws, configs, forced, task_runner, workers)


def _run_locked(names: Sequence[str], ws: Workspace, configs: dict[str, StageConfig], forced: set[str],
                task_runner: str, workers: int) -> list[StageOutcome]:
    logger = get_run_logger()
    manifests: dict[str, Manifest] = {}
    outcomes: list[StageOutcome] = []
    for name in names:
        spec = stages.get(name)
        if not spec.built:
            outcomes.append(StageOutcome(name, "not built yet"))
            logger.info("%s: not built yet", name)
            continue
        for upstream in spec.upstream:
            # A stage run on its own reuses the current upstream run of this workspace.
            if upstream not in manifests and (current := ws.current(upstream)) is not None:
                manifests[upstream] = current
        required = spec.required_upstream(configs[name].to_dict())  # a checkpoint path can stand in for a run
        missing = [u for u in required if u not in manifests]
        if missing:
            outcomes.append(StageOutcome(name, "blocked", detail=f"no completed run of {', '.join(missing)}"))
            logger.warning("%s: blocked, no completed run of %s", name, ", ".join(missing))
            continue
        inputs = [manifests[u].model_dump(mode="json") for u in required]
        state = stage_task(name)(
            stage=name, config=configs[name].to_dict(), workspace=str(ws.root), inputs=inputs,
            task_runner=task_runner, workers=workers, force=name in forced, return_state=True,
        )
        if state.is_failed():
            outcomes.append(StageOutcome(name, "failed", detail=state.message or ""))
            logger.error("%s: failed: %s", name, state.message)
            continue
        manifest = Manifest.model_validate(state.result())
        manifests[name] = manifest
        status = "cached" if state.name == CACHED else "ran"
        if status == "cached":
            ws.set_current(name, manifest.run_id)
        else:
            _publish_counts(name, manifest)
        outcomes.append(StageOutcome(name, status, manifest.run_id, _summary(manifest)))
        logger.info("%s: %s (run %s) %s", name, "skipped, cached" if status == "cached" else "ran", manifest.run_id, _summary(manifest))
    _publish(outcomes)
    failed = [o.stage for o in outcomes if o.status == "failed"]
    if failed:
        raise PipelineError(f"stage(s) failed: {', '.join(failed)}; see the task logs above")
    return outcomes


def _summary(manifest: Manifest) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(manifest.counts.items()))


def _publish(outcomes: list[StageOutcome]) -> None:
    create_table_artifact(
        key="stage-outcomes",
        table=[asdict(o) for o in outcomes],
        description="What each stage of this flow run did (ran, cached, failed, blocked, not built yet).",
    )


def _publish_counts(stage: str, manifest: Manifest) -> None:
    """Per-stage histogram (statuses, rejection reasons, ...) as a Prefect table artifact."""
    if manifest.counts:
        create_table_artifact(
            key=f"{stage}-counts",
            table=[{"count": key, "value": value} for key, value in sorted(manifest.counts.items())],
            description=f"Counts of {stage} run {manifest.run_id}",
        )


def outcomes_to_json(outcomes: list[StageOutcome]) -> list[dict[str, Any]]:
    return [asdict(o) for o in outcomes]


def stage_outputs(workspace: str | Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What the current runs of `names` left for a user (stages that describe their outputs), in DAG order."""
    ws = Workspace(workspace, create=False)
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        spec = stages.get(name)
        if (spec.describe and (manifest := ws.current(name)) is not None
                and (outputs := spec.outputs(ws, manifest)) is not None):
            found[name] = outputs.to_json()
    return found


def publish_outputs(outputs: dict[str, dict[str, Any]]) -> None:
    """What each stage left (the dataset card, reports, training sample grids) as Prefect markdown artifacts,
    made to render in the UI: no front matter, images embedded (`flows.artifacts`)."""
    for name, described in outputs.items():
        if (markdown := artifact_markdown(described)) is not None:
            create_markdown_artifact(key=described.get("artifact_key") or f"{name}-outputs",
                                     markdown=markdown, description=described["title"])
