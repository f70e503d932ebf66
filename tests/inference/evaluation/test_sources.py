"""What evaluate finds around a synthesis: the classifier run, the boundaries in its lineage, a dataset version
as the FID reference; and the report as a Prefect artifact (every image embedded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from data_catalog.workspace import Workspace
from flows.artifacts import artifact_markdown
from inference.evaluation.sources import EvaluationInputError
from inference.evaluation.stage import REPORTING_DIR, run
from inference.evaluation.summary import describe
from tests.inference.evaluation.helpers import (
    book_boundaries_run,
    book_classifier_run,
    eval_config,
    make_synthesis,
    write_classifier,
    write_dataset_version,
)


def test_the_classifier_run_and_the_boundaries_of_the_lineage_in_the_report(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    checkpoint = write_classifier(workspace.root / "models" / "classifier" / "scorer.pt")
    classifier = book_classifier_run(workspace, checkpoint)
    boundaries = book_boundaries_run(workspace)
    synthesis = make_synthesis(workspace, inputs=[boundaries], extra={})  # no demo flag: 32 px says it
    manifest = run(eval_config(None, identity={"dlib": False}), workspace, [synthesis])  # classifier: the run's
    folder = workspace.root / REPORTING_DIR / manifest.run_id
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["synthesis"]["demo_generator"]
    assert metrics["classifier"]["path"] == str(checkpoint.resolve())
    upstream = metrics["upstream"]
    assert upstream["classifier"]["run"] == classifier.run_id and set(upstream["classifier"]["val"]) == {"face_mask"}
    assert upstream["classifier"]["val"]["face_mask"]["auc"] == 0.95 and upstream["classifier"]["temperature"] == 1.5
    assert upstream["boundaries"] == {"run": boundaries.run_id, "in_lineage": True,
                                      "val_accuracy": {"face_mask": 0.875}}
    # only the evaluated attribute's boundary figures are copied
    assert sorted(p.name for p in (folder / "figures").iterdir()) == ["boundaries_face_mask.png", "classifier_grid.png"]
    with Image.open(folder / "figures" / "boundaries_face_mask.png") as joined:  # edit grid | score plot
        assert joined.size == (64 + 8 + 24, 24)
    assert {ref.run_id for ref in manifest.inputs} == {synthesis.run_id, classifier.run_id, boundaries.run_id}
    report = (folder / "report.md").read_text()
    assert "blobs" in report and "## The classifier's figures" in report and "| face_mask | 0.900 | 0.800 | 0.950 |" in report
    assert "## The boundaries' figures" in report and "0.8750" in report and "not in the synthesis" not in report
    assert "(figures/boundaries_face_mask.png)" in report
    page = (folder / "report.html").read_text()
    assert page.count("<img ") == 4 and not re.search(r'src="(?!data:)', page)  # grid, strength, 2 upstream
    # the Prefect markdown artifact: the report with every image a thumbnail, no link left to a local file
    artifact = artifact_markdown(describe(workspace, manifest).to_json())
    assert artifact is not None and artifact.count("](data:image/jpeg;base64,") == 4
    assert not re.search(r"!\[[^\]]*\]\((?!data:)", artifact)


def test_the_current_boundaries_outside_the_lineage_are_said_so(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    boundaries = book_boundaries_run(workspace, ("face_mask",))
    synthesis = make_synthesis(workspace)  # no lineage: e.g. made from the official files
    classifier = write_classifier(tmp_path / "elsewhere.pt")  # a path no run wrote: no classifier section
    manifest = run(eval_config(classifier, identity={"dlib": False}), workspace, [synthesis])
    folder = workspace.root / REPORTING_DIR / manifest.run_id
    metrics = json.loads((folder / "metrics.json").read_text())
    assert "classifier" not in metrics["upstream"]
    assert metrics["upstream"]["boundaries"]["run"] == boundaries.run_id
    assert not metrics["upstream"]["boundaries"]["in_lineage"]
    report = (folder / "report.md").read_text()
    assert "not in the synthesis's lineage" in report and "The classifier's figures" not in report


def test_fid_against_the_faces_of_a_dataset_version(tmp_path: Path) -> None:
    from tests.inference.metrics.test_distribution import TinyInception

    workspace = Workspace(tmp_path / "ws")
    write_dataset_version(workspace, "v-ref", per_label=5)
    synthesis = make_synthesis(workspace, n=6)
    inception = tmp_path / "inception.pt"
    torch.jit.save(torch.jit.script(TinyInception()), str(inception))
    classifier = write_classifier(tmp_path / "c.pt")
    manifest = run(eval_config(classifier, reference="v-ref", inception=str(inception), identity={"dlib": False}),
                   workspace, [synthesis])
    metrics = json.loads((workspace.root / REPORTING_DIR / manifest.run_id / "metrics.json").read_text())
    assert metrics["reference"] == "MEGN v-ref (train)"
    distribution = metrics["attributes"]["face_mask"]["distribution"]["sdgan"]
    assert distribution["n_real"] == 5 and distribution["n_fake"] == 6  # only the faces labelled face mask
    assert distribution["fid"] > 0 and manifest.counts["face_mask_sdgan_fid"] == pytest.approx(distribution["fid"],
                                                                                                 abs=1e-3)
    with pytest.raises(EvaluationInputError, match="v-typo"):  # a version named and not found: an error
        run(eval_config(classifier, reference="v-typo", inception=str(inception), identity={"dlib": False}),
            workspace, [synthesis])
