from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from data_catalog import Workspace
from data_catalog.config import StageConfig
from data_catalog.manifest import Manifest, combine_digests, manifest_from_row, manifest_to_row, table_digest
from data_catalog.runs import stage_run


class ToyConfig(StageConfig):
    STAGE = "toy"
    n: int = 2


def images(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"sha256": [f"{i:064x}" for i in range(start, start + n)], "format": "png",
                         "width": 1, "height": 1, "bytes": 1})


def test_table_digest_ignores_order_and_batching() -> None:
    frame = images(6)
    whole = table_digest(frame, ["sha256", "width"])
    assert whole == table_digest(frame.iloc[::-1], ["sha256", "width"])
    halves = combine_digests(table_digest(frame.iloc[:2], ["sha256", "width"]), table_digest(frame.iloc[2:], ["sha256", "width"]))
    assert halves == whole
    assert table_digest(images(5), ["sha256", "width"]) != whole
    changed = frame.assign(width=[1, 1, 1, 1, 1, 2])
    assert table_digest(changed, ["sha256", "width"]) != whole


def test_content_hash_depends_on_outputs_only() -> None:
    def make(run_id: str, sha: str) -> Manifest:
        return Manifest(stage="s", run_id=run_id, config_hash="c", code_version="v", code_fingerprint="f",
                        started_at=dt.datetime.now(dt.timezone.utc),
                        files={"out": {"path": f"runs/{run_id}/x", "sha256": sha, "bytes": 1}})
    assert make("a", "1" * 64).content_hash == make("b", "1" * 64).content_hash
    assert make("a", "1" * 64).content_hash != make("a", "2" * 64).content_hash


def test_stage_run_records_completed_run(workspace: Workspace) -> None:
    config = ToyConfig(n=3)
    with stage_run(workspace, "toy", config) as run:
        sha = workspace.blobs.put(b"pixels", "png")
        run.append("images", images(1).assign(sha256=[sha]))
        out = run.dir / "result.txt"
        out.write_text("done")
        run.add_file("result", out)
        run.count("images", 1)
    manifest = workspace.manifest(run.run_id)
    assert manifest.status == "completed" and manifest.counts == {"images": 1}
    assert manifest.files["result"].path == f"runs/toy/{run.run_id}/result.txt"
    assert manifest.tables["images"].rows == 1
    assert json.loads((run.dir / "config.json").read_text())["config"] == {"n": 3}
    assert Manifest.from_json((run.dir / "manifest.json").read_text()) == manifest
    assert workspace.latest("toy") == manifest == workspace.current("toy")
    runs = workspace.table("runs")
    assert runs.iloc[0]["config_hash"] == config.hash and runs.iloc[0]["content_hash"] == manifest.content_hash


def test_stage_run_records_failure_and_reraises(workspace: Workspace) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with stage_run(workspace, "toy", ToyConfig()):
            raise RuntimeError("boom")
    runs = workspace.table("runs")
    assert runs["status"].tolist() == ["failed"] and "RuntimeError: boom" in runs["error"].iloc[0]
    assert workspace.latest("toy") is None and workspace.current("toy") is None
    assert len(workspace.manifests("toy", status="failed")) == 1


def test_runs_row_round_trip() -> None:
    manifest = Manifest(stage="s", run_id="r", config_hash="c", code_version="v", code_fingerprint="f",
                        status="completed", counts={"a": 1}, inputs=[{"stage": "p", "run_id": "q", "content_hash": "h"}],
                        tables={"images": {"table": "images", "rows": 2, "digest": "d"}},
                        started_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                        finished_at=dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.timezone.utc))
    row = manifest_to_row(manifest, {"n": 1}, "host")
    assert row["duration_s"] == 60.0
    assert manifest_from_row(row) == manifest


def test_completed_run_names_what_there_is(workspace: Workspace) -> None:
    from data_catalog.workspace import RunNotFound

    with stage_run(workspace, "toy", ToyConfig()) as run:
        pass
    with pytest.raises(RuntimeError), stage_run(workspace, "toy", ToyConfig(n=3)) as failed:
        raise RuntimeError("boom")
    assert workspace.completed_run(run.run_id, "toy").run_id == run.run_id
    with pytest.raises(RunNotFound, match=f"no toy run 'nope' .*completed runs: {run.run_id}"):
        workspace.completed_run("nope", "toy")
    with pytest.raises(RunNotFound, match="is a failed toy run, not a completed toy run"):
        workspace.completed_run(failed.run_id, "toy")
    with pytest.raises(RunNotFound, match="is a completed toy run, not a completed shard run"):
        workspace.completed_run(run.run_id, "shard")
