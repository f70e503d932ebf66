"""The align stage on real faces: kept faces, every rejection path, duplicates, identities, resume."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from alignment.config import AlignConfig
from alignment.stage import run
from data_catalog.effective import effective_faces
from data_catalog import Workspace
from data_catalog.verify import verify_workspace
from tests.stage_kit import StageContract


def jpeg(array: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def add(ws: Workspace, data: bytes, ext: str = "jpg") -> str:
    sha = ws.blobs.put(data, ext)
    ws.append("images", pd.DataFrame([{"sha256": sha, "format": ext, "width": 1, "height": 1, "bytes": len(data)}]), "seed")
    return sha


@pytest.fixture(scope="module")
def aligned_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, dict[str, str], object]:
    from skimage import data

    folder = Path(importlib.util.find_spec("insightface").submodule_search_locations[0]) / "data" / "images"
    astronaut = data.astronaut()
    ws = Workspace(tmp_path_factory.mktemp("align") / "ws")
    shas = {
        "astronaut": add(ws, jpeg(astronaut)),
        "mirrored": add(ws, jpeg(np.ascontiguousarray(astronaut[:, ::-1]), 80)),
        "group": add(ws, (folder / "t1.jpg").read_bytes()),
        "hanks": add(ws, (folder / "Tom_Hanks_54745.png").read_bytes(), "png"),
        "blurred": add(ws, jpeg(cv2.GaussianBlur(astronaut, (0, 0), 5))),
        "grey": add(ws, jpeg(np.repeat(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2))),
        "noise": add(ws, jpeg((np.random.default_rng(0).random((200, 200, 3)) * 255).astype(np.uint8))),
        "corrupt": add(ws, jpeg(astronaut)[:3000]),
    }
    config = AlignConfig(filters={"min_inter_ocular": 10})  # Tom Hanks' photo is small
    manifest = run(config, ws)
    return ws, shas, (config, manifest)


def test_faces_decisions_and_reasons(aligned_workspace) -> None:
    ws, shas, (config, manifest) = aligned_workspace
    faces = effective_faces(ws, config.hash)
    by_image = {name: faces[faces["image_sha256"] == sha] for name, sha in shas.items()}
    assert len(by_image["group"]) == 6 and len(by_image["hanks"]) == 1
    pair = pd.concat([by_image["astronaut"], by_image["mirrored"]])
    assert sorted(pair["decision"]) == ["kept", "rejected"]  # a mirrored, recompressed copy is a duplicate
    survivor, copy = pair[pair["decision"] == "kept"].iloc[0], pair[pair["decision"] == "rejected"].iloc[0]
    assert copy["reason"] == "duplicate_near" and copy["duplicate_of"] == survivor["face_id"]
    assert json.loads(survivor["quality"])["inter_ocular"] >= json.loads(copy["quality"])["inter_ocular"]
    assert by_image["blurred"]["reason"].tolist() == ["blurry"]
    assert by_image["grey"]["reason"].tolist() == ["grayscale"]
    assert by_image["noise"]["reason"].tolist() == ["no_face"]
    assert by_image["corrupt"]["reason"].tolist() == ["decode_error"]
    assert manifest.counts["reason_no_face"] == 1 and manifest.counts["reason_decode_error"] == 1


def test_kept_faces_have_crops_geometry_and_identities(aligned_workspace) -> None:
    ws, shas, (config, _) = aligned_workspace
    faces = effective_faces(ws, config.hash)
    kept = faces[faces["decision"] == "kept"]
    assert kept["identity_cluster"].notna().all()
    assert kept["identity_cluster"].nunique() == len(kept)  # different people, one cluster each
    assert len(kept) >= 4  # the astronaut and at least three of the group photo's six faces pass
    for row in kept.to_dict("records"):
        crop = Image.open(ws.aligned.path(row["aligned_sha256"]))
        assert crop.size == (256, 256)
        assert len(row["quad"]) == 8 and len(row["transform"]) == 9 and len(row["landmarks68"]) == 136
        assert 0 < row["align_confidence"] <= 1 and row["phash"] and len(row["descriptor"]) == 128
    assert verify_workspace(ws).ok


def test_rerun_recomputes_nothing(aligned_workspace) -> None:
    ws, shas, (config, _) = aligned_workspace
    rows_before = len(ws.table("faces"))
    again = run(config, ws)
    assert again.counts["images_skipped_done"] == len(shas) and again.counts["tasks"] == 0
    assert len(ws.table("faces")) == rows_before
    changed = run(config.model_copy(update={"filters": config.filters.model_copy(update={"min_blur": 0.0})}), ws)
    assert changed.counts["images_skipped_done"] == 0  # another config hash: processed again


def test_progress_ticks_give_totals_per_batch_and_for_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """tqdm writes nothing into Prefect's run log: the `sdgan.align` logger gets a final tick line per batch."""
    import logging

    from skimage import data

    from data_catalog.runs import map_in_process

    astronaut = data.astronaut()
    ws = Workspace(tmp_path / "ws")
    for image in (jpeg(astronaut), jpeg(astronaut)[:3000],
                  jpeg((np.random.default_rng(1).random((120, 120, 3)) * 255).astype(np.uint8))):
        add(ws, image)
    caplog.set_level(logging.INFO, logger="sdgan.align")
    run(AlignConfig(), ws)
    lines = [r.getMessage() for r in caplog.records if r.name == "sdgan.align"]
    finals = [line for line in lines if ": done " in line]
    assert len(finals) == 1 and finals[0].startswith("align: done 3/3 image (100%)")
    assert finals[0].endswith("kept=1 rejected=2")  # the astronaut; the corrupt image and the noise
    assert lines[-1].startswith("align: finished 3 images (0 done before) in 1 task(s); 1 faces, 1 kept")

    caplog.clear()  # fanned out (here: in process, one image a task): one bar and one final line per batch
    run(AlignConfig(images_per_task=1, output_size=128), ws, map_batches=map_in_process)
    finals = sorted(r.getMessage() for r in caplog.records if r.name == "sdgan.align" and ": done " in r.getMessage())
    assert [line.split(",")[0] for line in finals] == [f"align {i}/3: done 1/1 image (100%)" for i in (1, 2, 3)]


class TestAlignStageContract(StageContract):
    stage = "align"

    def prepare(self, tmp_path: Path) -> tuple[Workspace, list]:
        from skimage import data

        ws = Workspace(tmp_path / "ws")
        astronaut = data.astronaut()
        add(ws, jpeg(astronaut))
        add(ws, jpeg(np.ascontiguousarray(astronaut[:, ::-1]), 80))
        return ws, []

    def config(self) -> AlignConfig:
        return AlignConfig(output_size=128)

    def changed_config(self) -> AlignConfig:
        return AlignConfig(output_size=128, filters={"min_blur": 50})
