"""Fan a stage's independent work items out as Prefect tasks on a chosen task runner.

A stage that accepts `map_batches` (e.g. crawl: one item per query) gets a mapper from here; each item
becomes a task run nested under the stage's task, so the UI shows it and Dask or Ray spread it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.preflight import TASK_RUNNERS


def make_task_runner(kind: str, workers: int) -> TaskRunner:
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "process":
        from flows.embedded_server import guard_worker

        # each worker dies with this process, and so does the embedded server a worker starts for itself
        return ProcessPoolTaskRunner(max_workers=workers, initializer=guard_worker)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise RuntimeError("task runner 'dask' needs the dask extra: pip install -e '.[dask]'") from exc
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "processes": True,
                                              "preload": ["flows.embedded_server"]})
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise RuntimeError("task runner 'ray' needs the ray extra: pip install -e '.[ray]'") from exc
        return RayTaskRunner()
    raise ValueError(f"unknown task runner {kind!r}; choose one of {', '.join(TASK_RUNNERS)}")


def prefect_mapper(stage: str, kind: str = "thread", workers: int = 4) -> Callable[[Callable[[Any], Any], list[Any]], list[Any]]:
    """A `map_batches` that runs each item as a task run of `<stage>-batch` on the chosen runner."""

    def map_batches(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        if not items:
            return []
        child = task(fn, name=f"{stage}-batch", cache_policy=NO_CACHE, persist_result=False)
        with make_task_runner(kind, workers) as runner:
            futures = [runner.submit(child, parameters={"batch": item}) for item in items]
            return [future.result() for future in futures]

    return map_batches
