"""Content-addressed blob store: `<root>/<first two hex>/<sha256>.<ext>`.

A blob's name is its hash, so writing is idempotent (the same bytes are stored once however many URLs
produced them) and verification is a re-hash.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from data_catalog.atomic import atomic_write_bytes, is_temp_file
from data_catalog.hashing import sha256_bytes

_EXT = re.compile(r"^[a-z0-9]{1,10}$")
_SHA256 = re.compile(r"[0-9a-f]{64}")  # data_catalog.hashing.is_sha256, as a regex: put checks every hash


class BlobNotFoundError(KeyError):
    """No blob with this hash is stored."""


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # Per fan-out folder, the first 64 bits of every hash stored there (see `_stored`); filled lazily.
        # Shared by threads without a lock: dict.setdefault and set.add are atomic.
        self._listed: dict[str, set[int]] = {}

    def _folder(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2]

    @staticmethod
    def _normalise_ext(ext: str) -> str:
        ext = ext.lower().lstrip(".")
        if not _EXT.match(ext):
            raise ValueError(f"blob extension must be 1-10 lowercase letters or digits, got {ext!r}")
        return ext

    def find(self, sha256: str, ext: str | None = None) -> Path | None:
        folder = self._folder(sha256)
        if ext is not None and (folder / f"{sha256}.{ext}").is_file():
            return folder / f"{sha256}.{ext}"  # the common case, without listing the folder
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return None
        prefix = f"{sha256}."
        for name in names:
            if name.startswith(prefix):
                return folder / name
        return None

    def find_many(self, hashes: Iterable[str]) -> dict[str, Path | None]:
        """`find` for many hashes, listing each fan-out folder once rather than once per hash."""
        by_folder: dict[Path, list[str]] = {}
        for sha256 in hashes:
            by_folder.setdefault(self._folder(sha256), []).append(sha256)
        found: dict[str, Path | None] = {}
        for folder, wanted in by_folder.items():
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                names = []
            stored = {name.split(".", 1)[0]: name for name in reversed(names)}  # the first one wins, as in find
            found.update({sha256: folder / stored[sha256] if sha256 in stored else None for sha256 in wanted})
        return found

    def put(self, data: bytes, ext: str, durable: bool = True, sha256: str | None = None) -> str:
        """Store `data` and return its sha256. Storing bytes that are already there is a no-op.

        `durable=False` leaves syncing to the caller (see `sync`), for bulk writers like the crawler.
        `sha256`: the caller's sha256 of these very bytes when it has it already (the crawler hashes before
        its opt-out check), so an image is not hashed twice; it names the file, so it must be right.
        """
        ext = self._normalise_ext(ext)
        if sha256 is None:
            sha256 = sha256_bytes(data)
        folder = os.fspath(self._folder(sha256))
        path = os.path.join(folder, f"{sha256}.{ext}")
        if not self._stored(folder, sha256, path):
            atomic_write_bytes(path, data, durable)
            self._note(folder, sha256)
        return sha256

    def _stored(self, folder: str, sha256: str, path: str) -> bool:
        """Whether `sha256` is stored, under any extension (put's check, done once per new blob).

        With this extension it is one stat. For the others, each fan-out folder is listed once per store
        object and the listing kept (our own writes added), instead of once per new blob: at a few hundred
        thousand blobs a folder holds thousands of names and listing it costs a millisecond. A hash the kept
        listing has is confirmed on disk; a blob another process stores under another extension after the
        listing may be stored a second time (the same bytes under both names), never missed or lost."""
        if os.path.isfile(path):
            return True
        key = os.path.basename(folder)
        listed = self._listed.get(key)
        if listed is None:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                names = []
            fresh = {int(name[:16], 16) for name in names if _SHA256.fullmatch(name.split(".", 1)[0])}
            listed = self._listed.setdefault(key, fresh)  # another thread's listing, if it was first
        if int(sha256[:16], 16) not in listed:
            return False
        return self.find(sha256) is not None  # 64 bits matched: look for the full name

    def _note(self, folder: str, sha256: str) -> None:
        listed = self._listed.get(os.path.basename(folder))
        if listed is not None:
            listed.add(int(sha256[:16], 16))

    @staticmethod
    def sync() -> None:
        """Flush every non-durable write to disk (one call for a whole batch of puts)."""
        os.sync()

    def exists(self, sha256: str) -> bool:
        return self.find(sha256) is not None

    def path(self, sha256: str) -> Path:
        found = self.find(sha256)
        if found is None:
            raise BlobNotFoundError(f"blob {sha256} is not in {self.root}")
        return found

    def open(self, sha256: str) -> BinaryIO:
        return open(self.path(sha256), "rb")  # noqa: SIM115 - the caller owns the handle

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def __iter__(self) -> Iterator[tuple[str, Path]]:
        """Every stored blob as (sha256, path); temporary files are skipped."""
        if not self.root.is_dir():
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(folder.iterdir()):
                if path.is_file() and not is_temp_file(path):
                    yield path.name.split(".", 1)[0], path

    def temp_files(self) -> list[Path]:
        """Leftovers of writes killed mid-way (kill -9); never visible as blobs, safe to delete."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*/*") if is_temp_file(p))
