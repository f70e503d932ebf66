"""The shard stage on a catalog built by hand: labels, opt-out, identity splits, versions, samples rows."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from data_catalog import StageConfig, Workspace, stage_run
from data_catalog.dataset import ShardConfig, assign_splits, label_of, run
from data_catalog.hashing import sha256_bytes
from tests.stage_kit import StageContract


class UpstreamConfig(StageConfig):
    STAGE = "upstream"


# image -> (attributes of the queries that found it, identity cluster, url)
IMAGES = {
    "a": (["face_mask"], 0, "https://a.example/1.jpg"),
    "b": (["face_mask", "face_mask", "none"], 0, "https://a.example/2.jpg"),  # majority: face_mask
    "c": (["sunglasses"], 1, "https://b.example/3.jpg"),
    "d": (["frame_glasses", "sunglasses"], 2, "https://b.example/4.jpg"),  # a tie: label_conflict
    "e": (["none"], 3, "https://blocked.example/5.jpg"),  # opted out by domain
    "f": (["none"], 4, "https://c.example/6.jpg"),
    "g": (["frame_glasses"], 5, "https://c.example/7.jpg"),
}
ATTRIBUTE_OF_QUERY = ["none", "face_mask", "sunglasses", "frame_glasses"]


def _sha(name: str) -> str:
    return sha256_bytes(name.encode())


def _aligned(workspace: Workspace, seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return workspace.aligned.put(buffer.getvalue(), "png")


def build_catalog(workspace: Workspace) -> tuple:
    """Runs of `crawl` and `align` with the tables the shard stage reads."""
    queries = [{"query_id": f"q-{a}", "plan_hash": "p" * 8, "engine": "google", "attribute": a, "keyword": f"kw {a}",
                "language": "en", "window": None, "max_results": 10} for a in ATTRIBUTE_OF_QUERY]
    candidates, faces = [], []
    for seed, (name, (attributes, cluster, url)) in enumerate(sorted(IMAGES.items())):
        sha = _sha(name)
        for rank, attribute in enumerate(attributes):
            candidates.append({"url": url if rank == 0 else f"{url}?dup={rank}", "engine": "google",
                               "query_id": f"q-{attribute}", "page": 0, "rank": rank, "page_url": None, "title": name,
                               "licence": "cc-by" if name == "a" else None, "status": "ok", "reason": None,
                               "http_status": 200, "bytes": 10, "sha256": sha, "width": 64, "height": 64,
                               "content_type": "image/jpeg", "fetched_at": pd.Timestamp("2026-01-01", tz="UTC")})
        faces.append({"face_id": f"{sha[:20]}_0", "image_sha256": sha, "face_index": 0, "box": [0.0, 0.0, 9.0, 9.0],
                      "landmarks5": [1.0] * 10, "landmarks68": [1.0] * 136, "detector": "retinaface",
                      "detector_version": "x", "det_score": 0.99, "align_confidence": 0.9, "landmark_sources": "{}",
                      "quad": [0.0] * 8, "decision": "kept", "reason": None,
                      "aligned_sha256": _aligned(workspace, seed), "identity_cluster": cluster, "config_hash": "h",
                      "transform": [0.0] * 9, "quality": "{}", "phash": "0" * 16, "descriptor": None,
                      "duplicate_of": None})
    candidates.append({**candidates[0], "url": "https://dead.example/x.jpg", "status": "failed", "reason": "http_404",
                       "sha256": None})
    faces.append({**faces[0], "face_id": "rejected_0", "decision": "rejected", "reason": "blur"})
    with stage_run(workspace, "crawl", UpstreamConfig()) as crawl:
        crawl.append("queries", pd.DataFrame(queries))
        crawl.append("candidates", pd.DataFrame(candidates))
    with stage_run(workspace, "align", UpstreamConfig(), [crawl.manifest]) as align:
        align.append("faces", pd.DataFrame(faces))
    align.manifest.config_hash = "h"  # the faces rows above carry this align config hash
    return crawl.manifest, align.manifest


@pytest.fixture
def catalog(workspace: Workspace, tmp_path: Path) -> tuple:
    optout = tmp_path / "optout.txt"
    optout.write_text("domain:blocked.example\n", encoding="utf-8")
    return (*build_catalog(workspace), str(optout))


def shard_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("megn-*.tar"))


def files(folder: Path) -> dict[str, bytes]:
    """Every file of a version folder (stats/ included) by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_labels_follow_the_query_majority() -> None:
    assert label_of([{"attribute": "face_mask"}, {"attribute": "face_mask"}, {"attribute": "none"}]) == ("face_mask", "query")
    assert label_of([{"attribute": "sunglasses"}, {"attribute": "frame_glasses"}]) == (None, "label_conflict")
    assert label_of([{"attribute": None}]) == (None, "no_label")


def test_splits_are_seeded_and_never_empty() -> None:
    identities = [f"id{i}" for i in range(20)]
    splits = assign_splits(identities, 0.25, seed=3)
    assert splits == assign_splits(identities, 0.25, seed=3) and splits != assign_splits(identities, 0.25, seed=4)
    assert 1 <= list(splits.values()).count("val") < 20
    assert set(assign_splits(["x", "y"], 0.01, 0).values()) == {"train", "val"}
    assert set(assign_splits(identities, 0.0, 0).values()) == {"train"}


def test_shard_stage_writes_a_traceable_identity_split_version(workspace: Workspace, catalog: tuple) -> None:
    crawl, align, optout = catalog
    config = ShardConfig(max_count=2, min_shards=1, val_fraction=0.3, optout=optout)
    manifest = run(config, workspace, [crawl, align])
    assert manifest.status == "completed"
    (version,) = workspace.dataset_versions()
    folder = workspace.root / "primary" / "megn" / version
    # a (mask), b (mask by majority), c (sunglasses), f (none), g (frame glasses); d conflicts, e opted out
    assert manifest.counts["samples"] == 5
    assert manifest.counts["rejected_label_conflict"] == 1 and manifest.counts["rejected_opt_out"] == 1
    samples = workspace.table("samples")
    assert sorted(samples["key"]) == sorted(f"{_sha(n)[:20]}_0" for n in "abcfg")
    assert (samples["dataset_version"] == version).all()
    read = {}
    for shard in shard_files(folder):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            read[sample["__key__"]] = sample
            assert samples.set_index("key").loc[sample["__key__"], "shard"] == f"primary/megn/{version}/{shard.name}"
    assert set(read) == set(samples["key"])
    meta = json.loads(read[f"{_sha('a')[:20]}_0"]["json"])
    assert meta["attribute"] == "face_mask" and int(read[f"{_sha('a')[:20]}_0"]["cls"]) == 1
    assert meta["licence"] == "cc-by" and meta["sources"][0]["url"] == "https://a.example/1.jpg"
    assert meta["sources"][0]["keyword"] == "kw face_mask"
    # a and b share an identity cluster, so they share a split
    assert json.loads(read[f"{_sha('b')[:20]}_0"]["json"])["split"] == meta["split"]
    identity_splits = samples.assign(identity=[json.loads(read[k]["json"])["identity"] for k in samples["key"]])
    assert identity_splits.groupby("identity")["split"].nunique().max() == 1
    assert {p.name for p in folder.iterdir()} >= {"README.md", "grid.png", "config.json", "version.json", "stats"}
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "http_404" in card and "label_conflict" in card and "blur" in card


def test_same_catalog_and_config_give_the_same_bytes_and_no_duplicate_rows(workspace: Workspace, catalog: tuple) -> None:
    crawl, align, optout = catalog
    config = ShardConfig(max_count=2, optout=optout)
    first = run(config, workspace, [crawl, align])
    folder = workspace.root / "primary" / "megn" / workspace.dataset_versions()[0]
    before = files(folder)
    shutil.rmtree(folder)  # rebuilt from the catalog, byte for byte
    second = run(config, workspace, [crawl, align])
    assert files(folder) == before
    assert first.content_hash == second.content_hash
    assert len(workspace.table("samples")) == first.counts["samples"]  # rows are not appended twice


def test_encoding_settings_change_the_version(workspace: Workspace, catalog: tuple) -> None:
    crawl, align, _ = catalog
    run(ShardConfig(jpeg_quality=90), workspace, [crawl, align])
    run(ShardConfig(image_format="png"), workspace, [crawl, align])
    versions = workspace.dataset_versions()
    assert len(versions) == 2
    extensions = set()
    for version in versions:
        with tarfile.open(workspace.root / "primary" / "megn" / version / "megn-train-000000.tar") as tar:
            extensions.add(frozenset(Path(n).suffix for n in tar.getnames()))
    assert extensions == {frozenset({".cls", ".jpg", ".json"}), frozenset({".cls", ".png", ".json"})}


def test_a_missing_upstream_run_is_a_clear_error(workspace: Workspace) -> None:
    with pytest.raises(ValueError, match="needs a completed crawl run"):
        run(ShardConfig(), workspace, [])


def test_a_folder_left_by_a_killed_run_is_replaced(workspace: Workspace, catalog: tuple) -> None:
    crawl, align, _ = catalog
    run(ShardConfig(), workspace, [crawl, align])
    (version,) = workspace.dataset_versions()
    folder = workspace.root / "primary" / "megn" / version
    expected = files(folder)
    shutil.rmtree(folder)
    stale = folder.with_name(f".{version}.partial-99999")  # a run killed while writing this version
    stale.mkdir()
    (stale / "megn-train-000000.tar").write_bytes(b"truncated")
    assert workspace.dataset_versions() == []  # an incomplete folder is no version
    run(ShardConfig(), workspace, [crawl, align])
    assert files(folder) == expected
    assert not stale.exists()


class TestShardStageContract(StageContract):
    stage = "shard"

    def prepare(self, tmp_path: Path) -> tuple[Workspace, list]:
        workspace = Workspace(tmp_path / "ws")
        for name in IMAGES:  # the raw bytes whose sha256 the synthetic candidates name, so the catalog verifies
            assert workspace.blobs.put(name.encode(), "jpg") == _sha(name)
        return workspace, list(build_catalog(workspace))

    def config(self) -> ShardConfig:
        return ShardConfig(max_count=2, min_shards=1, val_fraction=0.3)

    def changed_config(self) -> ShardConfig:
        return ShardConfig(max_count=2, min_shards=1, val_fraction=0.3, jpeg_quality=80)


def test_a_version_folder_loads_with_hugging_face_datasets(workspace: Workspace, catalog: tuple, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`datasets.load_dataset(folder)` reads the shards (not the stats) as train/val, with the class names."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # read before `datasets` is imported
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import datasets

    crawl, align, optout = catalog
    run(ShardConfig(max_count=2, val_fraction=0.3, optout=optout), workspace, [crawl, align])
    (version,) = workspace.dataset_versions()
    folder = workspace.dataset_dir(version)
    assert sorted(p.name for p in folder.glob("*.json")) == ["config.json", "version.json"]  # the stats are in stats/
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))
    samples = workspace.table("samples")
    assert set(loaded) == {"train", "val"}
    for split, rows in loaded.items():
        expected = samples[samples["split"] == split].set_index("key")["attribute_id"].astype(int).to_dict()
        assert {row["__key__"]: row["cls"] for row in rows} == expected
        assert rows.features["cls"].names == ["none", "face_mask", "sunglasses", "frame_glasses"]
        for row in rows:
            assert row["jpg"].size == (32, 32) and row["json"]["face_id"] == row["__key__"]
            assert row["json"]["split"] == split and row["json"]["sources"][0]["url"].startswith("https://")


def test_the_card_declares_every_metadata_field(workspace: Workspace, catalog: tuple) -> None:
    """Fields `datasets` is not told about are dropped silently: a new `<key>.json` field must be declared."""
    from data_catalog.dataset import METADATA_FEATURES

    crawl, align, optout = catalog
    run(ShardConfig(optout=optout), workspace, [crawl, align])
    folder = workspace.dataset_dir(workspace.dataset_versions()[0])
    sample = next(iter(wds.WebDataset(str(shard_files(folder)[0]), shardshuffle=False)))
    meta = json.loads(sample["json"])
    assert set(meta) == set(METADATA_FEATURES)
    assert set(meta["sources"][0]) == set(METADATA_FEATURES["sources"][0])


def test_versions_written_before_the_readme_and_stats_folder_still_read(workspace: Workspace, catalog: tuple) -> None:
    """Older versions keep `card.md` and `<shard>_stats.json` beside the shards."""
    from data_catalog.dataset import describe
    from data_catalog.shards import read_all_stats

    crawl, align, optout = catalog
    manifest = run(ShardConfig(max_count=2, optout=optout), workspace, [crawl, align])
    folder = workspace.dataset_dir(workspace.dataset_versions()[0])
    stats = read_all_stats(folder, "train")
    (folder / "README.md").rename(folder / "card.md")
    for path in (folder / "stats").iterdir():
        path.rename(folder / path.name)
    (folder / "stats").rmdir()
    assert read_all_stats(folder, "train") == stats and len(stats) >= 2
    outputs = describe(workspace, manifest)
    assert outputs is not None and outputs.markdown == str(folder / "card.md") and outputs.items["load"] == "webdataset"
