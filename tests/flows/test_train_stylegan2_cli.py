"""`sdgan generate` and `sdgan train-stylegan2` through the CLI entry point (no training is run here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from data_catalog import Workspace
from flows.cli import main as cli
from tests.conftest import PROJECT_ROOT
from tests.inference.test_generate import write_tiny_checkpoint


def test_generate_writes_the_grid_and_per_seed_pngs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / "out" / "grid.png"
    code = cli(["generate", "--checkpoint", str(checkpoint), "--seeds", "0-5", "--truncation", "0.5",
                "--out", str(out), "--outdir", str(tmp_path / "each"), "--noise-mode", "const", "--device", "cpu"])
    assert code == 0
    with Image.open(out) as image:
        assert image.size == (48, 32)
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == [f"seed{s:04d}.png" for s in range(6)]
    printed = capsys.readouterr().out
    assert str(out) in printed and str(tmp_path / "each") in printed


@pytest.mark.parametrize(("argv", "message"), [
    (["--seeds", "3-1"], "bad seed range"),
    (["--truncation", "1.5"], "truncation must be in (0, 1]"),
    (["--truncation", "0"], "truncation must be in (0, 1]"),
])
def test_generate_bad_options_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, argv,
                                                   message) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt.pt")
    assert cli(["generate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "g.png"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdgan: error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g.png").exists()


def test_generate_missing_or_wrong_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["generate", "--checkpoint", str(tmp_path / "absent.pt"), "--out", str(tmp_path / "g.png")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert cli(["generate", "--checkpoint", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "g.png")]) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_train_stylegan2_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["train-stylegan2", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--workspace", "--dataset", "--profile", "--resume", "--set", "torchrun"):
        assert option in out


def test_python_m_flows_cli_runs_the_cli_as_torchrun_does() -> None:
    result = subprocess.run([sys.executable, "-m", "flows.cli", "train-stylegan2", "--help"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--resume" in result.stdout, result.stderr


def test_train_stylegan2_unknown_dataset_version_is_a_clear_error(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    ws = Workspace(tmp_path / "ws")
    code = cli(["train-stylegan2", "--workspace", str(ws.root), "--dataset", "0123456789abcdef",
                "--set", "runtime.device=cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "dataset version '0123456789abcdef' not found" in err and "versions: none" in err
    assert not (ws.root / "models" / "stylegan2").exists()
    assert ws.table("runs").empty


def test_train_stylegan2_without_any_dataset_or_workspace(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ws = Workspace(tmp_path / "ws")
    assert cli(["train-stylegan2", "--workspace", str(ws.root), "--set", "runtime.device=cpu"]) == 2
    assert "no completed shard run" in capsys.readouterr().err
    assert cli(["train-stylegan2", "--workspace", str(tmp_path / "absent")]) == 2
    assert "not an sdgan workspace" in capsys.readouterr().err


def test_train_stylegan2_bad_config_value_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ws = Workspace(tmp_path / "ws")
    assert cli(["train-stylegan2", "--workspace", str(ws.root), "--set", "train-stylegan2.schedule.total_kimg=-1"]) == 2
    assert "total_kimg" in capsys.readouterr().err


def test_dataset_and_resume_shortcuts_stay_strings() -> None:
    from data_catalog.config import load_config
    from data_catalog.stages import get
    from training.stylegan2.config import TrainStyleGAN2Config

    overrides, forced = get("train-stylegan2").shortcut_overrides({"dataset": "1234e5", "resume": "000123"})
    assert not forced
    config = load_config(TrainStyleGAN2Config, "demo", overrides)
    assert config.dataset == "1234e5" and config.resume == "000123"
