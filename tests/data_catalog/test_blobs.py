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
