"""The synthesize stage: official-format files made here, a train-fusion run of the workspace, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from data_catalog.manifest import Manifest
from data_catalog.workspace import Workspace
from inference.synthesis import layout
from inference.synthesis.config import SynthesizeConfig
from inference.synthesis.sources import SynthesisInputError
from inference.synthesis.stage import run
from inference.synthesis.summary import describe
from tests.inference.synthesis.helpers import files_config, official_files, write_official_fusion
from tests.stage_kit import StageContract
from training.common.checkpoint import CheckpointError
from training.common.images import to_uint8
from training.fusion.trainer import Editor
from training.stylegan2.handle import GeneratorHandle


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).copy()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return official_files(tmp_path_factory.mktemp("official"))


class TestSynthesizeStageContract(StageContract):
    stage = "synthesize"

    @pytest.fixture(autouse=True)
    def _files(self, files: dict[str, Path]) -> None:
        self.files = files

    def config(self) -> SynthesizeConfig:
        return files_config(self.files)

    def changed_config(self) -> SynthesizeConfig:
        return files_config(self.files, truncation=0.7)

    def test_official_layout_and_renders(self, first_run: tuple) -> None:
        workspace, _, manifest = first_run
        folder = workspace.root / layout.SYNTHESES_DIR / manifest.run_id
        names = ["0000.png", "0001.png", "0002.png"]
        for sub in (layout.ORIGINS, layout.BASIS, layout.OURS, layout.GT, layout.REGIONS):
            assert sorted(p.name for p in (folder / "face_mask" / sub).iterdir()) == names
        assert not list(folder.parent.glob(".partial-*"))
        info = layout.SynthesisInfo.read(folder)
        assert info.source == "files" and info.counts == {"face_mask": 3} and info.truncation == 0.5
        assert info.image_size == 32 and not info.minmax and info.extra["demo_generator"]
        index = pd.read_parquet(folder / layout.INDEX_FILE)
        assert list(index.columns) == list(layout.INDEX_COLUMNS)
        assert index["name"].tolist() == names and (index["no_norm"] > 0).all()
        nb = np.asarray(json.loads(Path(self.files["test_nb"]).read_text()), np.float32)
        np.testing.assert_allclose(index["nb_norm"], np.linalg.norm(nb, axis=1), rtol=1e-5)
        assert set(index["landmark_source"]) == {"ffhq_canonical"}
        # origin and basis are the official renders G(trunc(w)) and G(trunc(w + n_b)), psi 0.5, seeded mean w
        handle = GeneratorHandle.load(self.files["generator"])
        editor = Editor(handle.generator, handle.mean_w(64, 23914), 0.5)
        w = torch.from_numpy(np.asarray(json.loads(Path(self.files["test_w"]).read_text()), np.float32))
        with torch.no_grad():
            origin = to_uint8(editor(editor.latent(w, torch.zeros_like(w))))
            basis = to_uint8(editor(editor.latent(w, torch.from_numpy(nb))))
        for i, name in enumerate(names):
            assert np.abs(_png(folder / "face_mask" / layout.ORIGINS / name).astype(int) - origin[i]).max() <= 1
            assert np.abs(_png(folder / "face_mask" / layout.BASIS / name).astype(int) - basis[i]).max() <= 1
            ours = _png(folder / "face_mask" / layout.OURS / name)
            assert not np.array_equal(ours, basis[i])  # n_o moved the edit
            region = _png(folder / "face_mask" / layout.REGIONS / name)
            assert region.ndim == 2 and region.max() == 255 and region.min() == 0
            gt = _png(folder / "face_mask" / layout.GT / name)
            outside = region == 0
            np.testing.assert_array_equal(gt[outside & (np.abs(gt.astype(int) - origin[i]).max(-1) > 0)].shape[0] <
                                          outside.sum() * 0.5, True)
        sweep = pd.read_parquet(folder / layout.STRENGTH_FILE)
        assert len(sweep) == 2 * 2 * 2 and set(sweep["alpha"]) == {0.0, 1.0}
        zero = sweep[(sweep["alpha"] == 0.0) & (sweep["method"] == "sdgan") & (sweep["index"] == 0)]["path"].item()
        assert np.abs(_png(folder / zero).astype(int) - origin[0]).max() <= 1  # a = 0 is the origin
        with Image.open(folder / "face_mask" / layout.GRID_FILE) as grid:
            assert grid.size == (4 * 32, 2 * 32)
        checksums = (folder / "images.sha256").read_text().splitlines()
        assert len(checksums) == 3 * 5 + 8 + 1 and manifest.counts["images"] == len(checksums)
        outputs = describe(workspace, manifest)
        assert outputs is not None and Path(outputs.markdown).is_file()
        assert "blobs" in Path(outputs.markdown).read_text()


def test_minmax_reproduces_the_official_normalisation(tmp_path: Path, files: dict[str, Path]) -> None:
    workspace = Workspace(tmp_path / "ws")
    clamped = run(files_config(files, limit=1, strengths=[]), workspace)
    stretched = run(files_config(files, limit=1, strengths=[], minmax=True), workspace)
    a = _png(workspace.resolve(clamped.files["grid_face_mask"].path).parent / layout.OURS / "0000.png")
    b = _png(workspace.resolve(stretched.files["grid_face_mask"].path).parent / layout.OURS / "0000.png")
    assert b.min() == 0 and b.max() == 255 and not np.array_equal(a, b)


def _no_output(workspace: Workspace) -> bool:
    root = workspace.root / layout.SYNTHESES_DIR
    return not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize("case", ["fusion_is_unsup3d", "fusion_other_shape", "nb_length", "w_dimension", "template"])
def test_bad_inputs_give_one_clear_error_and_write_nothing(tmp_path: Path, files: dict[str, Path], case: str) -> None:
    from training.fusion.network import FusionArch

    values: dict[str, object] = {}
    expected: tuple[type[Exception], str]
    if case == "fusion_is_unsup3d":
        values["fusion"] = str(files["unsup3d"])
        expected = (CheckpointError, "Unsup3d")
    elif case == "fusion_other_shape":
        other = FusionArch(image_size=32, widths=(4, 8, 8, 16), encoder_width=4, style_length=16, spade_hidden=8,
                           w_dim=24, num_ws=8)
        values["fusion"] = str(write_official_fusion(tmp_path / "other.pt", arch=other))
        expected = (SynthesisInputError, "do not belong together")
    elif case == "nb_length":
        nb = json.loads(files["test_nb"].read_text())[:2]
        (tmp_path / "nb.json").write_text(json.dumps(nb))
        values["test_nb"] = str(tmp_path / "nb.json")
        expected = (SynthesisInputError, "one n_b per test w")
    elif case == "w_dimension":
        w = [row + [0.0] for row in json.loads(files["test_w"].read_text())]
        (tmp_path / "w.json").write_text(json.dumps(w))
        values["test_w"] = str(tmp_path / "w.json")
        expected = (SynthesisInputError, "another generator")
    else:
        values["templates"] = {"face_mask": str(tmp_path / "missing.png")}
        expected = (FileNotFoundError, "template PNG")
    workspace = Workspace(tmp_path / "ws")
    with pytest.raises(expected[0], match=expected[1]):
        run(files_config(files, **values), workspace)
    assert _no_output(workspace)
    assert workspace.current("synthesize") is None


def test_files_source_needs_every_path() -> None:
    with pytest.raises(ValueError, match="needs fusion, generator, unsup3d, test_nb"):
        SynthesizeConfig(test_w="w.json")


def test_pairs_source_uses_the_train_fusion_run(tmp_path: Path) -> None:
    from tests.training.fusion.pairs_helpers import tiny_config
    from tests.training.fusion.test_stage import prepare_pairs
    from training.fusion.stage import run as train_fusion

    workspace, inputs, _ = prepare_pairs(tmp_path, attributes=("face_mask", "sunglasses"))
    trained: Manifest = train_fusion(tiny_config(), workspace, inputs)
    manifest = run(SynthesizeConfig.model_validate({"batch_size": 2, "strength_samples": 1, "strengths": [1.0],
                                                    "runtime": {"device": "cpu", "threads": 1}}),
                   workspace, [trained])
    folder = workspace.root / layout.SYNTHESES_DIR / manifest.run_id
    info = layout.SynthesisInfo.read(folder)
    assert info.source == "pairs" and info.attributes == ["face_mask", "sunglasses"]
    assert info.pairs_run == inputs[0].run_id and info.extra["fusion_run"] == trained.run_id
    assert info.counts == {"face_mask": 2, "sunglasses": 2}
    assert {(m.stage, m.run_id) for m in manifest.inputs} == {("train-fusion", trained.run_id),
                                                              ("fusion-pairs", inputs[0].run_id)}
    index = pd.read_parquet(folder / layout.INDEX_FILE)
    keys = index["key"].tolist()[:2]
    assert keys == sorted(keys) and all(k.startswith("test_") for k in keys)
    # the GT column is the pairs' own composite, byte for byte
    from training.fusion.data import find_pairs_run, read_pairs

    pairs = find_pairs_run(workspace, inputs[0].run_id)
    first = read_pairs(pairs.shards("test"), "sunglasses", 1)[0]
    np.testing.assert_array_equal(_png(folder / "sunglasses" / layout.GT / "0000.png"),
                                  first["gt"].permute(1, 2, 0).numpy())
    with pytest.raises(SynthesisInputError, match="no train-fusion run"):
        run(SynthesizeConfig(), Workspace(tmp_path / "empty"))
