"""Append-only Parquet tables: `catalog/<table>/<run_id>/part-<time>-<id>.parquet`.

Each append writes one new file atomically, so a reader (or a crash) never sees half a batch, and
concurrent writers never touch the same file.
"""

from __future__ import annotations

import re
import time
import uuid
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
        self, name: str, columns: list[str] | None = None, filter: pc.Expression | None = None
    ) -> pa.Table:
        schema = schema_of(name)
        files = self.files(name)
        if not files:
            table = schema.empty_table()
            return table.select(columns) if columns else table
        # An explicit schema makes columns added after a file was written read back as nulls.
        dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
        return dataset.to_table(columns=columns, filter=filter)

    def read(self, name: str, columns: list[str] | None = None, filter: pc.Expression | None = None) -> pd.DataFrame:
        return self.read_arrow(name, columns, filter).to_pandas(types_mapper=_pandas_types)

    def count(self, name: str) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files(name))

    def run_ids(self, name: str) -> list[str]:
        return sorted({f.parent.name for f in self.files(name)})
