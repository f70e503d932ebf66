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
    short_training = ["--set", "train-stylegan2.schedule.total_kimg=0.016", "--set", "train-stylegan2.schedule.grid_seeds=4",
                      "--set", "synthesize.limit=8", "--set", "evaluate.identity.dlib=false",
                      "--set", "evaluate.bootstrap.resamples=200"]
    assert cli(["run", "reproduce", "--workspace", str(ws_path), *short_training]) == 0
    out = capsys.readouterr().out
    for name, spec in STAGES.items():
        assert name in out
    runs = Workspace(ws_path).table("runs")
    assert sorted(runs["stage"]) == sorted(name for name, spec in STAGES.items() if spec.built)
    assert set(runs["status"]) == {"completed"}
    assert out.count("not built yet") == sum(not s.built for s in STAGES.values())
    # a second run is all cache hits (catalog-verify, which reports on the workspace as it is, always runs)
    from tests.flows.test_platform import statuses

    assert cli(["run", "reproduce", "--workspace", str(ws_path), *short_training]) == 0
    again = statuses(capsys.readouterr().out, list(STAGES))
    assert again.pop("catalog-verify") == "ran"
    assert set(again.values()) == {"cached"}, again


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


def error_lines(err: str) -> list[str]:
    """stderr of a failed command: exactly one line, `sdgan: error: ...`."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdgan: error: "), err
    return lines


def test_a_config_typo_fails_before_prefect_starts(tmp_path: Path) -> None:
    """No temporary server, no traceback: one error line naming the key, and no workspace left behind."""
    import os
    import subprocess

    from tests.conftest import BIN, PROJECT_ROOT

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([str(BIN / "sdgan"), "run", "reproduce", "--workspace", str(tmp_path / "ws"),
                           "--set", "crawl.typo=1"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = error_lines(done.stderr)
    assert "invalid crawl config: --set typo: unknown key 'typo'" in line
    assert not (tmp_path / "ws").exists()


def test_credentials_runners_servers_and_busy_workspaces_are_checked_first(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from data_catalog.lock import workspace_lock
    from tests.conftest import free_port

    ws = tmp_path / "ws"
    for name in ("GOOGLE_API_KEY", "GOOGLE_CSE_ID", "NAVER_CLIENT_ID", "NAVER_CLIENT_SECRET", "SDGAN_LOCK_WAIT"):
        monkeypatch.delenv(name, raising=False)
    assert cli(["crawl", "--workspace", str(ws), "--profile", "full"]) == 2
    assert "GOOGLE_API_KEY and GOOGLE_CSE_ID" in error_lines(capsys.readouterr().err)[0]
    assert cli(["crawl", "--workspace", str(ws), "--urls", str(tmp_path / "absent.txt")]) == 2
    assert "URL list not found" in error_lines(capsys.readouterr().err)[0]
    assert cli(["run", "crawl", "--workspace", str(ws), "--task-runner", "ray"]) == 2
    assert "pip install -e '.[ray]'" in error_lines(capsys.readouterr().err)[0]
    assert not ws.exists()  # nothing was created for a run that could not start

    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")  # nothing listens there
    assert cli(["run", "catalog-verify", "--workspace", str(ws)]) == 2
    assert "no Prefect server answers at PREFECT_API_URL" in error_lines(capsys.readouterr().err)[0]
    assert cli(["serve"]) == 2 and "no Prefect server answers" in capsys.readouterr().err
    monkeypatch.delenv("PREFECT_API_URL")
    assert cli(["serve"]) == 2
    assert "sdgan serve needs a running Prefect server" in error_lines(capsys.readouterr().err)[0]

    Workspace(ws)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with workspace_lock(ws):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        assert cli(["run", "catalog-verify", "--workspace", str(ws)]) == 2
        assert "is in use by PID" in error_lines(capsys.readouterr().err)[0]
    finally:
        release.set()
        holder.join()


def test_debug_shows_the_traceback_and_unexpected_errors_name_their_type(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli import error_line

    args = ["run", "catalog-verify", "--workspace", str(tmp_path / "ws"), "--set", "rehash=sometimes"]
    assert cli(["--debug", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("sdgan: error: ")
    monkeypatch.setenv("SDGAN_DEBUG", "1")
    assert cli(args) == 2 and "Traceback" in capsys.readouterr().err
    assert error_line(RuntimeError("boom\nsecond line")) == (
        "sdgan: error: RuntimeError: boom; second line (--debug or SDGAN_DEBUG=1 shows the traceback)")
    assert error_line(KeyError("no run 'x'")) == "sdgan: error: no run 'x'"
    assert error_line(FileNotFoundError(2, "No such file or directory", "/x")) == (
        "sdgan: error: No such file or directory: /x")


def test_catalog_ls_keeps_run_ids_whole_and_show_takes_a_unique_prefix(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from data_catalog.verify import VerifyConfig, run

    ws = Workspace(tmp_path / "ws")
    first, second = run(VerifyConfig(), ws).run_id, run(VerifyConfig(), ws).run_id
    assert cli(["catalog", "ls", "--workspace", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert first in out and second in out  # whole, on an 80-column console
    common = "catalog-verify-"
    assert cli(["catalog", "show", second[:-1], "--workspace", str(ws.root)]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == second
    assert cli(["catalog", "show", common, "--workspace", str(ws.root)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"'{common}' is ambiguous: 2 runs start with it" in line and first in line and second in line


def test_emulator_checks_its_port_and_faults_before_building_a_corpus(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.chdir(tmp_path)  # where the demo corpus would be built
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert cli(["emulator", "--port", str(taken.getsockname()[1])]) == 2
    assert "is not free" in error_lines(capsys.readouterr().err)[0]
    assert cli(["emulator", "--port", "0", "--faults", "slow,nope"]) == 2
    assert "unknown fault modes ['nope']" in error_lines(capsys.readouterr().err)[0]
    assert not (tmp_path / "workspace").exists()


def test_folder_export_writes_every_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from data_catalog.dataset import ShardConfig
    from data_catalog.dataset import run as shard
    from tests.data_catalog.test_dataset import build_catalog

    ws = Workspace(tmp_path / "ws")
    shard(ShardConfig(val_fraction=0.3), ws, list(build_catalog(ws)))
    assert cli(["export", "--workspace", str(ws.root), "--format", "folder", "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["labels.csv", "train", "val"]
    samples = ws.table("samples")
    for split in ("train", "val"):
        assert sorted(p.stem for p in (tmp_path / "out" / split).rglob("*.jpg")) == sorted(
            samples.loc[samples["split"] == split, "key"])
