"""Live progress of a training stage run through Prefect: tick lines in the flow run's log, a progress artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_catalog.dataset import ShardConfig
from data_catalog.runs import stage_run
from tests.training.stylegan2.stylegan2_helpers import VERSION, toy_workspace

pytestmark = pytest.mark.prefect_server

TINY = ["dataset=" + VERSION, "model.size=16", "model.style_dim=16", "model.n_mlp=2", "model.channel_max=16",
        "data.num_workers=0", "data.shuffle_buffer=16", "optim.batch=8", "schedule.total_kimg=0.048",
        "schedule.tick_kimg=0.016", "schedule.checkpoint_kimg=0.048", "schedule.grid_seeds=4", "runtime.threads=1"]


def test_training_ticks_reach_the_flow_run_log_and_a_progress_artifact(prefect_server: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogWorker

    from flows.dag import train_stylegan2_flow

    ws = toy_workspace(tmp_path / "ws", n=32, size=16, shards=2)
    with stage_run(ws, "shard", ShardConfig()) as shard:  # the upstream run the flow reads the version from
        shard.add_file("version", ws.dataset_dir(VERSION) / "version.json")
    state = train_stylegan2_flow(workspace=str(ws.root), overrides=TINY, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert [(o["stage"], o["status"]) for o in result["stages"]] == [("train-stylegan2", "ran")]
    assert result["outputs"]["train-stylegan2"]["items"]["kimg"] == "0.048"
    assert "kimg=0.048" in result["stages"][0]["detail"]
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["train-stylegan2-progress"])))
        outputs = client.read_artifacts(  # the run's sample grid, embedded so the UI shows it
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["train-stylegan2-outputs"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    ticks = [log.message for log in logs if log.message.startswith("tick ")]
    assert len(ticks) >= 3 and all("kimg" in t and "sec/kimg" in t and "eta" in t for t in ticks), ticks
    assert any(log.message.startswith("done: 0.048 kimg") for log in logs)
    assert artifacts and max(float(a.data) for a in artifacts) == 100.0
    (grid,) = outputs
    assert "## grid" in grid.data and "](data:image/jpeg;base64," in grid.data
