"""Stage functions as Prefect tasks, cached on content rather than on paths or pickles.

Cache key = sha256 of (stage, config hash, content hashes of the input manifests, fingerprint of the code paths
the stage declares). The cache is ours, not Prefect's result store: a completed stage writes its manifest to
`runs/.cache/<key>.json` inside the workspace, and a later task with the same key returns that manifest in a
Completed state named "Cached" (what Prefect's own cache hits are called, so the UI reads the same). Nothing
it records holds an absolute path (Prefect's result records do), so a moved or copied workspace keeps its
hits. A hit is only honoured while the outputs it points to are still on disk; otherwise the stage runs again.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from data_catalog.atomic import atomic_write_text
from data_catalog.hashing import json_hash, sha256_file
from data_catalog.manifest import Manifest, code_fingerprint
from data_catalog.stages import get as get_stage
from data_catalog.workspace import Workspace
from flows.fanout import prefect_mapper
from flows.prefect_env import forward_stage_logs
from flows.progress import PrefectProgress

CACHE_DIR = Path("runs") / ".cache"
CACHED = "Cached"


def stage_cache_key(stage: str, config: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    spec = get_stage(stage)
    config_cls, _ = spec.load()
    key = {
        "stage": stage,
        "config_hash": config_cls.model_validate(config).hash,
        "inputs": [Manifest.model_validate(m).content_hash for m in inputs],
        "code_version": code_fingerprint(spec.code),
    }
    # A file standing in for an upstream run (an official checkpoint path) counts by its content, like a run.
    external = {k: sha256_file(Path(config[k])) for _, k in spec.replaced_by
                if config.get(k) is not None and Path(config[k]).is_file()}
    return json_hash(key | {"external": external} if external else key)


def cache_record(workspace: Path, key: str) -> Path:
    return workspace / CACHE_DIR / f"{key}.json"


def outputs_present(ws: Workspace, manifest: Manifest) -> bool:
    """Cheap check that a cached run's output files still exist with their sizes.

    Tables are append-only (rows are never deleted), so only files can go missing under a cache entry.
    """
    for output in manifest.files.values():
        path = ws.resolve(output.path)
        if not path.is_file() or path.stat().st_size != output.bytes:
            return False
    return True


def cached_manifest(ws: Workspace, key: str) -> Manifest | None:
    """The manifest a completed run left under `key`, if its outputs are all still there."""
    record = cache_record(ws.root, key)
    if not record.is_file():
        return None
    try:
        manifest = Manifest.model_validate_json(record.read_text(encoding="utf-8"))
    except ValueError:
        return None  # a record cut short by a crash is a miss, never an error
    return manifest if outputs_present(ws, manifest) else None


def execute_stage(
    stage: str,
    config: dict[str, Any],
    workspace: str,
    inputs: list[dict[str, Any]],
    task_runner: str = "thread",
    workers: int = 4,
    force: bool = False,
) -> dict[str, Any] | State:
    """Task body: a valid cache record wins (unless forced); else run the stage and record its manifest.

    Stages that can split their work (a `map_batches` parameter) get one task per batch on `task_runner`;
    stages that report progress (a `progress` parameter) keep a Prefect progress artifact up to date.
    """
    forward_stage_logs()  # the stage's `sdgan.*` tick lines go to this run's log, however Prefect was set up
    spec = get_stage(stage)
    config_cls, run = spec.load()
    ws = Workspace(workspace)
    key = stage_cache_key(stage, config, inputs) if spec.cacheable else None
    if key is not None and not force and (hit := cached_manifest(ws, key)) is not None:
        return Completed(name=CACHED, data=json.loads(hit.model_dump_json()),
                         message=f"cache hit: run {hit.run_id} ({key[:12]})")
    extra: dict[str, Any] = {}
    parameters = inspect.signature(run).parameters
    if "map_batches" in parameters:
        extra["map_batches"] = prefect_mapper(stage, task_runner, workers)
    if "progress" in parameters:
        extra["progress"] = PrefectProgress(stage)
    manifest = run(config_cls.model_validate(config), ws, [Manifest.model_validate(m) for m in inputs], **extra)
    if key is not None:
        atomic_write_text(cache_record(ws.root, key), manifest.to_json())
    return json.loads(manifest.model_dump_json())


def stage_task(stage: str) -> Task:
    """A Prefect task running `stage`; its results stay in memory (the manifest is also in the workspace)."""
    return task(execute_stage, name=stage, cache_policy=NO_CACHE, persist_result=False)
