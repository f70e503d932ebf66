"""The fusion-pairs reader: finding a run, decoding one attribute, a pass that covers every pair once across
ranks, a deterministic (seed, pass) order, and a resumed stream that continues exactly where it stopped."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from data_catalog.workspace import Workspace
from tests.training.fusion.pairs_helpers import CANONICAL, SIZE, STYLE_DIM, make_pairs_run, write_generator
from training.fusion import data as fusion_data
from training.fusion.data import (
    PairsNotFound,
    find_pairs_run,
    held_out_batches,
    pair_batches,
    read_pairs,
    shard_counts,
)

N_TRAIN = 10


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, str]:
    root = tmp_path_factory.mktemp("data")
    workspace = Workspace(root / "ws")
    generator = write_generator(root / "g.pt")
    manifest = make_pairs_run(workspace, generator, n_train=N_TRAIN, n_test=3, attributes=("face_mask", "sunglasses"))
    return workspace, manifest.run_id


def keys(batches, count: int) -> list[list[str]]:
    return [batch["key"] for batch in itertools.islice(batches, count)]


def test_finds_the_run_by_id_folder_or_as_current(pairs, tmp_path: Path) -> None:
    workspace, run_id = pairs
    by_id = find_pairs_run(workspace, run_id)
    assert by_id.run_id == run_id and by_id.index.attributes == ["face_mask", "sunglasses"]
    assert find_pairs_run(workspace, None).folder == by_id.folder
    by_folder = find_pairs_run(workspace, str(by_id.folder))
    assert by_folder.manifest is not None and by_folder.manifest.run_id == run_id
    assert [p.name for p in by_id.shards("train")] == ["fusion-train-000000.tar", "fusion-train-000001.tar"]
    assert shard_counts(by_id.shards("train")) == [5, 5]
    with pytest.raises(PairsNotFound, match="no fusion-pairs run 'nope'"):
        find_pairs_run(workspace, "nope")
    with pytest.raises(PairsNotFound, match="run fusion-pairs first"):
        find_pairs_run(Workspace(tmp_path / "empty"), None)
    with pytest.raises(FileNotFoundError, match="no 'val' shards"):
        by_id.shards("val")


def test_decodes_one_attribute_as_tensors(pairs) -> None:
    workspace, run_id = pairs
    run = find_pairs_run(workspace, run_id)
    items = read_pairs(run.shards("test"), "sunglasses")
    assert [item["key"] for item in items] == ["test_000000", "test_000001", "test_000002"]
    item = items[0]
    assert item["w"].shape == item["nb"].shape == (STYLE_DIM,) and item["w"].dtype == torch.float32
    for name in ("origin", "gt", "template"):
        assert item[name].shape == (3, SIZE, SIZE) and item[name].dtype == torch.uint8
    assert item["region"].shape == (1, SIZE, SIZE) and item["canonical"].shape == (9, CANONICAL, CANONICAL)
    assert item["canonical"].dtype == torch.float16
    assert len(read_pairs(run.shards("train"), "face_mask", limit=4)) == 4
    batches = list(held_out_batches(run.shards("train"), "face_mask", 7, 3))
    assert [len(b["key"]) for b in batches] == [3, 3, 1] and batches[0]["origin"].shape == (3, 3, SIZE, SIZE)


def test_a_pass_covers_every_pair_once_across_ranks_and_the_order_is_seeded(pairs) -> None:
    workspace, run_id = pairs
    run = find_pairs_run(workspace, run_id)
    shards = run.shards("train")
    counts = shard_counts(shards)
    per_rank = [keys(pair_batches(shards, counts, "face_mask", 5, rank=r, world_size=2, shuffle_buffer=4, seed=3), 1)[0]
                for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == [f"train_{i:06d}" for i in range(N_TRAIN)]
    one = keys(pair_batches(shards, counts, "face_mask", 2, shuffle_buffer=4, seed=3), 10)
    again = keys(pair_batches(shards, counts, "face_mask", 2, shuffle_buffer=4, seed=3), 10)
    other = keys(pair_batches(shards, counts, "face_mask", 2, shuffle_buffer=4, seed=4), 10)
    assert one == again and one != other
    first_pass, second_pass = [k for b in one[:5] for k in b], [k for b in one[5:] for k in b]
    assert sorted(first_pass) == sorted(second_pass) and first_pass != second_pass  # reshuffled per pass
    ordered = [k for b in keys(pair_batches(shards, counts, "face_mask", 5), 2) for k in b]
    assert ordered == [f"train_{i:06d}" for i in range(N_TRAIN)]  # shuffle_buffer 0: shard and key order


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_continues_exactly(pairs, workers: int) -> None:
    workspace, run_id = pairs
    run = find_pairs_run(workspace, run_id)
    shards = run.shards("train")
    counts = shard_counts(shards)
    options = {"num_workers": workers, "shuffle_buffer": 3, "seed": 11}
    straight = keys(pair_batches(shards, counts, "sunglasses", 3, **options), 16)
    for start in (1, 7, 13):  # 13 batches of 3 from 1 reader (or 2 workers): past several pass boundaries
        resumed = keys(pair_batches(shards, counts, "sunglasses", 3, start_batch=start, **options), 16 - start)
        assert resumed == straight[start:], start


def test_whole_passes_are_skipped_without_reading_them(pairs, monkeypatch) -> None:
    workspace, run_id = pairs
    run = find_pairs_run(workspace, run_id)
    shards = run.shards("train")
    opened: list[str] = []
    original = fusion_data.shard_samples

    def counting(urls):
        for item in urls:
            opened.append(item["url"])
            yield from original([item])

    monkeypatch.setattr(fusion_data, "shard_samples", counting)
    batches = pair_batches(shards, shard_counts(shards), "face_mask", 2, start_batch=21, shuffle_buffer=2, seed=0)
    first = next(batches)  # 42 samples in: pass 4 (10 a pass), 2 samples into it
    assert len(first["key"]) == 2 and len(opened) <= 2  # only the current pass's shards were opened


def test_too_few_shards_for_the_readers_is_an_error(pairs) -> None:
    from data_catalog.loader import ShardSplitError

    workspace, run_id = pairs
    run = find_pairs_run(workspace, run_id)
    shards = run.shards("test")  # two shards
    with pytest.raises(ShardSplitError, match="cannot feed"):
        pair_batches(shards, shard_counts(shards), "face_mask", 1, rank=0, world_size=3)
    with pytest.raises(ShardSplitError, match="cannot feed"):
        pair_batches(shards, shard_counts(shards), "face_mask", 1, num_workers=3)
