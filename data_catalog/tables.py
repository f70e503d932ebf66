"""Append-only Parquet tables: `catalog/<table>/<run_id>/part-<time>-<id>.parquet`.

Each append writes one new file atomically, so a reader (or a crash) never sees half a batch, and
concurrent writers never touch the same file.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from data_catalog.atomic import atomic_writer, is_temp_file
from data_catalog.schemas import TABLE_SCHEMAS

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SchemaError(ValueError):
    """A DataFrame does not match the declared schema of the table it is appended to."""


class UnknownTableError(KeyError):
    pass


class TableReadError(pa.ArrowInvalid):
    """Parts of a table cannot be read (truncated or corrupt files); the message names each one."""

    def __init__(self, name: str, bad: list[tuple[Path, str]]) -> None:
        self.table, self.parts = name, bad
        listed = "; ".join(f"{path}: {reason}" for path, reason in bad)
        super().__init__(f"table {name!r}: {len(bad)} unreadable part file(s): {listed}")


# Called with each part file that cannot be read and why; reads that pass one skip those parts and go on.
OnUnreadable = Callable[[Path, str], None]


def _reason(path: Path, exc: Exception) -> str:
    """The error without pyarrow's repetition of the path (the caller names the file)."""
    text = str(exc).replace(f"Could not open Parquet input source '{path}': ", "").replace("\n", " ").strip()
    return text or type(exc).__name__


def _pandas_types(type_: pa.DataType) -> object:
    # Nullable integers stay integers instead of turning into floats when a null is present.
    return pd.Int64Dtype() if pa.types.is_integer(type_) else None


def schema_of(name: str) -> pa.Schema:
    try:
        return TABLE_SCHEMAS[name]
    except KeyError:
        raise UnknownTableError(f"unknown table {name!r}; tables: {', '.join(sorted(TABLE_SCHEMAS))}") from None


def to_arrow(name: str, frame: pd.DataFrame) -> pa.Table:
    """Check `frame` against the table's schema column by column and convert it, or say what is wrong."""
    schema = schema_of(name)
    missing = [f.name for f in schema if f.name not in frame.columns]
    unknown = [c for c in frame.columns if c not in schema.names]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if unknown:
            parts.append(f"unknown column(s) {unknown}")
        raise SchemaError(f"table {name!r}: {'; '.join(parts)}")
    arrays = []
    for field in schema:
        column = frame[field.name]
        try:
            array = pa.array(column, type=field.type, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            sample = column.dropna().head(1).tolist()
            raise SchemaError(
                f"table {name!r}: column {field.name!r} must be {field.type}, "
                f"got dtype {column.dtype} (first value {sample[0] if sample else None!r}): {exc}"
            ) from None
        if not field.nullable and array.null_count:
            raise SchemaError(f"table {name!r}: column {field.name!r} must not be null ({array.null_count} null rows)")
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=schema)


class TableStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def files(self, name: str) -> list[Path]:
        schema_of(name)
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*/*.parquet") if not is_temp_file(p))

    def append(self, name: str, frame: pd.DataFrame, run_id: str) -> Path | None:
        """Validate and write one batch; returns the new file, or None for an empty batch."""
        if not _RUN_ID.match(run_id):
            raise ValueError(f"run id {run_id!r} must be 1-128 letters, digits, '_', '.' or '-'")
        frame = frame.copy()
        if "run_id" in frame.columns and not (frame["run_id"] == run_id).all():
            raise SchemaError(f"table {name!r}: rows carry a run_id other than {run_id!r}")
        frame["run_id"] = run_id
        table = to_arrow(name, frame)
        if table.num_rows == 0:
            return None
        path = self.root / name / run_id / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_writer(path) as handle:
            pq.write_table(table, handle, compression="zstd")
        return path

    def read_arrow(
        self, name: str, columns: list[str] | None = None, filter: pc.Expression | None = None,
        on_unreadable: OnUnreadable | None = None,
    ) -> pa.Table:
        """The table's rows. An unreadable part is a TableReadError naming every such file, unless
        `on_unreadable` is given: then it is told about each one and the readable parts are returned."""
        schema = schema_of(name)
        files = self.files(name)
        empty = schema.empty_table().select(columns) if columns else schema.empty_table()
        if not files:
            return empty
        try:
            return self._dataset_table(files, schema, columns, filter)
        except (pa.ArrowException, OSError):
            pass  # find out which parts, one at a time (only on this path: the whole read is the fast one)
        tables, bad = [], []
        for path in files:
            try:
                tables.append(self._dataset_table([path], schema, columns, filter))
            except (pa.ArrowException, OSError) as exc:
                bad.append((path, _reason(path, exc)))
        self._report(name, bad, on_unreadable)
        return pa.concat_tables(tables) if tables else empty

    @staticmethod
    def _dataset_table(files: list[Path], schema: pa.Schema, columns: list[str] | None,
                       filter: pc.Expression | None) -> pa.Table:
        # An explicit schema makes columns added after a file was written read back as nulls.
        dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
        return dataset.to_table(columns=columns, filter=filter)

    @staticmethod
    def _report(name: str, bad: list[tuple[Path, str]], on_unreadable: OnUnreadable | None) -> None:
        if bad and on_unreadable is None:
            raise TableReadError(name, bad)
        for path, reason in bad:
            on_unreadable(path, reason)  # type: ignore[misc]

    def read(self, name: str, columns: list[str] | None = None, filter: pc.Expression | None = None,
             on_unreadable: OnUnreadable | None = None) -> pd.DataFrame:
        return self.read_arrow(name, columns, filter, on_unreadable).to_pandas(types_mapper=_pandas_types)

    def count(self, name: str, on_unreadable: OnUnreadable | None = None) -> int:
        """Rows in the table, from the part footers (an unreadable one: as in `read_arrow`)."""
        total, bad = 0, []
        for path in self.files(name):
            try:
                total += pq.ParquetFile(path).metadata.num_rows
            except (pa.ArrowException, OSError) as exc:
                bad.append((path, _reason(path, exc)))
        self._report(name, bad, on_unreadable)
        return total

    def unreadable(self, name: str) -> list[tuple[Path, str]]:
        """(part file, reason) for every part of the table whose footer cannot be read (truncated files)."""
        bad: list[tuple[Path, str]] = []
        self.count(name, on_unreadable=lambda path, reason: bad.append((path, reason)))
        return bad

    def run_ids(self, name: str) -> list[str]:
        return sorted({f.parent.name for f in self.files(name)})
