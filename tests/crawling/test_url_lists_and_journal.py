from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from crawling.journal import Journal, read_journal, read_queries_done
from crawling.sources.urls import read_url_list


def test_txt_csv_and_parquet_lists(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("# list\nhttp://h/1.jpg\n\nhttp://h/2.jpg\n")
    assert [(r.url, r.rank) for r in read_url_list(tmp_path / "a.txt")] == [("http://h/1.jpg", 0), ("http://h/2.jpg", 1)]
    pd.DataFrame({"url": ["http://h/3.jpg", ""], "title": ["<b>three</b>", ""], "licence": ["cc-by", ""]}).to_csv(tmp_path / "b.csv", index=False)
    (row,) = list(read_url_list(tmp_path / "b.csv"))
    assert (row.url, row.title, row.licence) == ("http://h/3.jpg", "three", "cc-by")
    pd.DataFrame({"url": ["http://h/4.jpg"], "page_url": ["http://h/p"]}).to_parquet(tmp_path / "c.parquet")
    assert [r.page_url for r in read_url_list(tmp_path / "c.parquet")] == ["http://h/p"]


def test_bad_lists_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(read_url_list(tmp_path / "nope.txt"))
    pd.DataFrame({"link": ["x"]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match="no 'url' column"):
        list(read_url_list(tmp_path / "d.csv"))


def test_journal_survives_a_torn_last_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write("images", {"sha256": "a" * 64, "fetched_at": pd.Timestamp("2026-01-01", tz="UTC")})
    journal.write("candidates", {"url": "http://x/1.jpg"})
    journal.query_done("q" * 20)
    journal.close()
    with open(tmp_path / "journal.jsonl", "ab") as handle:
        handle.write(b'{"table": "candidates", "row": {"url": "http://x/2')  # killed mid-line
    entries = list(read_journal(tmp_path))
    assert [t for t, _ in entries] == ["images", "candidates"]
    assert entries[0][1]["fetched_at"].startswith("2026-01-01")
    assert read_queries_done(tmp_path) == {"q" * 20}
