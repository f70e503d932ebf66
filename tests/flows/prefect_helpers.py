"""Serve deployments with `sdgan serve` against the test Prefect server, and read their flow runs back."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import BIN, PROJECT_ROOT, stop_process


def wait_for_deployment(name: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"sdgan serve exited early:\n{log.read_text(errors='replace')[-4000:]}")
            try:
                client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                time.sleep(0.5)
    raise TimeoutError(f"deployment {name} not registered after {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")


@contextmanager
def serving(deployment: str, prefect_server: str, log: Path) -> Iterator[dict]:
    """`sdgan serve --only DEPLOYMENT` in the background; yields the environment that reaches the server."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    with open(log, "wb") as handle:
        process = subprocess.Popen([str(BIN / "sdgan"), "serve", "--only", deployment], cwd=PROJECT_ROOT, env=env,
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_deployment(deployment, process, log)
        yield env
    finally:
        stop_process(process)


def last_flow_run(deployment_name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name)
        (run,) = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            sort=FlowRunSort.START_TIME_DESC, limit=1)
        return run
