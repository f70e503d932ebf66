"""`sdgan synthesize` with the official files as paths (the README's command), in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from data_catalog.manifest import PROJECT_ROOT
from inference.synthesis import layout
from tests.inference.synthesis.helpers import official_files


def _sdgan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=PROJECT_ROOT, capture_output=True, check=False,
                          text=True, timeout=300)


def test_synthesize_with_official_files(tmp_path: Path) -> None:
    files = official_files(tmp_path / "official", n=2)
    workspace = tmp_path / "ws"
    common = ["--workspace", str(workspace), "--profile", "demo", "--fusion", str(files["fusion"]),
              "--generator", str(files["generator"]), "--unsup3d", str(files["unsup3d"]),
              "--template", str(files["template"]), "--test-w", str(files["test_w"]),
              "--test-nb", str(files["test_nb"]), "--device", "cpu", "--set", "detector=none",
              "--set", "mean_samples=64"]
    refused = _sdgan("synthesize", *common)
    assert refused.returncode == 2 and "--template needs exactly one --attribute" in refused.stderr
    done = _sdgan("synthesize", *common, "--attribute", "face_mask", "--limit", "1", "--minmax")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "predict_images" in done.stdout and "grid (origin | basis | ours | GT)" in done.stdout
    folder = next((workspace / layout.SYNTHESES_DIR).iterdir())
    info = layout.SynthesisInfo.read(folder)
    assert info.minmax and info.attributes == ["face_mask"] and info.counts == {"face_mask": 1}
    assert info.fusion["face_mask"] == str(files["fusion"].resolve())
    assert pd.read_parquet(folder / layout.INDEX_FILE)["name"].tolist() == ["0000.png"]
