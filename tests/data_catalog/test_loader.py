from __future__ import annotations

import io
import itertools
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from data_catalog.loader import (
    MegnDataset,
    ShardSplitError,
    assign_shards,
    distributed_context,
    list_shards,
    make_loader,
    read_samples,
)
from data_catalog.shards import ShardSample, write_shards
from tests.data_catalog.test_shards import make_samples

N_SHARDS, PER_SHARD = 8, 5


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("megn")
    write_shards(make_samples(N_SHARDS * PER_SHARD), folder, "train", max_count=PER_SHARD)
    return folder


@pytest.fixture(scope="module")
def samples() -> list[ShardSample]:
    return make_samples(N_SHARDS * PER_SHARD)


@pytest.fixture(scope="module")
def all_keys(samples: list[ShardSample]) -> list[str]:
    return [s.key for s in samples]


def keys_of(dataset: MegnDataset) -> list[str]:
    return [sample["key"] for sample in dataset]


def loader_keys(loader: torch.utils.data.DataLoader) -> list[str]:
    return [key for batch in loader for key in batch["key"]]


@pytest.fixture(autouse=True)
def _no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_list_shards_sorted_and_ignores_other_files(tmp_path: Path, dataset_dir: Path) -> None:
    shards = list_shards(dataset_dir, "train")
    assert [p.name for p in shards] == [f"megn-train-{i:06d}.tar" for i in range(N_SHARDS)]
    (tmp_path / "megn-train-000001.tar").write_bytes(b"")
    (tmp_path / ".tmp-abc-megn-train-000000.tar").write_bytes(b"")
    (tmp_path / "megn-val-000000.tar").write_bytes(b"")
    (tmp_path / "megn-train-000000_stats.json").write_bytes(b"")
    assert list_shards(tmp_path, "train") == [tmp_path / "megn-train-000001.tar"]
    with pytest.raises(FileNotFoundError, match=r"no megn-test-NNNNNN.tar shards in"):
        list_shards(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="missing"):
        list_shards(tmp_path / "missing", "train")


def test_assign_shards_round_robin_over_global_readers() -> None:
    shards = list(range(10))
    got = {(r, w): assign_shards(shards, r, 2, w, 2) for r in range(2) for w in range(2)}
    assert got == {(0, 0): [0, 4, 8], (0, 1): [1, 5, 9], (1, 0): [2, 6], (1, 1): [3, 7]}
    assert assign_shards(shards, 0, 1) == shards
    with pytest.raises(ShardSplitError, match=r"^3 shards cannot feed world_size x num_workers = 4 readers; "
                                              r"write more shards \(shard.max_count\) or use fewer workers$"):
        assign_shards([0, 1, 2], 0, 2, 0, 2)
    with pytest.raises(ValueError, match="rank"):
        assign_shards(shards, 2, 2)
    with pytest.raises(ValueError, match="worker"):
        assign_shards(shards, 0, 2, 2, 2)


def test_two_ranks_without_workers_cover_every_sample_once(dataset_dir: Path, all_keys: list[str]) -> None:
    shards = list_shards(dataset_dir, "train")
    per_rank = [keys_of(MegnDataset(shards, rank=r, world_size=2)) for r in range(2)]
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == all_keys
    assert per_rank[0][:PER_SHARD] == all_keys[:PER_SHARD]  # rank 0 starts with shard 0, in key order


def test_two_ranks_with_two_workers_cover_every_sample_once(dataset_dir: Path, all_keys: list[str]) -> None:
    shards = list_shards(dataset_dir, "train")
    got: list[str] = []
    for rank in range(2):
        loader = make_loader(shards, batch_size=4, num_workers=2, rank=rank, world_size=2, shuffle_buffer=6)
        got += loader_keys(loader)
    assert Counter(got) == Counter(all_keys)


def test_too_few_shards_raise_eagerly_and_inside_workers(dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shards = list_shards(dataset_dir, "train")[:3]
    message = "3 shards cannot feed world_size x num_workers = 4 readers"
    with pytest.raises(ShardSplitError, match=message):
        make_loader(shards, batch_size=2, num_workers=2, rank=0, world_size=2)
    with pytest.raises(ShardSplitError, match=message):
        list(MegnDataset(shards, rank=0, world_size=4))
    # a DataLoader built by hand skips make_loader's check: __iter__ checks again with the worker count.
    # (Simulated: torch takes 5 s per worker to shut down a pool whose workers raised.)
    dataset = MegnDataset(shards, rank=0, world_size=1)
    assert len(list(dataset)) == 3 * PER_SHARD
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: SimpleNamespace(id=1, num_workers=4))
    with pytest.raises(ShardSplitError, match=message):
        iter(dataset)


def test_tensors_have_shape_dtype_and_range(dataset_dir: Path, samples: list[ShardSample]) -> None:
    shards = list_shards(dataset_dir, "train")[:1]
    floats = list(MegnDataset(shards, rank=0, world_size=1))
    raw = list(MegnDataset(shards, rank=0, world_size=1, image_dtype="uint8"))
    for got_float, got_raw, want in zip(floats, raw, samples):
        pixels = np.asarray(Image.open(io.BytesIO(want.image)).convert("RGB"))
        assert got_raw["image"].dtype == torch.uint8 and got_raw["image"].shape == (3, 8, 8)
        assert torch.equal(got_raw["image"], torch.from_numpy(pixels.copy()).permute(2, 0, 1))
        image = got_float["image"]
        assert image.dtype == torch.float32 and image.shape == (3, 8, 8)
        assert image.min() >= -1.0 and image.max() <= 1.0
        assert torch.allclose(image, got_raw["image"].float() / 127.5 - 1.0)
        assert (got_float["key"], got_float["label"], got_float["metadata"]) == (want.key, want.label, want.metadata)
    with pytest.raises(ValueError, match="image_dtype"):
        MegnDataset(shards, image_dtype="half")


def test_loader_batches_collate_images_and_keep_metadata_lists(dataset_dir: Path) -> None:
    loader = make_loader(list_shards(dataset_dir, "train"), batch_size=4, rank=0, world_size=1)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["label"].tolist() == [0, 1, 2, 3]
    assert batch["key"] == [f"face_{i:05d}" for i in range(4)]
    assert [m["index"] for m in batch["metadata"]] == [0, 1, 2, 3]


def test_set_epoch_reshuffles_deterministically(dataset_dir: Path, all_keys: list[str]) -> None:
    shards = list_shards(dataset_dir, "train")

    def order(epoch: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> list[str]:
        dataset = MegnDataset(shards, rank=rank, world_size=world_size, shuffle_buffer=8, seed=seed)
        dataset.set_epoch(epoch)
        return keys_of(dataset)

    epoch0, epoch1 = order(0), order(1)
    assert epoch0 == order(0) and epoch1 == order(1)
    assert epoch0 != epoch1 and epoch0 != all_keys and order(0, seed=1) != epoch0
    assert sorted(epoch0) == sorted(epoch1) == all_keys
    for epoch in (0, 1):  # every rank draws the same shard permutation: still exactly once per epoch
        assert Counter(order(epoch, 0, 2) + order(epoch, 1, 2)) == Counter(all_keys)
    assert keys_of(MegnDataset(shards, rank=0, world_size=1)) == all_keys  # no buffer: stored order


def test_repeat_keeps_going_past_one_pass(dataset_dir: Path, all_keys: list[str]) -> None:
    dataset = MegnDataset(list_shards(dataset_dir, "train"), rank=0, world_size=1, repeat=True, shuffle_buffer=4)
    keys = [s["key"] for s in itertools.islice(dataset, 2 * len(all_keys))]
    assert set(keys) == set(all_keys) and max(Counter(keys).values()) >= 2


def test_env_rank_and_world_size_are_honoured(monkeypatch: pytest.MonkeyPatch, dataset_dir: Path,
                                              all_keys: list[str]) -> None:
    shards = list_shards(dataset_dir, "train")
    assert distributed_context() == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed_context() == (1, 2)
    dataset = MegnDataset(shards)
    assert (dataset.rank, dataset.world_size) == (1, 2)
    assert keys_of(dataset) == keys_of(MegnDataset(shards, rank=1, world_size=2))
    assert all_keys[PER_SHARD] == keys_of(dataset)[0]  # shard 1 is rank 1's first
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 does not fit WORLD_SIZE=2"):
        distributed_context()


def test_initialised_process_group_wins_over_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert distributed_context() == (0, 1)
    finally:
        torch.distributed.destroy_process_group()


def test_read_samples_returns_what_was_written(dataset_dir: Path, samples: list[ShardSample]) -> None:
    assert list(read_samples(list_shards(dataset_dir, "train"))) == samples
    assert list(read_samples([])) == []
