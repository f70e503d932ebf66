from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_catalog import Workspace
from flows.cli import main as cli


@pytest.mark.prefect_server
def test_run_reproduce_reports_every_stage(prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from data_catalog.stages import STAGES

    ws_path = tmp_path / "ws"
    short_training = ["--set", "train-stylegan2.schedule.total_kimg=0.016", "--set", "train-stylegan2.schedule.grid_seeds=4"]
    assert cli(["run", "reproduce", "--workspace", str(ws_path), *short_training]) == 0
    out = capsys.readouterr().out
    for name, spec in STAGES.items():
        assert name in out
    runs = Workspace(ws_path).table("runs")
    assert sorted(runs["stage"]) == sorted(name for name, spec in STAGES.items() if spec.built)
    assert set(runs["status"]) == {"completed"}
    assert out.count("not built yet") == sum(not s.built for s in STAGES.values())


def test_run_with_a_wrong_config_value_exits_2_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli(["run", "catalog-verify", "--workspace", str(tmp_path / "ws"), "--set", "rehash=sometimes"])
    assert code == 2
    err = capsys.readouterr().err
    assert "rehash" in err and "'sometimes'" in err
    assert not (tmp_path / "ws" / "runs" / "catalog-verify").exists()


def test_unknown_flow_and_unknown_workspace(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["run", "nope", "--workspace", str(tmp_path / "ws")]) == 2
    assert "unknown flow 'nope'" in capsys.readouterr().err
    assert cli(["catalog", "ls", "--workspace", str(tmp_path / "absent")]) == 2
    assert "not an sdgan workspace" in capsys.readouterr().err


def test_catalog_ls_and_show(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from data_catalog.verify import VerifyConfig, run

    ws = Workspace(tmp_path / "ws")
    manifest = run(VerifyConfig(), ws)
    assert cli(["catalog", "ls", "--workspace", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert "runs" in out and "candidates" in out and "catalog-verify" in out
    assert cli(["catalog", "show", manifest.run_id, "--workspace", str(ws.root)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_id"] == manifest.run_id and shown["status"] == "completed"
    assert cli(["catalog", "show", "missing-run", "--workspace", str(ws.root)]) == 2


def test_config_command_prints_resolved_config_and_hash(capsys: pytest.CaptureFixture) -> None:
    from data_catalog.verify import VerifyConfig

    assert cli(["config", "catalog-verify", "--profile", "full", "--set", "rehash=false"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["rehash"] is False
    assert shown["config_hash"] == VerifyConfig(rehash=False).hash


def test_catalog_gc_leaves_a_workspace_in_use_alone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import threading

    from data_catalog.atomic import TEMP_PREFIX
    from data_catalog.lock import workspace_lock

    ws = Workspace(tmp_path / "ws")
    temp = ws.root / "raw" / f"{TEMP_PREFIX}being-written"
    temp.write_bytes(b"a running stage's file")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with workspace_lock(ws.root):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        assert cli(["catalog", "gc", "--workspace", str(ws.root)]) == 2
        assert "is in use by PID" in capsys.readouterr().err and temp.is_file()
    finally:
        release.set()
        holder.join()
    assert cli(["catalog", "gc", "--workspace", str(ws.root)]) == 0 and not temp.exists()
