"""The fit-boundaries stage: the stage contract, outputs, official JSON shapes, n_b semantics, resume, sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_catalog.manifest import Manifest
from data_catalog.stages import get as get_stage
from data_catalog.workspace import Workspace
from tests.stage_kit import StageContract
from tests.training.boundaries.tiny_models import STYLE_DIM, write_classifier, write_generator
from training.boundaries.config import FitBoundariesConfig
from training.boundaries.stage import MODELS_DIR, basis_for, find_interrupted, run
from training.boundaries.summary import describe
from training.boundaries.svm import signed_distance
from training.classifier.model import ATTRIBUTES

TEST_N = 6


def make_config(models: Path, official: bool = False, **changes) -> FitBoundariesConfig:
    data = {
        "generator": str(models / ("official.pt" if official else "g.pt")),
        "classifier": str(models / "c.pt"),
        "sampling": {"n_samples": 40, "chunk_size": 8, "batch_size": 4, "truncation": 0.7, "seed": 0},
        "svm": {"chosen_num_or_ratio": 0.25, "split_ratio": 0.7, "seed": 0},
        "test_set": {"n": TEST_N, "seed": 10_000, "distance": 2.5},
        "figure": {"alphas": [-2.0, 0.0, 2.0], "rows": 2, "scatter_points": 30},
        "runtime": {"device": "cpu", "threads": None},
    }
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return FitBoundariesConfig.model_validate(data)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_generator(folder / "g.pt")
    write_generator(folder / "official.pt", official=True)
    write_classifier(folder / "c.pt")
    return folder


class TestFitBoundariesContract(StageContract):
    stage = "fit-boundaries"

    @pytest.fixture(autouse=True)
    def _models(self, models: Path) -> None:
        self.models = models

    def config(self) -> FitBoundariesConfig:
        return make_config(self.models)

    def changed_config(self) -> FitBoundariesConfig:
        return make_config(self.models, svm={"chosen_num_or_ratio": 0.3})


@pytest.fixture(scope="module")
def finished(models: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Manifest, Path]:
    workspace = Workspace(tmp_path_factory.mktemp("ws") / "ws")
    lines: list[tuple[float, str]] = []
    manifest = run(make_config(models), workspace, progress=lambda fraction, line: lines.append((fraction, line)))
    assert [f for f, _ in lines[:5]] == [0.2, 0.4, 0.6, 0.8, 1.0] and lines[-1][0] == 1.0
    return workspace, manifest, workspace.root / MODELS_DIR / manifest.run_id


def test_outputs_and_shapes(finished) -> None:
    workspace, manifest, folder = finished
    assert folder.is_dir() and (folder / "config.json").is_file()
    assert np.load(folder / "latents.npy").shape == (40, STYLE_DIM)
    assert np.load(folder / "scores.npy").shape == (40, len(ATTRIBUTES))
    names = [*ATTRIBUTES, "sunglasses_cond_frame_glasses", "face_mask_cond_sunglasses_cond_frame_glasses"]
    for name in names:
        normal = np.load(folder / f"boundary_{name}.npy")
        assert normal.shape == (1, STYLE_DIM) and normal.dtype == np.float32
        assert abs(np.linalg.norm(normal) - 1) < 1e-5
        assert f"boundary_{name}" in manifest.files
    cond = np.load(folder / "boundary_face_mask_cond_sunglasses_cond_frame_glasses.npy")
    for other in ("sunglasses", "frame_glasses"):
        assert abs((cond @ np.load(folder / f"boundary_{other}.npy").T).item()) < 1e-5
    for kind in ("mask", "glasses", "frame_glasses"):
        for name in (f"w_{kind}_test_{TEST_N}.json", f"{kind}_interfacegan_test_{TEST_N}.json"):
            rows = json.loads((folder / name).read_text())
            assert len(rows) == TEST_N and all(len(r) == STYLE_DIM and all(isinstance(v, float) for v in r)
                                               for r in rows)
            assert name in manifest.files
    for attribute in ATTRIBUTES:
        assert (folder / "figures" / f"edit_grid_{attribute}.png").is_file()
        assert (folder / "figures" / f"score_vs_distance_{attribute}.png").is_file()
        assert isinstance(manifest.counts[f"val_accuracy_{attribute}"], float)
    assert manifest.counts["n_samples"] == 40
    report = json.loads((folder / "report.json").read_text())
    assert set(report["boundaries"]) == set(ATTRIBUTES) and report["truncation"] == 0.7
    assert "val acc" in (folder / "report.md").read_text()
    outputs = describe(workspace, manifest)
    assert outputs is not None and Path(outputs.markdown).is_file() and outputs.items["samples"] == "40"
    assert get_stage("fit-boundaries").outputs(workspace, manifest).title == outputs.title


def test_json_round_trips_float32_and_n_b_lands_at_distance_d(finished) -> None:
    _, _, folder = finished
    test_w = np.load(folder / "test_w.npy")
    w = np.asarray(json.loads((folder / f"w_mask_test_{TEST_N}.json").read_text()), np.float32)
    n_b = np.asarray(json.loads((folder / f"mask_interfacegan_test_{TEST_N}.json").read_text()), np.float32)
    np.testing.assert_array_equal(w, test_w)  # the text is float32's shortest round trip: exact
    np.testing.assert_array_equal(n_b, np.load(folder / "test_nb_mask.npy"))
    normal = np.load(folder / "boundary_face_mask.npy")
    np.testing.assert_allclose(signed_distance(w + n_b, normal), 2.5, atol=1e-4)
    # n_b is along the normal, with a per-sample length
    cos = (n_b @ normal.T).ravel() / np.linalg.norm(n_b, axis=1)
    np.testing.assert_allclose(np.abs(cos), 1, atol=1e-5)
    glasses = np.asarray(json.loads((folder / f"glasses_interfacegan_test_{TEST_N}.json").read_text()), np.float32)
    np.testing.assert_allclose(signed_distance(w + glasses, np.load(folder / "boundary_sunglasses.npy")), 2.5,
                               atol=1e-4)


def test_basis_for_hand_computed() -> None:
    normal = np.array([[0.6, 0.8]], np.float32)
    w = np.array([[1.0, 0.0], [0.0, -2.0]], np.float32)  # w·n = 0.6 and -1.6
    np.testing.assert_allclose(basis_for(w, normal, 1.0), [[0.24, 0.32], [1.56, 2.08]], atol=1e-6)


def test_the_official_checkpoint_layout_and_no_upstream_runs(models: Path, tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    spec = get_stage("fit-boundaries")
    config = make_config(models, official=True)
    assert spec.required_upstream(config.to_dict()) == ()
    manifest = run(config, workspace)
    assert manifest.status == "completed" and manifest.inputs == []
    folder = workspace.root / MODELS_DIR / manifest.run_id
    assert np.load(folder / "boundary_face_mask.npy").shape == (1, STYLE_DIM)


def test_missing_sources_and_unknown_attributes_are_clear_errors(models: Path, tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    with pytest.raises(FileNotFoundError, match="run train-stylegan2 first"):
        run(make_config(models, generator=None), workspace)
    with pytest.raises(FileNotFoundError, match="classifier checkpoint not found"):
        run(make_config(models, classifier=str(tmp_path / "nope.pt")), workspace)
    with pytest.raises(ValueError, match="unknown attribute"):
        run(make_config(models, attributes=["beard"]), workspace)


def test_seed_ranges_must_not_overlap(models: Path) -> None:
    with pytest.raises(ValueError, match="overlap"):
        make_config(models, test_set={"seed": 30})


def test_a_killed_run_is_continued_in_its_folder(models: Path, tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    config = make_config(models)
    calls = []

    def die_after_two(fraction: float, line: str) -> None:
        calls.append(line)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for a kill between chunks

    with pytest.raises(KeyboardInterrupt):
        run(config, workspace, progress=die_after_two)
    (killed,) = list((workspace.root / MODELS_DIR).iterdir())
    assert find_interrupted(workspace, json.loads((killed / "resume.json").read_text())["key"]) == killed.name
    manifest = run(config, workspace)
    assert manifest.run_id == killed.name and manifest.status == "completed"
    timings = json.loads((killed / "timings.json").read_text())
    assert timings["chunks_done_before"] == 2 and timings["samples_computed_this_run"] == 24
    fresh = run(config, Workspace(tmp_path / "fresh"))
    assert manifest.content_hash == fresh.content_hash
