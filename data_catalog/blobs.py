"""Content-addressed blob store: `<root>/<first two hex>/<sha256>.<ext>`.

A blob's name is its hash, so writing is idempotent (the same bytes are stored once however many URLs
produced them) and verification is a re-hash.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from data_catalog.atomic import atomic_write_bytes, is_temp_file
from data_catalog.hashing import is_sha256, sha256_bytes

_EXT = re.compile(r"^[a-z0-9]{1,10}$")


class BlobNotFoundError(KeyError):
    """No blob with this hash is stored."""


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _folder(self, sha256: str) -> Path:
        if not is_sha256(sha256):
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

    def put(self, data: bytes, ext: str, durable: bool = True) -> str:
        """Store `data` and return its sha256. Storing bytes that are already there is a no-op.

        `durable=False` leaves syncing to the caller (see `sync`), for bulk writers like the crawler.
        """
        ext = self._normalise_ext(ext)
        sha256 = sha256_bytes(data)
        if self.find(sha256, ext) is None:
            atomic_write_bytes(self._folder(sha256) / f"{sha256}.{ext}", data, durable)
        return sha256

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
