"""`sdgan crawl` and the crawl flow through a real Prefect server."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawling.emulator import SearchEmulator
from data_catalog import Workspace
from flows.cli import main as cli
from tests.crawl_corpus import PLAIN_FILES

pytestmark = pytest.mark.prefect_server


def write_plan(path: Path, engine: str, keyword: str) -> Path:
    path.write_text(
        "name: cli\nversion: 1\nmax_per_query: 20\nattributes:\n"
        f"  none:\n    - {{language: ko, engines: [{engine}], keywords: ['{keyword}']}}\n",
        encoding="utf-8",
    )
    return path


def test_crawl_cli_with_endpoint_cache_and_retry(prefect_server: str, corpus: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    ws = tmp_path / "ws"
    plan = write_plan(tmp_path / "plan.yaml", "naver", "얼굴 사진")
    with SearchEmulator(corpus, faults=["error500"]) as emulator:
        args = ["crawl", "--workspace", str(ws), "--source", "naver", "--plan", str(plan),
                "--endpoint", emulator.endpoints["naver"], "--set", "http.max_attempts=1"]
        assert cli(args) == 0
        assert "ran" in capsys.readouterr().out
        fetched = emulator.hits("/images/")
        assert cli(args) == 0
        assert "cached" in capsys.readouterr().out
        assert cli(args + ["--retry-failed"]) == 0
        assert emulator.hits("/images/") == fetched
    table = Workspace(ws).table("candidates")
    assert sorted(Path(u).name for u in table["url"] if "/images/" in u) == sorted(PLAIN_FILES)
    assert table["reason"].tolist().count("http_500") == 2  # first run and the retry


def test_crawl_cli_rejects_an_endpoint_without_a_single_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["crawl", "--workspace", str(tmp_path / "ws"), "--endpoint", "http://127.0.0.1:9/"]) == 2
    assert "exactly one search --source" in capsys.readouterr().err


def test_demo_profile_crawls_the_demo_corpus_from_the_emulator(prefect_server: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    ws = tmp_path / "ws"
    assert cli(["run", "crawl", "--workspace", str(ws), "--set", "max_per_query=5"]) == 0
    workspace = Workspace(ws)
    candidates = workspace.table("candidates")
    queries = workspace.table("queries")
    assert set(queries["engine"]) == {"google", "naver", "google-api", "naver-api"}
    found = candidates.merge(queries[["query_id", "attribute"]], on="query_id")
    assert set(found["attribute"]) == {"none"}  # the plain-face corpus answers only plain-face queries
    assert set(found["engine"]) == {"google", "naver", "google-api", "naver-api"}
    assert (found["status"] == "ok").all() and len(workspace.table("images")) > 0
    assert (workspace.root / "corpus" / "demo" / "index.json").is_file()
