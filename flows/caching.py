"""Stage functions as Prefect tasks, cached on content rather than on paths or pickles.

Cache key = sha256 of (stage, config hash, content hashes of the input manifests, code version of the
stage's packages). Results (the manifest, as JSON) and cache records live inside the workspace, so a
workspace carries its own cache and two workspaces never share hits. A hit is only honoured while the
outputs it points to are still on disk; otherwise the stage runs again.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.context import TaskRunContext

from data_catalog.atomic import atomic_write_text
from data_catalog.hashing import json_hash
from data_catalog.manifest import Manifest, code_fingerprint
from data_catalog.workspace import Workspace
from flows import stages
from flows.fanout import prefect_mapper

CACHE_DIR = Path("runs") / ".prefect"


def stage_cache_key(stage: str, config: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    spec = stages.get(stage)
    config_cls, _ = spec.load()
    return json_hash(
        {
            "stage": stage,
            "config_hash": config_cls.model_validate(config).hash,
            "inputs": [Manifest.model_validate(m).content_hash for m in inputs],
            "code_version": code_fingerprint(spec.packages),
        }
    )


def _marker(workspace: Path, key: str) -> Path:
    return workspace / CACHE_DIR / "valid" / f"{key}.json"


def outputs_present(ws: Workspace, manifest: Manifest) -> bool:
    """Cheap check that a cached run's output files still exist with their sizes.

    Tables are append-only (rows are never deleted), so only files can go missing under a cache entry.
    """
    for output in manifest.files.values():
        path = ws.resolve(output.path)
        if not path.is_file() or path.stat().st_size != output.bytes:
            return False
    return True


def _cache_key_fn(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    key = stage_cache_key(parameters["stage"], parameters["config"], parameters["inputs"])
    marker = _marker(Path(parameters["workspace"]), key)
    if not marker.is_file():
        return key  # never completed here: Prefect finds no record either, and runs the stage
    ws = Workspace(parameters["workspace"], create=False)
    if outputs_present(ws, Manifest.model_validate_json(marker.read_text(encoding="utf-8"))):
        return key
    return None  # outputs were deleted: run again, without caching this attempt under a stale key


def execute_stage(
    stage: str,
    config: dict[str, Any],
    workspace: str,
    inputs: list[dict[str, Any]],
    task_runner: str = "thread",
    workers: int = 4,
) -> dict[str, Any]:
    """Task body: validate the config, run the stage, remember the key for the validity check.

    Stages that can split their work (a `map_batches` parameter) get one task per batch on `task_runner`.
    """
    spec = stages.get(stage)
    config_cls, run = spec.load()
    ws = Workspace(workspace)
    extra = {}
    if "map_batches" in inspect.signature(run).parameters:
        extra["map_batches"] = prefect_mapper(stage, task_runner, workers)
    manifest = run(config_cls.model_validate(config), ws, [Manifest.model_validate(m) for m in inputs], **extra)
    if spec.cacheable:
        key = stage_cache_key(stage, config, inputs)
        atomic_write_text(_marker(ws.root, key), manifest.to_json())
    return json.loads(manifest.model_dump_json())


def stage_task(stage: str, workspace: str | Path, force: bool = False) -> Task:
    """A Prefect task running `stage` in `workspace`; `force` ignores (and refreshes) its cache."""
    spec = stages.get(stage)
    root = Path(workspace).resolve()
    if not spec.cacheable:
        return task(execute_stage, name=stage, cache_policy=NO_CACHE, persist_result=False)
    # Paths are Prefect's spelling of unsaved local storage (no block document on the server). Keys and
    # results must live in different folders: Prefect names both files after the cache key.
    policy = CacheKeyFnPolicy(cache_key_fn=_cache_key_fn).configure(key_storage=root / CACHE_DIR / "keys")
    return task(
        execute_stage,
        name=stage,
        cache_policy=policy,
        persist_result=True,
        result_storage=root / CACHE_DIR / "results",
        result_serializer="json",
        refresh_cache=force,
    )
