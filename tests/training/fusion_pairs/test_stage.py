"""The fusion-pairs stage: the stage contract, what a pair holds (checked against its sources), the catalog,
resume and fan-out, landmark fallback, template PNGs, Unsup3d sources and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data_catalog.manifest import Manifest
from data_catalog.runs import map_in_process
from data_catalog.stages import get as get_stage
from data_catalog.workspace import Workspace
from tests.stage_kit import StageContract
from tests.training.fusion_pairs.upstream import (
    SIZE,
    STYLE_DIM,
    TEST_N,
    TEST_SEED,
    boundaries_workspace,
    register_unsup3d_run,
    write_models,
)
from training.boundaries.stage import basis_for
from training.fusion_pairs.chunks import CHUNKS_DIR, record_path
from training.fusion_pairs.config import FusionPairsConfig
from training.fusion_pairs.format import ATTRIBUTES, INDEX_FILE, PairsIndex
from training.fusion_pairs.landmarks import ffhq_landmarks
from training.fusion_pairs.sources import SourceError
from training.fusion_pairs.stage import PAIRS_DIR, TABLE, find_interrupted, run
from training.fusion_pairs.summary import describe, read_pairs
from training.fusion_pairs.templates import TemplateError, png_template
from training.stylegan2.handle import GeneratorHandle

N_TRAIN = 8
KIND = {"face_mask": "mask", "sunglasses": "glasses", "frame_glasses": "frame_glasses"}


def make_config(models: Path, **changes: object) -> FusionPairsConfig:
    data: dict = {"unsup3d": str(models / "unsup3d.pth"), "n_train": N_TRAIN, "chunk_size": 4, "batch_size": 4,
                  "canonical_size": 16, "detector": "none", "templates": {"size": 64},
                  "runtime": {"device": "cpu", "threads": 1}}
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return FusionPairsConfig.model_validate(data)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def upstream(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with one real fit-boundaries run; tests work on copies (a workspace may be moved)."""
    root = tmp_path_factory.mktemp("upstream") / "ws"
    boundaries_workspace(root, models)
    return root


def copy_of(upstream: Path, where: Path) -> tuple[Workspace, list[Manifest]]:
    shutil.copytree(upstream, where)
    workspace = Workspace(where)
    return workspace, [workspace.current("fit-boundaries")]


class TestFusionPairsContract(StageContract):
    stage = "fusion-pairs"

    @pytest.fixture(autouse=True)
    def _upstream(self, models: Path, upstream: Path) -> None:
        self.models, self.upstream = models, upstream

    def prepare(self, tmp_path: Path) -> tuple[Workspace, list[Manifest]]:
        return copy_of(self.upstream, tmp_path / "ws")

    def config(self) -> FusionPairsConfig:
        return make_config(self.models)

    def changed_config(self) -> FusionPairsConfig:
        return make_config(self.models, truncation=0.7)


@pytest.fixture(scope="module")
def finished(models: Path, upstream: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Workspace, Manifest, Path]:
    workspace, inputs = copy_of(upstream, tmp_path_factory.mktemp("finished") / "ws")
    manifest = run(make_config(models), workspace, inputs)
    return workspace, manifest, workspace.root / PAIRS_DIR / manifest.run_id


def boundaries_folder(workspace: Workspace) -> Path:
    boundaries = workspace.current("fit-boundaries")
    return workspace.resolve(boundaries.files["report.json"].path).parent


def all_pairs(folder: Path, index: PairsIndex, split: str) -> list:
    return [pair for shard in index.shards[split] for pair in read_pairs(folder / shard)]


def test_pairs_hold_what_their_sources_give(finished) -> None:
    from alignment.attributes import composite, make_template

    workspace, _, folder = finished
    index = PairsIndex.from_json((folder / INDEX_FILE).read_text())
    handle = GeneratorHandle.load(index.generator)
    mean = torch.from_numpy(np.load(folder / index.truncation_mean))
    upstream = boundaries_folder(workspace)
    test_w = np.load(upstream / "test_w.npy")
    templates = {a: make_template(name, 64) for a, name in
                 (("face_mask", "surgical_mask"), ("sunglasses", "sunglasses"), ("frame_glasses", "frame_glasses"))}
    for split, count in (("train", N_TRAIN), ("test", TEST_N)):
        pairs = all_pairs(folder, index, split)
        assert [p.key for p in pairs] == [f"{split}_{i:08d}" for i in range(count)]
        w = np.stack([p.w for p in pairs])
        if split == "train":
            assert [p.meta["seed"] for p in pairs] == list(range(2_000_000_000, 2_000_000_000 + count))
            expected_w = np.concatenate([handle.z_to_w(handle.z([p.meta["seed"] for p in pairs[i:i + 4]])).numpy()
                                         for i in range(0, count, 4)])  # the batches the stage used
            np.testing.assert_allclose(w, expected_w, rtol=0, atol=1e-6)
        else:  # the boundaries' held-out test set, with its own n_b
            np.testing.assert_array_equal(w, test_w)
            assert [p.meta["seed"] for p in pairs] == list(range(TEST_SEED, TEST_SEED + TEST_N))
        for attribute in ATTRIBUTES:
            nb = np.stack([p.attributes[attribute].nb for p in pairs])
            if split == "train":
                normal = np.load(upstream / f"boundary_{attribute}.npy")
                np.testing.assert_array_equal(nb, basis_for(w, normal, 2.5))  # d: the boundaries' test distance
            else:
                np.testing.assert_array_equal(nb, np.load(upstream / f"test_nb_{KIND[attribute]}.npy"))
        origins = handle.synthesize(torch.from_numpy(w[:4]), truncation=0.5, truncation_latent=mean, batch_size=4,
                                    output="uint8").numpy()
        assert np.abs(origins.astype(int) - np.stack([p.origin for p in pairs[:4]]).astype(int)).max() <= 1
        for pair in pairs[:3]:
            assert pair.meta["landmark_source"] == "ffhq_canonical" and pair.meta["truncation"] == 0.5
            np.testing.assert_array_equal(pair.landmarks, ffhq_landmarks(SIZE))
            assert pair.canonical.dtype == np.float16 and pair.canonical.shape == (9, 16, 16)
            assert np.isfinite(pair.canonical).all() and np.abs(pair.canonical).max() <= 1
            for attribute, template in templates.items():
                item = pair.attributes[attribute]
                gt, alpha = composite(pair.origin, pair.landmarks, template)
                np.testing.assert_array_equal(item.gt, np.asarray(gt))
                np.testing.assert_array_equal(item.region, np.round(alpha * 255).astype(np.uint8))
                layer, _ = composite(np.zeros_like(pair.origin), pair.landmarks, template, shadow=False)
                np.testing.assert_array_equal(item.template, np.asarray(layer))
                assert item.region.max() > 0 and not item.template[item.region == 0].any()
                assert pair.meta["templates"][attribute] == {"kind": "builtin", "name": template.name}


def test_index_catalog_and_summary(finished) -> None:
    workspace, manifest, folder = finished
    index = PairsIndex.from_json((folder / INDEX_FILE).read_text())
    assert index.counts == {"train": N_TRAIN, "test": TEST_N} and index.attributes == list(ATTRIBUTES)
    assert (index.image_size, index.canonical_size, index.w_dim, index.num_ws) == (SIZE, 16, STYLE_DIM, 8)
    assert index.truncation == 0.5 and np.load(folder / index.truncation_mean).shape == (1, STYLE_DIM)
    assert index.extra["noise_mode"] == "const" and index.extra["canonical_crop"] == "aligned"
    assert index.extra["landmark_sources"] == {"detected": 0, "ffhq_canonical": N_TRAIN + TEST_N}
    assert index.extra["generator_matches_boundaries"] is True
    assert len(index.shards["train"]) == 2 and len(index.shards["test"]) == 2
    rows = workspace.table(TABLE)
    rows = rows[rows["run_id"] == manifest.run_id]
    assert len(rows) == N_TRAIN + TEST_N and rows["key"].is_unique
    assert rows["split"].value_counts().to_dict() == {"train": N_TRAIN, "test": TEST_N}
    assert set(rows["landmark_source"]) == {"ffhq_canonical"}
    assert all(workspace.resolve(s).is_file() for s in rows["shard"])
    assert (rows[[f"area_{a}" for a in ATTRIBUTES]].astype(float) > 0).all().all()
    first = next(read_pairs(folder / index.shards["train"][0]))
    row = rows[rows["key"] == first.key].iloc[0]
    assert row["seed"] == first.meta["seed"]
    assert row["area_face_mask"] == pytest.approx(first.meta["region_area"]["face_mask"])
    assert manifest.counts["landmarks_ffhq_canonical"] == N_TRAIN + TEST_N and manifest.counts["shards"] == 4
    outputs = describe(workspace, manifest)
    assert outputs is not None and Path(outputs.markdown).is_file() and outputs.items["train pairs"] == str(N_TRAIN)
    from PIL import Image

    with Image.open(outputs.items["grid"]) as grid:
        assert grid.size == ((1 + 3 * len(ATTRIBUTES)) * SIZE, 4 * SIZE)
    assert get_stage("fusion-pairs").outputs(workspace, manifest).title == outputs.title


def test_a_killed_run_resumes_its_chunks_and_fans_out_to_the_same_bytes(models: Path, upstream: Path,
                                                                         tmp_path: Path) -> None:
    workspace, inputs = copy_of(upstream, tmp_path / "ws")
    config = make_config(models)
    calls = []

    def die_after_two(fraction: float, line: str) -> None:
        calls.append(line)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for a kill between chunks

    with pytest.raises(KeyboardInterrupt):
        run(config, workspace, inputs, progress=die_after_two)
    (killed,) = list((workspace.root / PAIRS_DIR).iterdir())
    assert find_interrupted(workspace, json.loads((killed / "resume.json").read_text())["key"]) == killed.name
    done = sorted(p.name for p in (killed / CHUNKS_DIR).glob("*-*.json"))
    assert done == ["train-000000.json", "train-000001.json"]
    kept = {name: (killed / "shards" / f"fusion-{name[:-5]}.tar").stat().st_mtime_ns for name in done}
    manifest = run(config, workspace, inputs, map_batches=map_in_process)  # the rest, as fanned-out jobs
    assert manifest.run_id == killed.name and manifest.status == "completed"
    assert {name: (killed / "shards" / f"fusion-{name[:-5]}.tar").stat().st_mtime_ns for name in done} == kept
    timings = json.loads((killed / "timings.json").read_text())
    assert timings["chunks_done_before"] == 2 and timings["pairs_made_this_run"] == TEST_N
    rows = workspace.table(TABLE)
    assert len(rows) == N_TRAIN + TEST_N and rows["key"].is_unique
    index = PairsIndex.from_json((killed / INDEX_FILE).read_text())
    keys = [p.key for split in ("train", "test") for p in all_pairs(killed, index, split)]
    assert len(keys) == len(set(keys)) == N_TRAIN + TEST_N
    fresh_ws, fresh_inputs = copy_of(upstream, tmp_path / "fresh")
    assert run(config, fresh_ws, fresh_inputs).content_hash == manifest.content_hash
    assert record_path(killed, "test", 1).is_file()


def test_detection_falls_back_to_ffhq_landmarks_and_unsup3d_comes_from_its_run(models: Path, upstream: Path,
                                                                               tmp_path: Path) -> None:
    workspace, inputs = copy_of(upstream, tmp_path / "ws")
    unsup3d_run = register_unsup3d_run(workspace, models / "unsup3d.pth")
    config = make_config(models, unsup3d=None, detector="retinaface", n_train=4, test=False)
    assert get_stage("fusion-pairs").required_upstream(config.to_dict()) == ("fit-boundaries", "train-unsup3d")
    manifest = run(config, workspace, inputs)  # no train-unsup3d manifest given: the current run is used
    assert unsup3d_run.run_id in {ref.run_id for ref in manifest.inputs}
    folder = workspace.root / PAIRS_DIR / manifest.run_id
    index = PairsIndex.from_json((folder / INDEX_FILE).read_text())
    assert index.counts == {"train": 4} and "test" not in index.shards
    assert index.extra["detector"] == "retinaface" and index.extra["canonical_crop"] == "aligned"
    pairs = all_pairs(folder, index, "train")
    assert {p.meta["landmark_source"] for p in pairs} == {"ffhq_canonical"}  # random 32 px blobs: no face found
    assert manifest.counts["landmarks_ffhq_canonical"] == 4 and manifest.counts["landmarks_detected"] == 0


def test_official_style_template_png_and_unsup3d_checkpoint(models: Path, upstream: Path, tmp_path: Path) -> None:
    from PIL import Image

    from alignment.attributes import composite, make_template, random_template

    rgba = np.zeros((260, 300, 4), np.uint8)  # a bare RGBA PNG with a transparent margin, like surgical.png
    rgba[30:30 + 190, 22:22 + 256] = make_template("surgical_mask", 256, color=(120, 160, 220)).rgba[:190]
    png = tmp_path / "surgical.png"
    Image.fromarray(rgba, "RGBA").save(png)
    workspace, inputs = copy_of(upstream, tmp_path / "ws")
    config = make_config(models, unsup3d=str(models / "checkpoint030.pth"), n_train=4, test=False,
                         templates={"face_mask": str(png), "sunglasses": None, "frame_glasses": "random"})
    manifest = run(config, workspace, inputs)
    folder = workspace.root / PAIRS_DIR / manifest.run_id
    index = PairsIndex.from_json((folder / INDEX_FILE).read_text())
    assert index.attributes == ["face_mask", "frame_glasses"] and index.extra["canonical_crop"] == "demo"
    recorded = index.extra["templates"]["face_mask"]
    assert recorded["kind"] == "png" and recorded["path"] == str(png.resolve()) and len(recorded["sha256"]) == 64
    template = png_template(png, "face_mask")
    assert set(recorded["anchors"]) == set(template.anchors)
    for pair in all_pairs(folder, index, "train"):
        gt, _ = composite(pair.origin, pair.landmarks, template)
        np.testing.assert_array_equal(pair.attributes["face_mask"].gt, np.asarray(gt))
        used = pair.meta["templates"]["frame_glasses"]
        assert used["kind"] == "random" and used["rng_seed"] == [pair.meta["seed"], 2]
        drawn = random_template("frame_glasses", np.random.default_rng(used["rng_seed"]), 64)
        gt, _ = composite(pair.origin, pair.landmarks, drawn)
        np.testing.assert_array_equal(pair.attributes["frame_glasses"].gt, np.asarray(gt))
        assert "sunglasses" not in pair.attributes


def test_missing_upstream_and_bad_seeds_are_clear_errors(models: Path, upstream: Path, tmp_path: Path) -> None:
    empty = Workspace(tmp_path / "empty")
    with pytest.raises(SourceError, match="run fit-boundaries first"):
        run(make_config(models), empty)
    workspace, inputs = copy_of(upstream, tmp_path / "ws")
    with pytest.raises(SourceError, match="run train-unsup3d first"):
        run(make_config(models, unsup3d=None), workspace, inputs)
    with pytest.raises(SourceError, match="Unsup3d checkpoint not found"):
        run(make_config(models, unsup3d=str(tmp_path / "nope.pth")), workspace, inputs)
    with pytest.raises(SourceError, match="no fit-boundaries run 'nope'"):
        run(make_config(models, boundaries="nope"), workspace, inputs)
    with pytest.raises(ValueError, match="overlap the test_set seeds"):
        run(make_config(models, seed=TEST_SEED - 2), workspace, inputs)
    with pytest.raises(ValueError, match="overlap the sampling seeds"):
        run(make_config(models, seed=0), workspace, inputs)
    (tmp_path / "noise.png").write_bytes(b"not a png")
    with pytest.raises(TemplateError, match="for face_mask is not a readable image"):
        run(make_config(models, templates={"face_mask": str(tmp_path / "noise.png")}), workspace, inputs)
    assert not (workspace.root / PAIRS_DIR).exists()  # nothing was started


@pytest.mark.parametrize(("change", "message"), [
    ({"chunk_size": 6}, "multiple of batch_size"),
    ({"templates": {"face_mask": "beard"}}, "neither a built-in template"),
    ({"templates": {"face_mask": "sunglasses"}}, "is a sunglasses template"),
    ({"templates": {"anchors": {"face_mask": {"chin": [1, 2]}}}}, "anchors apply to a template PNG only"),
    ({"templates": {"face_mask": None, "sunglasses": None, "frame_glasses": None}}, "every attribute is null"),
    ({"canonical_channels": ["normal", "depth", "nose"]}, "unknown canonical map"),
    ({"detector": "scrfd"}, "needs detector_model_dir"),
    ({"truncation": 0}, "greater than 0"),
])
def test_bad_config_values_are_clear_errors(models: Path, change: dict, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        make_config(models, **change)
