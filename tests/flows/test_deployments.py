"""`sdgan serve` + `prefect deployment run ... --watch` through a real Prefect server, as a user would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from data_catalog import Workspace
from tests.conftest import BIN, PROJECT_ROOT
from tests.flows.prefect_helpers import last_flow_run, serving

pytestmark = pytest.mark.prefect_server

DEPLOYMENT = "catalog-verify/demo"


@pytest.fixture(scope="module")
def served(prefect_server: str, tmp_path_factory: pytest.TempPathFactory):
    with serving(DEPLOYMENT, prefect_server, tmp_path_factory.mktemp("serve") / "serve.log") as env:
        yield env


def run_deployment_cli(env: dict, workspace: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", DEPLOYMENT, "--param", f"workspace={workspace}", "--watch",
         "--watch-interval", "1"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_deployment_run_completes_and_writes_catalog_rows(served: dict, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    sha = ws.blobs.put(b"a real image would be here", "jpg")
    ws.append("images", pd.DataFrame([{"sha256": sha, "format": "jpeg", "width": 1, "height": 1, "bytes": 26}]), "seed")

    result = run_deployment_cli(served, ws.root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Completed" in result.stdout

    flow_run = last_flow_run(DEPLOYMENT)
    assert flow_run.state.is_completed()
    outcomes = flow_run.state.result()["stages"]
    assert [(o["stage"], o["status"]) for o in outcomes] == [("catalog-verify", "ran")]

    runs = ws.table("runs")
    assert runs["stage"].tolist() == ["catalog-verify"] and runs["status"].tolist() == ["completed"]
    assert runs["run_id"].iloc[0] == outcomes[0]["run_id"]
    manifest = ws.manifest(outcomes[0]["run_id"])
    report = json.loads(ws.resolve(manifest.files["report"].path).read_text())
    assert report["ok"] and report["checked"]["raw_blobs_referenced"] == 1


def test_deployment_run_on_a_broken_workspace_fails_and_says_why(served: dict, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    sha = ws.blobs.put(b"bytes", "jpg")
    ws.append("images", pd.DataFrame([{"sha256": sha, "format": "jpeg", "width": 1, "height": 1, "bytes": 5}]), "seed")
    ws.blobs.path(sha).unlink()

    result = run_deployment_cli(served, ws.root)
    assert result.returncode != 0
    assert last_flow_run(DEPLOYMENT).state.is_failed()
    runs = ws.table("runs")
    assert runs["status"].tolist() == ["failed"] and "missing_blob=1" in runs["error"].iloc[0]


def test_prefect_yaml_and_flow_registry_agree() -> None:
    from data_catalog.stages import flow_names
    from flows.registry import load_flow
    from flows.serve import build_deployments, read_deployments

    entries = read_deployments()
    flows_with_deployments = {load_flow(e["entrypoint"]).name for e in entries}
    assert flows_with_deployments == set(flow_names())
    names = [f"{d.flow_name}/{d.name}" for d in build_deployments()]
    assert len(names) == len(set(names)) and DEPLOYMENT in names
