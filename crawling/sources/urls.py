"""Plain URL lists (txt, csv or parquet): re-download, ingest a list made elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from crawling.sources.base import Result, clean_title

OPTIONAL_COLUMNS = ("page_url", "title", "licence")
CHUNK_ROWS = 50_000


def read_url_list(path: str | Path) -> Iterator[Result]:
    """Rows of the list as results, in file order; blank lines and `#` comments in txt files are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"URL list not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".lst", ""):
        with open(path, encoding="utf-8") as handle:
            rank = 0
            for line in handle:
                url = line.strip()
                if url and not url.startswith("#"):
                    yield Result(url=url, rank=rank, page=0)
                    rank += 1
        return
    if suffix == ".csv":
        chunks = pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=CHUNK_ROWS)
    elif suffix == ".parquet":
        chunks = (batch.to_pandas() for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS))
    else:
        raise ValueError(f"{path}: URL lists are .txt, .csv or .parquet")
    rank = 0
    for frame in chunks:  # streamed in chunks: a list of millions of URLs never sits in memory
        if "url" not in frame.columns:
            raise ValueError(f"{path}: no 'url' column (columns: {list(frame.columns)})")
        for row in frame.to_dict("records"):
            url = str(row["url"] or "").strip()
            if url:
                extra = {c: _text(row.get(c)) for c in OPTIONAL_COLUMNS}
                yield Result(url=url, rank=rank, page=0, page_url=extra["page_url"],
                             title=clean_title(extra["title"]), licence=extra["licence"])
            rank += 1


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return None
    return str(value)
