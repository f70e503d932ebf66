"""Atomic file writes: readers see the old file or the complete new one, never a prefix.

The temporary file lives in the destination folder (same filesystem, so `os.replace` is atomic) and
starts with a dot so that every listing in the catalog ignores it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"


def temp_path_for(path: Path) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")


def is_temp_file(path: Path) -> bool:
    return path.name.startswith(TEMP_PREFIX)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem allows opening a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | Path, durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary handle; on clean exit the bytes appear at `path` in one step.

    `durable=False` skips the fsyncs: the write is still atomic for readers and survives a killed
    process (the page cache outlives it), just not a power loss; callers that batch writes sync once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    """`atomic_writer` for bytes in hand, on plain os calls: the blob store writes one file per image, and
    pathlib plus a buffered file object cost about twice the syscalls themselves."""
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(folder or ".", exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(Path(folder or "."))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
