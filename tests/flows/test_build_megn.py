"""`prefect deployment run build-megn/demo` end to end through a real Prefect server, as a user would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import webdataset as wds

from data_catalog import Workspace
from data_catalog.hashing import sha256_file
from data_catalog.loader import MegnDataset, list_shards
from tests.conftest import BIN, PROJECT_ROOT
from tests.flows.prefect_helpers import last_flow_run, serving

pytestmark = pytest.mark.prefect_server

DEPLOYMENT = "build-megn/demo"
# A smaller demo corpus keeps the three builds of this module within a few minutes on 2 cores.
SMALL_CORPUS = 'crawl.emulator.corpus_options={"variants_per_class": 3}'


@pytest.fixture(scope="module")
def served(prefect_server: str, tmp_path_factory: pytest.TempPathFactory):
    with serving(DEPLOYMENT, prefect_server, tmp_path_factory.mktemp("serve") / "serve.log") as env:
        yield env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("megn") / "ws"


def build(env: dict, workspace: Path, *overrides: str) -> dict:
    params = {"workspace": str(workspace), "overrides": [SMALL_CORPUS, *overrides]}
    result = subprocess.run([str(BIN / "prefect"), "deployment", "run", DEPLOYMENT, "--params", json.dumps(params),
                             "--watch", "--watch-interval", "1"],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    flow_run = last_flow_run(DEPLOYMENT)
    assert flow_run.state.is_completed()
    return flow_run.state.result()


def statuses(result: dict) -> dict[str, str]:
    return {o["stage"]: o["status"] for o in result["stages"]}


def shard_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_first_build_writes_shards_that_give_every_sample_once(served: dict, workspace: Path) -> None:
    result = build(served, workspace)
    assert statuses(result) == {"crawl": "ran", "align": "ran", "shard": "ran"}
    dataset = result["outputs"]["shard"]["items"]
    folder = Path(dataset["folder"])
    assert Path(dataset["card"]).is_file() and (folder / "grid.png").is_file()
    ws = Workspace(workspace, create=False)
    samples = ws.table("samples")
    samples = samples[samples["dataset_version"] == dataset["version"]]
    # most augmented variants are near duplicates once aligned, so a small corpus keeps a dozen or so faces
    assert len(samples) >= 8 and len(set(samples["attribute"])) >= 3
    assert set(samples["split"]) == {"train", "val"}

    # the stock webdataset library reads every catalog sample, with its label
    stock = {}
    for shard in sorted(folder.glob("megn-*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            stock[sample["__key__"]] = int(sample["cls"])
    assert stock == dict(zip(samples["key"], samples["attribute_id"].astype(int)))

    # our DDP reader, two ranks simulated: every training sample exactly once
    shards = list_shards(folder, "train")
    keys = [item["key"] for rank in (0, 1) for item in MegnDataset(shards, rank=rank, world_size=2)]
    assert sorted(keys) == sorted(samples[samples["split"] == "train"]["key"])

    verify = subprocess.run([str(BIN / "sdgan"), "catalog", "verify", "--workspace", str(workspace)],
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_second_build_is_fully_cached_and_byte_identical(served: dict, workspace: Path) -> None:
    ws = Workspace(workspace, create=False)
    (version,) = ws.dataset_versions()
    before = shard_hashes(ws.root / "primary" / "megn" / version)
    result = build(served, workspace)
    assert statuses(result) == {"crawl": "cached", "align": "cached", "shard": "cached"}
    assert result["outputs"]["shard"]["items"]["version"] == version
    assert shard_hashes(ws.root / "primary" / "megn" / version) == before


def test_changing_a_filter_threshold_reruns_only_align_and_shard(served: dict, workspace: Path) -> None:
    ws = Workspace(workspace, create=False)
    (old,) = ws.dataset_versions()
    result = build(served, workspace, "align.filters.min_inter_ocular=40")
    assert statuses(result) == {"crawl": "cached", "align": "ran", "shard": "ran"}
    new = result["outputs"]["shard"]["items"]["version"]
    assert new != old and set(ws.dataset_versions()) == {old, new}
    samples = ws.table("samples")
    assert (samples["dataset_version"] == new).sum() < (samples["dataset_version"] == old).sum()


def test_export_writes_a_stylegan_dataset_zip_of_the_version(workspace: Path, tmp_path: Path) -> None:
    import zipfile

    ws = Workspace(workspace, create=False)
    version = sorted(ws.dataset_versions())[0]
    out = tmp_path / "megn.zip"
    done = subprocess.run([str(BIN / "sdgan"), "export", "--workspace", str(workspace), "--version", version,
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    samples = ws.table("samples")
    train = samples[(samples["dataset_version"] == version) & (samples["split"] == "train")]
    with zipfile.ZipFile(out) as archive:
        labels = json.loads(archive.read("dataset.json"))["labels"]
    assert sorted(label for _, label in labels) == sorted(train["attribute_id"].astype(int))
    ambiguous = subprocess.run([str(BIN / "sdgan"), "export", "--workspace", str(workspace), "--out", str(out)],
                               capture_output=True, text=True, timeout=300)
    assert ambiguous.returncode == 2 and "--version" in ambiguous.stderr  # two versions exist by now


def test_train_stylegan2_deployment_trains_on_a_version_and_is_cached_the_second_time(
        prefect_server: str, workspace: Path, tmp_path: Path) -> None:
    deployment = "train-stylegan2/demo"
    ws = Workspace(workspace, create=False)
    version = sorted(ws.dataset_versions())[0]
    params = {"workspace": str(workspace), "dataset": version,
              "overrides": ["schedule.total_kimg=0.016", "schedule.grid_seeds=4"]}

    def train() -> dict:
        result = subprocess.run([str(BIN / "prefect"), "deployment", "run", deployment, "--params", json.dumps(params),
                                 "--watch", "--watch-interval", "1"],
                                cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        return last_flow_run(deployment).state.result()

    with serving(deployment, prefect_server, tmp_path / "serve.log") as env:
        first = train()
        assert statuses(first) == {"train-stylegan2": "ran"}
        model = first["outputs"]["train-stylegan2"]["items"]
        assert Path(model["checkpoint"]).is_file() and model["kimg"] == "0.016"
        assert json.loads((Path(model["run folder"]) / "dataset.json").read_text())["dataset_version"] == version
        second = train()
        assert statuses(second) == {"train-stylegan2": "cached"}
        assert second["outputs"]["train-stylegan2"]["items"]["run id"] == model["run id"]
