"""The evaluate stage on a synthesis with planted differences: values, report files, bad inputs, Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from data_catalog.workspace import Workspace
from inference.evaluation.config import EvaluateConfig
from inference.evaluation.sources import EvaluationInputError
from inference.evaluation.stage import REPORTING_DIR, run
from inference.evaluation.summary import describe
from inference.synthesis import layout
from tests.inference.evaluation.helpers import SHIFT, eval_config, make_synthesis, write_classifier
from tests.stage_kit import StageContract
from training.common.checkpoint import CheckpointError


class TestEvaluateStageContract(StageContract):
    stage = "evaluate"

    def prepare(self, tmp_path: Path) -> tuple[Workspace, list]:
        workspace = Workspace(tmp_path / "ws")
        self.classifier = write_classifier(tmp_path / "classifier.pt")
        return workspace, [make_synthesis(workspace)]

    def config(self) -> EvaluateConfig:
        return eval_config(self.classifier)

    def changed_config(self) -> EvaluateConfig:
        return eval_config(self.classifier, bootstrap={"resamples": 200, "seed": 1})

    def test_planted_values_and_report(self, first_run: tuple) -> None:
        workspace, inputs, manifest = first_run
        folder = workspace.root / REPORTING_DIR / manifest.run_id
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["synthesis"]["run"] == inputs[0].run_id and metrics["synthesis"]["demo_generator"]
        mask = metrics["attributes"]["face_mask"]
        ours, basis, paste = (mask["methods"][m] for m in ("sdgan", "interfacegan", "template_paste"))
        assert mask["n"] == 6
        # SD-GAN's images are the GT: L1 0, SSIM 1, PSNR infinite (dropped from the mean, counted), background 0
        assert ours["l1_gt"]["mean"] == 0 and ours["ssim_gt"]["mean"] == pytest.approx(1.0, abs=1e-9)
        assert ours["psnr_gt"]["n"] == 0 and ours["psnr_gt"]["n_dropped"] == 6
        assert ours["background_l1"]["mean"] == 0
        # InterfaceGAN: the origin brightened by SHIFT levels, clipped at 255 only where origin + SHIFT > 255 (never)
        assert basis["background_l1"]["mean"] == pytest.approx(SHIFT / 127.5, rel=1e-6)
        assert basis["background_l1"]["lo"] <= basis["background_l1"]["mean"] <= basis["background_l1"]["hi"]
        assert basis["l1_gt"]["mean"] > 0 and basis["psnr_gt"]["n"] == 6
        # identical images score identically; the template paste is not compared with itself
        assert ours["dlib_distance"]["mean"] == pytest.approx(paste["dlib_distance"]["mean"])
        assert ours["success"]["mean"] == paste["success"]["mean"]
        assert paste["l1_gt"]["skipped"] and "GT composite" in paste["l1_gt"]["reason"]
        assert ours["arcface_cosine"]["skipped"] and "ArcFace" in ours["arcface_cosine"]["reason"]
        assert mask["distribution"]["sdgan"]["skipped"] and "Inception" in mask["distribution"]["sdgan"]["reason"]
        difference = mask["differences"]["background_l1"]
        assert difference["mean"] == pytest.approx(-SHIFT / 127.5, rel=1e-6)
        assert set(mask["strength"]) == {"interfacegan", "sdgan"} and set(mask["strength"]["sdgan"]) == {"0", "1"}
        # the sweep's dlib distances: a = 0 is the origin itself (distance 0); InterfaceGAN's a = 1 moved
        identity = mask["strength_identity"]
        assert identity["sdgan"]["0"] == 0 and identity["interfacegan"]["0"] == 0
        assert identity["interfacegan"]["1"] > 0
        assert ours["success"]["threshold"] == 0.6  # the classifier's own label-check level
        per_sample = pd.read_parquet(folder / "per_sample.parquet")
        assert len(per_sample) == 18 and set(per_sample["method"]) == {"sdgan", "interfacegan", "template_paste"}
        report = (folder / "report.md").read_text()
        assert "blobs" in report and "| SD-GAN (basis + offset) |" in report and "(strength_face_mask.png)" in report
        assert "Inception" in report  # the reason FID was not computed
        page = (folder / "report.html").read_text()
        assert "data:image/png;base64," in page and not re.search(r'src="(?!data:)', page)
        assert manifest.counts["face_mask_sdgan_l1_gt"] == 0
        outputs = describe(workspace, manifest)
        assert outputs is not None and outputs.items["report"].endswith("report.html")


def test_fid_and_kid_with_an_inception_file_and_a_reference_folder(tmp_path: Path) -> None:
    from tests.inference.metrics.test_distribution import TinyInception

    workspace = Workspace(tmp_path / "ws")
    synthesis = make_synthesis(workspace, n=8)
    folder = workspace.resolve(synthesis.files[layout.INFO_FILE].path).parent
    reference = tmp_path / "reference"
    shutil.copytree(folder / "face_mask" / layout.OURS, reference)  # the reference *is* SD-GAN's set
    inception = tmp_path / "inception.pt"
    torch.jit.save(torch.jit.script(TinyInception()), str(inception))
    manifest = run(eval_config(write_classifier(tmp_path / "c.pt"), reference=str(reference),
                               inception=str(inception), identity={"dlib": False}), workspace, [synthesis])
    metrics = json.loads((workspace.root / REPORTING_DIR / manifest.run_id / "metrics.json").read_text())
    distribution = metrics["attributes"]["face_mask"]["distribution"]
    assert distribution["sdgan"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert distribution["interfacegan"]["fid"] > 1e-4  # brighter everywhere: its features moved
    assert distribution["interfacegan"]["kid"]["mean"] > distribution["sdgan"]["kid"]["mean"]
    assert metrics["attributes"]["face_mask"]["methods"]["sdgan"]["dlib_distance"]["skipped"]


def _nothing_written(workspace: Workspace) -> bool:
    root = workspace.root / REPORTING_DIR
    return not any(p.name.startswith(("evaluate-", ".partial-")) for p in root.iterdir())


def test_bad_inputs_give_one_clear_error_and_write_nothing(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    synthesis = make_synthesis(workspace)
    classifier = write_classifier(tmp_path / "c.pt")
    generator = tmp_path / "g.pt"
    torch.save({"g_ema": {}}, generator)
    with pytest.raises(CheckpointError):
        run(eval_config(generator), workspace, [synthesis])
    assert _nothing_written(workspace)
    folder = workspace.resolve(synthesis.files[layout.INFO_FILE].path).parent
    (folder / "face_mask" / layout.OURS / "0003.png").unlink()
    with pytest.raises(EvaluationInputError, match="1 image.* missing.*0003.png"):
        run(eval_config(classifier), workspace, [synthesis])
    assert _nothing_written(workspace)
    (folder / layout.INDEX_FILE).unlink()
    with pytest.raises(EvaluationInputError, match="index.parquet is missing"):
        run(eval_config(classifier), workspace, [synthesis])
    with pytest.raises(EvaluationInputError, match="no synthesize run"):
        run(eval_config(classifier), Workspace(tmp_path / "empty"))
    assert workspace.current("evaluate") is None


def chromium() -> str | None:
    for candidate in (os.environ.get("SDGAN_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


# Appended to a copy of the report: once every image has loaded, writes what rendered into the DOM.
PROBE = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  const drawn = images.filter(i => i.complete && i.naturalWidth > 0 && i.src.startsWith('data:image/'));
  document.body.setAttribute('data-probe', JSON.stringify({images: images.length, drawn: drawn.length,
    tables: document.querySelectorAll('table').length, rows: document.querySelectorAll('tbody tr').length,
    widths: drawn.map(i => i.naturalWidth)}));
});</script>"""


@pytest.mark.skipif(chromium() is None, reason="no Chromium binary (apt-get install chromium, or set SDGAN_CHROMIUM)")
def test_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    manifest = run(eval_config(write_classifier(tmp_path / "c.pt")), workspace, [make_synthesis(workspace)])
    report = workspace.root / REPORTING_DIR / manifest.run_id / "report.html"
    alone = tmp_path / "elsewhere" / "report.html"  # the page alone, away from its folder: self-contained
    alone.parent.mkdir()
    alone.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                               "--dump-dom", alone.as_uri()], capture_output=True, text=True, timeout=120,
                              check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"data-probe=\"([^\"]+)\"", done.stdout)
    assert found is not None, done.stdout[:500]
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe["images"] == 2 and probe["drawn"] == 2  # the grid and the strength plot, both decoded
    assert all(width > 0 for width in probe["widths"])
    assert probe["tables"] == 2 and probe["rows"] == 3 + 7  # methods; paired differences
    assert "SD-GAN evaluation" in done.stdout and "face_mask (6 samples)" in done.stdout
