"""Byte-reproducible WebDataset shards: the same samples give the same tar files, hashes and stats.

The tar headers are written here rather than by `tarfile`, because `tarfile`'s output changes between
Python releases (recent ones leave devmajor/devminor empty for regular files, older ones wrote zeros): a
shard's sha256 must not depend on the interpreter that wrote it. Each member is a plain POSIX ustar entry with mtime 0,
uid/gid 0, no user/group names and mode 0o644; the archive ends with the two zero blocks POSIX asks for and
no record padding, so a shard's size is exactly what `max_bytes` budgets.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from data_catalog.atomic import atomic_write_text, atomic_writer
from data_catalog.hashing import canonical_json

KEY_PATTERN: re.Pattern[str] = re.compile(r"^[A-Za-z0-9_-]+$")
ATTRIBUTE_NAMES: dict[int, str] = {0: "none", 1: "face_mask", 2: "sunglasses", 3: "frame_glasses"}
ATTRIBUTE_IDS: dict[str, int] = {name: index for index, name in ATTRIBUTE_NAMES.items()}
IMAGE_EXTS = ("jpg", "png")
STATS_DIR = "stats"  # per-shard stats live in this subfolder of the shards' folder

_BLOCK = 512
_END_BYTES = 2 * _BLOCK  # two zero blocks end a tar archive
_NAME_FIELD = 100
_MAX_KEY_LEN = _NAME_FIELD - len(".json")  # every member name must fit the ustar name field
_MAX_MEMBER_SIZE = 8**11 - 1  # 11 octal digits in the size field
_NAME_PART = re.compile(r"^[A-Za-z0-9_]+$")  # prefix/split: no dash, so shard names split unambiguously


@dataclass(frozen=True)
class ShardSample:
    """One training sample as stored: encoded image, JSON metadata and an integer class label."""

    key: str
    image: bytes
    image_ext: str
    metadata: dict
    label: int


@dataclass(frozen=True)
class ShardInfo:
    """What `<stem>_stats.json` records about one shard, so readers can check it without opening the tar."""

    name: str
    split: str
    index: int
    count: int
    bytes: int
    sha256: str
    first_key: str
    last_key: str
    labels: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able form: label ids become strings (JSON keys), in numeric order."""
        data = asdict(self)
        data["labels"] = {str(label): n for label, n in sorted(self.labels.items())}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ShardInfo:
        values = dict(data)
        values["labels"] = {int(label): int(n) for label, n in data.get("labels", {}).items()}
        return cls(**values)


def _written_stats_path(shard: Path) -> Path:
    """Where the writer puts a shard's stats: `stats/<stem>_stats.json` beside the shard.

    Not next to the tar files: a folder holding only shards (and a README) is what dataset loaders read as
    the data, and Hugging Face's `load_dataset(folder)` picked the JSON stats over the tars as the dataset.
    """
    return shard.parent / STATS_DIR / f"{shard.stem}_stats.json"


def stats_path(shard: str | Path) -> Path:
    """`megn-train-000000.tar` -> `stats/megn-train-000000_stats.json`, or the `megn-train-000000_stats.json`
    next to it that folders written before the stats moved hold."""
    shard = Path(shard)
    current = _written_stats_path(shard)
    legacy = shard.with_name(f"{shard.stem}_stats.json")
    return legacy if not current.is_file() and legacy.is_file() else current


def read_stats(shard: str | Path) -> ShardInfo:
    return ShardInfo.from_dict(json.loads(stats_path(shard).read_text(encoding="utf-8")))


def encode_image(image: Image.Image | np.ndarray, fmt: str = "jpg", quality: int = 95) -> bytes:
    """Encode as RGB with every encoder option pinned and no metadata (EXIF, ICC, text chunks, dates).

    The pixels are copied into a fresh image first, so nothing from the source's `info` leaks into the
    output; the bytes then depend only on the pixels and the libjpeg/zlib build.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"encode_image needs a uint8 array, got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(f"encode_image needs an HxW, HxWx3 or HxWx4 array, got shape {image.shape}")
        image = Image.fromarray(np.ascontiguousarray(image))
    elif not isinstance(image, Image.Image):
        raise TypeError(f"encode_image needs a PIL image or a numpy array, got {type(image).__name__}")
    rgb = image.convert("RGB")
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    buffer = io.BytesIO()
    if fmt == "jpg":
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
        clean.save(buffer, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False, progressive=False)
    elif fmt == "png":
        clean.save(buffer, format="PNG", compress_level=6, optimize=False)
    else:
        raise ValueError(f"image format must be one of {IMAGE_EXTS}, got {fmt!r}")
    return buffer.getvalue()


def shard_name(prefix: str, split: str, index: int) -> str:
    """`megn-train-000000.tar`; six digits keep lexical order equal to index order up to a million shards."""
    for what, value in (("prefix", prefix), ("split", split)):
        if not _NAME_PART.match(value):
            raise ValueError(f"shard {what} must match [A-Za-z0-9_]+, got {value!r}")
    if not 0 <= index <= 999_999:
        raise ValueError(f"shard index must be in 0..999999, got {index}")
    return f"{prefix}-{split}-{index:06d}.tar"


def _octal(value: int, width: int) -> bytes:
    """A numeric ustar field: zero-padded octal digits and a terminating NUL."""
    return f"{value:0{width - 1}o}".encode("ascii") + b"\0"


def tar_header(name: str, size: int) -> bytes:
    """One ustar header block for a regular file with fixed owner, mode and mtime."""
    encoded = name.encode("ascii")
    if len(encoded) > _NAME_FIELD:
        raise ValueError(f"tar member name longer than {_NAME_FIELD} bytes: {name!r}")
    if not 0 <= size <= _MAX_MEMBER_SIZE:
        raise ValueError(f"tar member {name!r} is too large for ustar ({size} bytes)")
    header = b"".join([
        encoded.ljust(_NAME_FIELD, b"\0"),
        _octal(0o644, 8),  # mode
        _octal(0, 8),  # uid
        _octal(0, 8),  # gid
        _octal(size, 12),
        _octal(0, 12),  # mtime
        b" " * 8,  # checksum, computed over the header with this field as spaces
        b"0",  # regular file
        b"\0" * 100,  # linkname
        b"ustar\0" + b"00",
        b"\0" * 32,  # uname
        b"\0" * 32,  # gname
        b"\0" * 8,  # devmajor
        b"\0" * 8,  # devminor
        b"\0" * 155,  # prefix
    ]).ljust(_BLOCK, b"\0")
    checksum = f"{sum(header):06o}".encode("ascii") + b"\0 "
    return header[:148] + checksum + header[156:]


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _validate(sample: ShardSample, previous_key: str | None) -> None:
    key = sample.key
    if not isinstance(key, str) or not key:
        raise ValueError("sample key must be a non-empty string")
    if not KEY_PATTERN.match(key):
        raise ValueError(f"sample key {key!r} must match {KEY_PATTERN.pattern} (no dots: WebDataset splits on them)")
    if len(key) > _MAX_KEY_LEN:
        raise ValueError(f"sample key {key!r} is longer than {_MAX_KEY_LEN} characters")
    if previous_key is not None and key <= previous_key:
        raise ValueError(f"sample keys must be strictly increasing: {key!r} comes after {previous_key!r}")
    if sample.image_ext not in IMAGE_EXTS:
        raise ValueError(f"sample {key!r}: image_ext must be one of {IMAGE_EXTS}, got {sample.image_ext!r}")
    label = sample.label
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label < 0:
        raise ValueError(f"sample {key!r}: label must be an int >= 0, got {label!r}")
    if not isinstance(sample.image, (bytes, bytearray, memoryview)) or len(sample.image) == 0:
        raise ValueError(f"sample {key!r}: image must be non-empty encoded bytes")
    if not isinstance(sample.metadata, dict):
        raise ValueError(f"sample {key!r}: metadata must be a dict, got {type(sample.metadata).__name__}")


def _validate_key(key: object, previous_key: str | None) -> None:
    """The key rules of `_validate`, for samples given as members."""
    if not isinstance(key, str) or not key:
        raise ValueError("sample key must be a non-empty string")
    if not KEY_PATTERN.match(key):
        raise ValueError(f"sample key {key!r} must match {KEY_PATTERN.pattern} (no dots: WebDataset splits on them)")
    if previous_key is not None and key <= previous_key:
        raise ValueError(f"sample keys must be strictly increasing: {key!r} comes after {previous_key!r}")


def _members(sample: ShardSample) -> list[tuple[str, bytes]]:
    """The sample's tar members in their fixed order: label, image, metadata."""
    try:
        metadata = canonical_json(sample.metadata).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sample {sample.key!r}: metadata is not JSON-able: {exc}") from exc
    return [
        (f"{sample.key}.cls", str(int(sample.label)).encode("ascii")),
        (f"{sample.key}.{sample.image_ext}", bytes(sample.image)),
        (f"{sample.key}.json", metadata),
    ]


def _sample_bytes(members: list[tuple[str, bytes]]) -> int:
    return sum(_BLOCK + _padded(len(data)) for _, data in members)


class _OpenShard:
    """The shard being filled: an atomic writer plus the running size, hash and counts its stats need.

    Size and sha256 are taken from the bytes as they are written, so a shard is never read back.
    """

    def __init__(self, folder: Path, prefix: str, split: str, index: int) -> None:
        self.name = shard_name(prefix, split, index)
        self.path = folder / self.name
        self.split = split
        self.index = index
        self._context = atomic_writer(self.path)
        self._handle = self._context.__enter__()
        self._digest = hashlib.sha256()
        self._open = True
        self.size = 0
        self.count = 0
        self.first_key = ""
        self.last_key = ""
        self.labels: dict[int, int] = {}

    def _write(self, data: bytes) -> None:
        self._handle.write(data)
        self._digest.update(data)
        self.size += len(data)

    def add(self, key: str, label: int | None, members: list[tuple[str, bytes]]) -> None:
        """Append one sample's members; `label` None for samples without a class (it is then not counted)."""
        for name, data in members:
            self._write(tar_header(name, len(data)))
            self._write(data)
            self._write(b"\0" * (_padded(len(data)) - len(data)))
        self.first_key = self.first_key or key
        self.last_key = key
        if label is not None:
            self.labels[label] = self.labels.get(label, 0) + 1
        self.count += 1

    def close(self) -> ShardInfo:
        self._write(b"\0" * _END_BYTES)
        self._open = False
        self._context.__exit__(None, None, None)
        info = ShardInfo(name=self.name, split=self.split, index=self.index, count=self.count, bytes=self.size,
                         sha256=self._digest.hexdigest(), first_key=self.first_key, last_key=self.last_key,
                         labels=dict(sorted(self.labels.items())))
        text = json.dumps(info.to_dict(), sort_keys=True, indent=1, ensure_ascii=False) + "\n"
        atomic_write_text(_written_stats_path(self.path), text)
        return info

    def abort(self, exc: BaseException) -> None:
        """Drop the half-written shard: its temp file goes, the final name never appears."""
        if self._open:
            self._open = False
            self._context.__exit__(type(exc), exc, exc.__traceback__)


def write_shards(samples: Iterable[ShardSample], folder: str | Path, split: str, prefix: str = "megn",
                 max_count: int = 1000, max_bytes: int = 1 << 30) -> list[ShardInfo]:
    """Stream samples into `<prefix>-<split>-NNNNNN.tar` shards plus `stats/<shard stem>_stats.json` for each.

    A shard is closed before a sample that would take it past `max_count` samples or `max_bytes` bytes
    (the whole file, headers and end blocks included); a sample larger than `max_bytes` on its own gets a
    shard to itself. Keys must be strictly increasing so that shard order is key order and reruns are
    byte-identical. On an invalid sample the shard being filled is discarded and the error raised; shards
    already closed stay (write into a fresh folder per dataset version).
    """
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    folder = Path(folder)
    shard_name(prefix, split, 0)  # validates prefix and split before anything is written
    infos: list[ShardInfo] = []
    current: _OpenShard | None = None
    previous_key: str | None = None
    try:
        for sample in samples:
            _validate(sample, previous_key)
            previous_key = sample.key
            members = _members(sample)
            size = _sample_bytes(members)
            if current is not None and (current.count >= max_count
                                        or current.size + size + _END_BYTES > max_bytes):
                infos.append(current.close())
                current = None
            if current is None:
                current = _OpenShard(folder, prefix, split, len(infos))
            current.add(sample.key, int(sample.label), members)
        if current is not None:
            infos.append(current.close())
            current = None
    except BaseException as exc:
        if current is not None:
            current.abort(exc)
        raise
    return infos


def write_member_shard(folder: str | Path, prefix: str, split: str, index: int,
                       samples: Iterable[tuple[str, Sequence[tuple[str, bytes]]]]) -> ShardInfo:
    """Write exactly one shard `<prefix>-<split>-<index>.tar` (and its stats) from samples given as members.

    For stages whose samples are not an image plus a label (fusion pairs: a dozen arrays and images per key):
    each sample is its key and its `(member name, bytes)` list, every name `<key>.<extension>`, written in the
    order given. Same byte rules as `write_shards` (fixed headers, keys strictly increasing, atomic: a failure
    leaves no shard). The stats' `labels` stay empty. One call per shard lets a resumable stage write each of
    its chunks as its own shard, so a finished chunk is a finished file.
    """
    folder = Path(folder)
    shard_name(prefix, split, index)  # validates the name before anything is written
    current = _OpenShard(folder, prefix, split, index)
    previous_key: str | None = None
    try:
        for key, members in samples:
            _validate_key(key, previous_key)
            previous_key = key
            named = [(str(name), bytes(data)) for name, data in members]
            if not named:
                raise ValueError(f"sample {key!r} has no members")
            for name, _ in named:
                extension = name[len(key) + 1:] if name.startswith(key + ".") else ""
                if not extension:
                    raise ValueError(f"member {name!r} of sample {key!r} must be named {key!r} + '.<extension>'")
            current.add(key, None, named)
        if current.count == 0:
            raise ValueError(f"shard {current.name} would hold no samples")
        return current.close()
    except BaseException as exc:
        current.abort(exc)
        raise


def read_all_stats(folder: str | Path, split: str, prefix: str = "megn") -> list[ShardInfo]:
    """Every shard's stats for one split, in shard order (a cheap dataset summary for cards and checks).

    Reads `stats/` and, for folders written before the stats moved there, the shards' own folder."""
    pattern = re.compile(rf"^{re.escape(prefix)}-{re.escape(split)}-\d{{6}}_stats\.json$")
    found: dict[str, Path] = {}
    for where in (Path(folder), Path(folder) / STATS_DIR):  # the subfolder wins for a name in both
        if where.is_dir():
            found.update({p.name: p for p in where.iterdir() if pattern.match(p.name)})
    return [ShardInfo.from_dict(json.loads(found[name].read_text(encoding="utf-8"))) for name in sorted(found)]


__all__ = ["ATTRIBUTE_NAMES", "IMAGE_EXTS", "KEY_PATTERN", "STATS_DIR", "ShardInfo", "ShardSample", "encode_image",
           "read_all_stats", "read_stats", "shard_name", "stats_path", "tar_header", "write_member_shard",
           "write_shards"]

