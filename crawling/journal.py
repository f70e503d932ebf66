"""Write-ahead journal of a crawl run: every finished row is a JSON line before it is in a Parquet batch.

Rows are batched into Parquet for efficiency, so a kill -9 would lose the rows of the open batch; the
journal keeps them, and the next run appends them to the catalog under the run that produced them. A
torn last line (killed mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

JOURNAL = "journal.jsonl"
QUERIES_DONE = "queries_done.txt"


def _default(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class Journal:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(folder / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._done_fd = os.open(folder / QUERIES_DONE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def write(self, table: str, row: dict[str, Any]) -> None:
        line = json.dumps({"table": table, "row": row}, default=_default, ensure_ascii=False) + "\n"
        os.write(self._fd, line.encode("utf-8"))  # one write(2) on an O_APPEND fd: lines never interleave

    def query_done(self, query_id: str) -> None:
        with self._lock:
            os.write(self._done_fd, (query_id + "\n").encode())

    def close(self) -> None:
        for fd in (self._fd, self._done_fd):
            os.fsync(fd)
            os.close(fd)


def read_journal(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    path = folder / JOURNAL
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn last line of a killed run
            yield entry["table"], entry["row"]


def read_queries_done(folder: Path) -> set[str]:
    path = folder / QUERIES_DONE
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if len(line.strip()) == 20}
