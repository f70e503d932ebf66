"""`sdgan crawl` and the crawl flow through a real Prefect server."""

from __future__ import annotations

import time
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
    assert not (ws / "corpus").exists()  # --endpoint: the demo profile's emulator and corpus are not needed
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
    assert set(found["attribute"]) == {"none", "face_mask", "sunglasses", "frame_glasses"}
    # the demo corpus names files by class: each query is answered by its own class only
    assert all(Path(u).name.startswith(a.replace("_", "-") + "-") for u, a in zip(found["url"], found["attribute"]))
    assert set(found["engine"]) == {"google", "naver", "google-api", "naver-api"}
    assert (found["status"] == "ok").all() and len(workspace.table("images")) > 0
    assert (workspace.root / "corpus" / "demo" / "index.json").is_file()


@pytest.mark.parametrize("runner", ["thread", "process", "dask"])  # dask: a local cluster of 2 workers
def test_flow_fans_out_one_task_per_query(prefect_server: str, corpus: Path, tmp_path: Path, runner: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from crawling.config import CrawlConfig
    from crawling.stage import run
    from data_catalog.effective import latest_candidates
    from flows.dag import crawl_flow

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: fan\nversion: 1\nmax_per_query: 20\nattributes:\n"
        "  none:\n    - {language: en, engines: [google, naver], keywords: [face portrait]}\n"
        "  face_mask:\n    - {language: en, engines: [google, naver], keywords: [face mask]}\n", encoding="utf-8")
    with SearchEmulator(corpus) as emulator:
        endpoints = f"endpoints={{google: '{emulator.endpoints['google']}', naver: '{emulator.endpoints['naver']}'}}"
        state = crawl_flow(workspace=str(tmp_path / "ws"), profile="demo", sources=["google", "naver"], plan=str(plan),
                           overrides=["emulator=null", endpoints], task_runner=runner, workers=2, return_state=True)
        outcomes = state.result()["stages"]
        flow_run_id = str(state.state_details.flow_run_id)
        reference = Workspace(tmp_path / "reference")
        config = CrawlConfig.model_validate({"sources": ["google", "naver"], "plan": str(plan),
                                             "endpoints": emulator.endpoints, "images": {"min_side": 32}})
        run(config, reference)
    assert [o["status"] for o in outcomes] == ["ran"]
    ws = Workspace(tmp_path / "ws")
    manifest = ws.manifest(outcomes[0]["run_id"])
    assert manifest.counts["tasks"] == 4
    # Task runs reach the server through Prefect's event stream, so they may show up a moment later.
    deadline, completed = time.monotonic() + 30, 0
    while time.monotonic() < deadline and completed < 4:
        with get_client(sync_client=True) as client:
            batch_runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="crawl-batch")))
        completed = len({r.id for r in batch_runs if r.flow_run_id is not None and r.state and r.state.is_completed()
                         and str(r.flow_run_id) == flow_run_id})
        time.sleep(0.5)
    assert completed == 4

    def effective(w: Workspace) -> set[tuple]:
        latest = latest_candidates(w)
        return set(latest[["url", "query_id", "status", "sha256"]].itertuples(index=False, name=None))

    assert effective(ws) == effective(reference)
    assert len(ws.table("images")) == len(reference.table("images")) == 8
