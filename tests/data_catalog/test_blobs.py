from __future__ import annotations

import os
from pathlib import Path

import pytest

from data_catalog.blobs import BlobNotFoundError, BlobStore
from data_catalog.hashing import sha256_bytes


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = store.put(b"abc", ".JPG")
    assert sha == sha256_bytes(b"abc")
    path = store.path(sha)
    assert path == tmp_path / sha[:2] / f"{sha}.jpg"
    mtime = path.stat().st_mtime_ns
    assert store.put(b"abc", "jpeg") == sha  # same bytes, other extension: stored once
    assert [p for _, p in store] == [path] and path.stat().st_mtime_ns == mtime
    with store.open(sha) as handle:
        assert handle.read() == b"abc"
    assert store.read(sha) == b"abc"


def test_unknown_and_malformed_hashes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(BlobNotFoundError):
        store.path("0" * 64)
    with pytest.raises(ValueError, match="not a sha256"):
        store.path("../../etc/passwd")
    with pytest.raises(ValueError, match="extension"):
        store.put(b"x", "j/pg")


def test_crash_during_write_leaves_no_partial_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        store.put(b"payload", "png")
    sha = sha256_bytes(b"payload")
    assert not store.exists(sha)
    assert list(store) == [] and store.temp_files() == []
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_leftover_temp_file_is_invisible(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = sha256_bytes(b"data")
    folder = tmp_path / sha[:2]
    folder.mkdir()
    leftover = folder / f".tmp-deadbeef-{sha}.png"
    leftover.write_bytes(b"da")  # what a kill -9 mid-write leaves behind
    assert not store.exists(sha) and list(store) == []
    assert store.temp_files() == [leftover]
    assert store.put(b"data", "png") == sha and store.read(sha) == b"data"


def test_put_finds_a_blob_under_another_extension_after_the_folder_listing_is_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    first = store.put(b"one", "png")  # lists the folder of "one" and keeps the listing
    other = BlobStore(tmp_path).put(b"two", "webp")  # another process's write, after the listing
    assert store.put(b"one", "jpg") == first and store.put(b"two", "webp") == other
    assert sorted(p.name for _, p in store) == sorted([f"{first}.png", f"{other}.webp"])
    sha = store.put(b"three", "png", durable=False, sha256=sha256_bytes(b"three"))
    assert store.put(b"three", "gif") == sha and store.read(sha) == b"three"
    assert [p.suffix for s, p in store if s == sha] == [".png"]


def test_put_writes_again_a_blob_deleted_after_the_listing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = store.put(b"gone", "png")
    store.path(sha).unlink()  # e.g. a repair removed a corrupt blob
    assert store.put(b"gone", "jpg") == sha and store.read(sha) == b"gone"


def test_find_many_lists_each_folder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path)
    shas = [store.put(bytes([i]), "png") for i in range(40)]
    missing = sha256_bytes(b"never stored")
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str | os.PathLike[str]) -> list[str]:
        listed.append(os.fspath(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    found = store.find_many([*shas, missing])
    assert found == {**{sha: store.path(sha) for sha in shas}, missing: None}
    assert len(listed) - len(shas) == len({sha[:2] for sha in [*shas, missing]})  # store.path lists once per sha


def test_atomic_write_bytes_makes_the_folder_and_leaves_nothing_behind_on_failure(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from data_catalog.atomic import atomic_write_bytes

    target = tmp_path / "a" / "b" / "blob.bin"
    atomic_write_bytes(target, b"x" * 100_000, durable=False)
    assert target.read_bytes() == b"x" * 100_000

    def short_write(fd: int, data: bytes) -> int:  # os.write may write less than asked
        return real_write(fd, bytes(data[:1000]))

    real_write = os.write
    monkeypatch.setattr(os, "write", short_write)
    atomic_write_bytes(target, b"y" * 5000)
    assert target.read_bytes() == b"y" * 5000

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(target, b"z")
    assert target.read_bytes() == b"y" * 5000 and [p.name for p in target.parent.iterdir()] == ["blob.bin"]
