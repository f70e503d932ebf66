"""Plain URL lists (txt, csv or parquet): re-download, ingest a list made elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from crawling.sources.base import Result, clean_title

OPTIONAL_COLUMNS = ("page_url", "title", "licence")


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
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: URL lists are .txt, .csv or .parquet")
    if "url" not in frame.columns:
        raise ValueError(f"{path}: no 'url' column (columns: {list(frame.columns)})")
    for rank, row in enumerate(frame.to_dict("records")):
        if not str(row["url"]).strip():
            continue
        extra = {c: (str(row[c]) if row.get(c) not in (None, "") and not pd.isna(row.get(c)) else None) for c in OPTIONAL_COLUMNS if c in row}
        yield Result(url=str(row["url"]).strip(), rank=rank, page=0, page_url=extra.get("page_url"),
                     title=clean_title(extra.get("title")), licence=extra.get("licence"))
