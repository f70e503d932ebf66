"""`ws.effective(table)`: the append-only tables without their superseded rows, as the stages read them."""

from __future__ import annotations

import pandas as pd
import pytest

from data_catalog import Workspace, stage_run
from tests.data_catalog.test_dataset import UpstreamConfig, build_catalog


def test_effective_faces_are_the_current_align_runs_latest_decisions(workspace: Workspace) -> None:
    build_catalog(workspace)  # faces of an older align config ("h")
    config = UpstreamConfig()
    faces = workspace.table("faces").drop(columns=["run_id"], errors="ignore").assign(config_hash=config.hash)
    faces = faces[faces["face_id"] != "rejected_0"]
    first = faces["face_id"].iloc[0]
    later = faces[faces["face_id"] == first].assign(decision="rejected", reason="duplicate_near")
    with stage_run(workspace, "align", config) as align:
        align.append("faces", faces.reset_index(drop=True))
        align.append("faces", later.reset_index(drop=True))  # a dedup decision supersedes the detection row

    history = workspace.table("faces")
    current = workspace.effective("faces")
    assert len(history) == 2 * len(faces) + 2  # both configs, the superseded row and the new one
    assert sorted(current["face_id"]) == sorted(faces["face_id"]) and set(current["config_hash"]) == {config.hash}
    assert current.set_index("face_id").loc[first, "decision"] == "rejected"
    older = workspace.effective("faces", config_hash="h")
    assert set(older["config_hash"]) == {"h"} and "rejected_0" in set(older["face_id"])


def test_effective_candidates_queries_and_whole_tables(workspace: Workspace) -> None:
    build_catalog(workspace)
    candidates = workspace.table("candidates")
    failed = candidates[candidates["status"] == "failed"].iloc[[0]]
    retried = failed.drop(columns=["run_id"], errors="ignore").assign(
        status="ok", reason=None, fetched_at=pd.Timestamp("2026-02-01", tz="UTC"))
    with stage_run(workspace, "crawl", UpstreamConfig()) as crawl:
        crawl.append("candidates", retried.reset_index(drop=True))
        crawl.append("queries", workspace.table("queries").drop(columns=["run_id"], errors="ignore").iloc[[0]])
    current = workspace.effective("candidates")
    assert len(workspace.table("candidates")) == len(candidates) + 1 and len(current) == len(candidates)
    url = failed["url"].iloc[0]
    assert current.set_index("url").loc[url, "status"] == "ok"  # the retry supersedes the failure
    assert workspace.effective("queries")["query_id"].is_unique
    assert len(workspace.effective("runs")) == len(workspace.table("runs"))  # runs are never superseded


def test_effective_faces_need_an_align_run_or_a_config_hash(tmp_path) -> None:
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(ValueError, match="no completed align run"):
        ws.effective("faces")
    with pytest.raises(ValueError, match="config_hash only applies to faces"):
        ws.effective("images", config_hash="h")
