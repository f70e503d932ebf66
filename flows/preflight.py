"""Everything about a flow run that can be checked before Prefect starts, without importing Prefect.

`sdgan run` starts a temporary Prefect server (about 12 s on 2 cores) before the flow's first line runs, so a
typo found inside the flow costs that much and comes back wrapped in Prefect's log of the failure. The CLI calls
`check_flow` first: configs, shortcuts, `--force`, the task runner, the workspace (and whether another run holds
it), each stage's own `preflight(config)` (crawl: API credentials, the URL list) and, when `PREFECT_API_URL` is
set, whether that server answers. The flow repeats the config checks itself (deployments do not go through here).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from data_catalog import stages
from data_catalog.config import ConfigError, StageConfig, load_config
from data_catalog.lock import parse_wait, wait_from_env, workspace_lock
from data_catalog.workspace import Workspace

FORCE_ALL = "all"
TASK_RUNNERS = ("thread", "process", "dask", "ray")
_RUNNER_PACKAGES = {"dask": ("prefect_dask", "dask"), "ray": ("prefect_ray", "ray")}


class PipelineError(RuntimeError):
    pass


class PreflightError(ValueError):
    """A run that would fail later, found before anything started."""


def split_overrides(names: Sequence[str], overrides: Iterable[str]) -> dict[str, list[str]]:
    """`--set crawl.max_num=5` goes to crawl; an unprefixed key is allowed when the flow has one stage."""
    per_stage: dict[str, list[str]] = {name: [] for name in names}
    for text in overrides:
        head, _, rest = text.partition(".")
        if head in per_stage and rest:
            per_stage[head].append(rest)
        elif len(names) == 1:
            per_stage[names[0]].append(text)
        else:
            raise ConfigError(f"--set {text!r}: prefix the key with one of the stages {', '.join(names)}")
    return per_stage


def resolve_configs(
    names: Sequence[str], profile: str, overrides: Iterable[str], config_dir: str | Path | None = None
) -> dict[str, StageConfig]:
    """Load every built stage's config before anything runs, so a wrong value fails fast."""
    per_stage = split_overrides(names, overrides)
    configs = {}
    for name in names:
        spec = stages.get(name)
        if spec.built:
            config_cls, _ = spec.load()
            configs[name] = load_config(config_cls, profile, per_stage[name], config_dir)
    return configs


def check_force(names: Sequence[str], force: Iterable[str]) -> set[str]:
    force = set(force)
    unknown = force - set(names) - {FORCE_ALL}
    if unknown:
        raise PipelineError(f"--force {sorted(unknown)}: not a stage of this flow ({', '.join(names)})")
    return set(names) if FORCE_ALL in force else force


def shortcut_overrides(name: str, values: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(config overrides, stages to force) that a flow's shortcut values (`sources`, `resume`, ...) stand for.

    In a pipeline every override is prefixed with its stage; pipelines declare no shortcuts of their own.
    """
    names = stages.flow_stages(name)
    if name in stages.PIPELINES:
        return [], []
    overrides: list[str] = []
    forced: list[str] = []
    for stage in names:
        spec = stages.get(stage)
        given = {o.name: values[o.name] for o in spec.options if o.name in values}
        texts, force = spec.shortcut_overrides(given)
        overrides += [f"{stage}.{text}" if len(names) > 1 else text for text in texts]
        forced += [stage] if force else []
    return overrides, forced


def check_task_runner(task_runner: str, workers: int) -> None:
    if task_runner not in TASK_RUNNERS:
        raise PipelineError(f"unknown task runner {task_runner!r}; choose one of {', '.join(TASK_RUNNERS)}")
    if workers < 1:
        raise PreflightError(f"--workers {workers}: needs at least 1")
    missing = [p for p in _RUNNER_PACKAGES.get(task_runner, ()) if importlib.util.find_spec(p) is None]
    if missing:
        raise PreflightError(f"task runner {task_runner!r} needs {', '.join(missing)}: pip install -e '.[{task_runner}]'")


def check_stage(name: str, config: StageConfig) -> None:
    """The stage module's own `preflight(config)`, when it has one (credentials, input files)."""
    module = stages.get(name).module
    check = getattr(importlib.import_module(module), "preflight", None) if module else None
    if check is None:
        return
    try:
        check(config)
    except Exception as exc:  # whatever a stage raises, the user sees one message naming the stage
        raise PreflightError(f"{name}: {exc}") from exc


def check_workspace(path: str | Path, lock_wait: str | float | None) -> Workspace:
    """Open (or create) the workspace, and fail now when it is read-only or another run holds it and we would
    not wait."""
    wait = wait_from_env() if lock_wait is None else parse_wait(str(lock_wait), "--wait")
    ws = Workspace(path)
    ws.require_writable()
    if wait == 0:
        with workspace_lock(ws.root, wait=0):  # raises WorkspaceBusy naming the other run
            pass
    return ws


def check_prefect_api(environ: Mapping[str, str] | None = None, timeout: float = 5.0) -> str | None:
    """The server `PREFECT_API_URL` names must answer; None when unset (a temporary server is started)."""
    url = (os.environ if environ is None else environ).get("PREFECT_API_URL", "").strip()
    if not url:
        return None
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status == 200:
                return url
            problem = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        problem = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        problem = str(getattr(exc, "reason", exc))
    raise PreflightError(f"no Prefect server answers at PREFECT_API_URL={url} ({problem}); start one with "
                         "`prefect server start`, or unset PREFECT_API_URL to run on a temporary one")


def check_flow(
    name: str,
    *,
    workspace: str | Path,
    profile: str = "demo",
    overrides: Sequence[str] | None = None,
    force: Sequence[str] | None = None,
    task_runner: str = "thread",
    workers: int = 4,
    lock_wait: str | float | None = None,
    config_dir: str | Path | None = None,
    **shortcuts: Any,
) -> dict[str, StageConfig]:
    """Check a flow call as `sdgan run` / `sdgan <stage>` would make it; returns the resolved configs.

    Raises ConfigError, KeyError (unknown flow), PipelineError, PreflightError, WorkspaceError or
    WorkspaceBusy with a message meant for the user.
    """
    names = stages.flow_stages(name)
    if name in stages.PIPELINES and shortcuts:
        raise PreflightError(f"flow {name} takes no options {sorted(shortcuts)}")
    extra, forced = shortcut_overrides(name, shortcuts)
    configs = resolve_configs(names, profile, list(overrides or []) + extra, config_dir)
    check_force(names, list(force or []) + forced)
    check_task_runner(task_runner, workers)
    for stage, config in configs.items():
        check_stage(stage, config)
    check_prefect_api()
    check_workspace(workspace, lock_wait)  # last: it creates the workspace when there is none
    return configs


__all__ = ["FORCE_ALL", "TASK_RUNNERS", "PipelineError", "PreflightError", "check_flow", "check_force",
           "check_prefect_api", "check_stage", "check_task_runner", "check_workspace", "resolve_configs",
           "shortcut_overrides", "split_overrides"]
