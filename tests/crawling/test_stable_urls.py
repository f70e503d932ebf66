"""The crawl's built-in emulator publishes a stable, port-free base URL that the crawl's HTTP client reaches
through a host alias (curl's --resolve), so nothing recorded depends on which port happened to be free."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest
import requests

import crawling.emulator_support as emulator_support
from crawling.config import EMULATOR_PUBLIC_URL, CrawlConfig, HttpConfig
from crawling.emulator import SearchEmulator
from crawling.http import PoliteClient
from crawling.stage import run
from data_catalog import Workspace
from data_catalog.effective import latest_candidates
from tests.conftest import BIN, PROJECT_ROOT, free_port
from tests.crawl_corpus import MASK_FILES

ALIAS = "http://search-emulator.invalid"
ENGINES = ["google", "naver", "google-api", "naver-api"]
FAST_HTTP = {"threads": 8, "per_host_connections": 8, "connect_timeout": 2, "read_timeout": 2, "total_timeout": 10,
             "max_attempts": 2, "backoff_seconds": 0.05}


def emulated_config(corpus: Path, **extra: Any) -> CrawlConfig:
    """All four engines against the built-in emulator, with faults that redirect, retry and hit robots.txt."""
    plan = {"name": "t", "version": 1, "max_per_query": 100, "attributes": {
        "face_mask": [{"language": "en", "engines": ENGINES, "keywords": ["face mask"]}]}}
    return CrawlConfig.model_validate({
        "sources": ENGINES, "plan": plan, "http": FAST_HTTP, "images": {"min_side": 32}, "flush_every": 5,
        "emulator": {"corpus": str(corpus), "faults": ["redirect", "robots", "flaky503", "not-found"]}, **extra})


def test_config_defaults_and_validation() -> None:
    assert EMULATOR_PUBLIC_URL == ALIAS
    assert CrawlConfig.model_validate({"sources": ["urls"], "urls": "x.txt"}).http.host_aliases == {}
    assert HttpConfig(host_aliases={"a.invalid": "127.0.0.1:80", "b.invalid:8080": "[::1]"}).host_aliases
    for bad in ({"a.invalid/x": "127.0.0.1"}, {"a.invalid": "127.0.0.1:notaport"}, {"": "127.0.0.1"}):
        with pytest.raises(ValueError, match="host_aliases"):
            HttpConfig(host_aliases=bad)
    for bad_base in ("https://search-emulator.invalid", "http://search-emulator.invalid/sub", "search-emulator"):
        with pytest.raises(ValueError, match="public_url"):
            CrawlConfig.model_validate({"sources": ["urls"], "urls": "x.txt",
                                        "emulator": {"corpus": "c", "public_url": bad_base}})


def test_standalone_emulator_serves_real_loopback_urls_and_a_public_base_on_request(corpus: Path) -> None:
    with SearchEmulator(corpus) as emulator:  # `sdgan emulator`: URLs any HTTP client can fetch
        port = emulator.address[1]
        assert emulator.url == emulator.local_url == f"http://127.0.0.1:{port}" and emulator.host_aliases == {}
        assert all(e.startswith(emulator.url + "/") for e in emulator.endpoints.values())
        assert requests.get(emulator.results("face mask")[0]["url"], timeout=5).status_code == 200
    with SearchEmulator(corpus, public_url=ALIAS + "/") as emulator:
        port = emulator.address[1]
        assert emulator.url == ALIAS and emulator.host_aliases == {"search-emulator.invalid:80": f"127.0.0.1:{port}"}
        assert all(e.startswith(ALIAS + "/") for e in emulator.endpoints.values())
        results = emulator.results("face mask")
        assert all(r["url"].startswith(ALIAS + "/") and r["page_url"].startswith(ALIAS + "/") for r in results)
        cse = requests.get(emulator.local_url + "/customsearch/v1", timeout=5,
                           params={"key": "k", "cx": "c", "q": "face mask", "searchType": "image"}).json()
        assert {item["displayLink"] for item in cse["items"]} == {"search-emulator.invalid"}
    with pytest.raises(ValueError, match="public_url"):
        SearchEmulator(corpus, public_url="https://search-emulator.invalid")


def test_client_connects_an_alias_to_the_emulator_keeping_url_host_redirects_and_robots(
        corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy in the environment would be asked for every other host; an alias is a direct connection.
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    with SearchEmulator(corpus, faults=["redirect", "robots"], public_url=ALIAS) as emulator:
        client = PoliteClient(HttpConfig(host_aliases=emulator.host_aliases, **FAST_HTTP))
        try:
            response = client.fetch(emulator.fault_url("redirect", MASK_FILES[0]))
            assert (response.status, response.url) == ("ok", emulator.image_url(MASK_FILES[0]))  # hop on the name
            assert response.body == (corpus / MASK_FILES[0]).read_bytes()
            robots = client.fetch(emulator.fault_url("robots", MASK_FILES[0]))
            assert (robots.status, robots.reason) == ("skipped", "robots_disallowed")
            search = client.fetch(emulator.endpoints["naver"], image=False, params={"query": "face mask"})
            assert json.loads(search.body)["items"][0]["originalUrl"].startswith(ALIAS + "/")
        finally:
            client.close()
        paths = [r["path"] for r in emulator.requests_log]
        assert paths[:3] == ["/robots.txt", f"/fault/redirect/{MASK_FILES[0]}", f"/images/{MASK_FILES[0]}"]
        assert {r["headers"].get("Host") for r in emulator.requests_log} == {"search-emulator.invalid"}
        # Without the alias the name goes where any other host would (here: the dead proxy), never to the emulator.
        seen = len(emulator.requests_log)
        plain = PoliteClient(HttpConfig(**{**FAST_HTTP, "max_attempts": 1}))
        try:
            assert plain.fetch(emulator.image_url(MASK_FILES[0]), image=False).reason == "connection_error"
        finally:
            plain.close()
        assert len(emulator.requests_log) == seen


def _fixed_ports(monkeypatch: pytest.MonkeyPatch, ports: list[int]) -> None:
    """Make start_emulator bind the given ports in turn (it binds any free port otherwise)."""
    real = emulator_support.SearchEmulator

    def on_port(*args: Any, **kwargs: Any) -> SearchEmulator:
        return real(*args, port=ports.pop(0), **kwargs)

    monkeypatch.setattr(emulator_support, "SearchEmulator", on_port)


def _rows(ws: Workspace) -> list[tuple]:
    """Candidate rows without what legitimately differs between runs (fetch times, run ids)."""
    table = ws.table("candidates").drop(columns=["fetched_at", "run_id"])
    table = table.astype(object).where(table.notna(), None)
    return sorted(table.itertuples(index=False, name=None), key=repr)


def _text_files(root: Path) -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in root.rglob("*") if p.suffix in (".json", ".jsonl", ".txt")}


def test_crawl_records_only_the_stable_name_whatever_the_emulator_port(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    ports = [free_port(), free_port()]
    assert ports[0] != ports[1]
    _fixed_ports(monkeypatch, list(ports))
    # One query and one download at a time: which pair of a shared URL fetches it (and which is `duplicate_url`) is
    # otherwise a race, and this test compares whole rows.
    config = emulated_config(corpus, query_workers=1, http={**FAST_HTTP, "threads": 1})
    caplog.set_level(logging.INFO, logger="sdgan.crawl")
    workspaces, manifests = [], []
    for index in range(2):
        ws = Workspace(tmp_path / f"ws{index}")
        manifests.append(run(config, ws))
        workspaces.append(ws)
    candidates = workspaces[0].table("candidates")
    assert set(candidates["engine"]) == set(ENGINES)
    assert candidates["url"].str.startswith(ALIAS + "/").all()
    assert candidates["page_url"].dropna().str.startswith(ALIAS + "/").all() and candidates["page_url"].notna().any()
    reasons = set(candidates["reason"].dropna())
    assert {"robots_disallowed", "http_404"} <= reasons and (candidates["status"] == "ok").sum() > len(ENGINES)
    for ws, port in zip(workspaces, ports):
        for path, text in _text_files(ws.root / "runs").items():  # journals, config.json, manifests, stats
            assert "127.0.0.1" not in text and f":{port}" not in text, path
    assert _rows(workspaces[0]) == _rows(workspaces[1])
    assert manifests[0].config_hash == manifests[1].config_hash == config.hash
    assert manifests[0].tables["candidates"].digest == manifests[1].tables["candidates"].digest

    # the progress tick lines: one final line per crawl, with the right totals
    finals = [r.getMessage() for r in caplog.records if r.name == "sdgan.crawl" and ": done " in r.getMessage()]
    rows = len(candidates)
    assert len(finals) == 2 and all(line.startswith(f"crawl: done {rows}/{rows} url (100%)") for line in finals)
    assert all(f"ok={(candidates['status'] == 'ok').sum()}" in line for line in finals)


def test_url_list_crawl_ticks_with_the_list_as_total(corpus: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with SearchEmulator(corpus) as emulator:
        urls = tmp_path / "urls.txt"
        urls.write_text("\n".join([emulator.image_url(n) for n in MASK_FILES] + ["# comment", "",
                                   emulator.image_url("absent.jpg")]) + "\n", encoding="utf-8")
        config = CrawlConfig.model_validate({"sources": ["urls"], "urls": str(urls), "http": FAST_HTTP,
                                             "images": {"min_side": 32}})
        caplog.set_level(logging.INFO, logger="sdgan.crawl")
        run(config, Workspace(tmp_path / "ws"))
        run(config, Workspace(tmp_path / "ws"))  # everything recorded: the total shrinks to nothing to do
    finals = [r.getMessage() for r in caplog.records if r.name == "sdgan.crawl" and ": done " in r.getMessage()]
    assert finals[0].startswith(f"crawl: done 5/5 url (100%)") and "ok=4 failed=1 skipped=0" in finals[0]
    assert finals[1].startswith("crawl: done 0/0 url")
    summaries = [r.getMessage() for r in caplog.records if r.name == "sdgan.crawl" and ": finished " in r.getMessage()]
    assert summaries[0].startswith("crawl: finished 5 url in 1 task(s): ok=4 failed=1 skipped=0")


def _journaled(ws: Path, run_id: str) -> list[dict[str, Any]]:
    rows = []
    for journal in (ws / "runs" / "crawl" / run_id).glob("batch-*/journal.jsonl"):
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line being written when the process was killed
                continue
            if entry.get("table") == "candidates":
                rows.append(entry["row"])
    return rows


@pytest.mark.prefect_server
def test_killed_demo_crawl_resumes_on_the_same_urls_without_fetching_again(prefect_server: str, tmp_path: Path) -> None:
    """`sdgan crawl --profile demo` killed with SIGKILL part-way, then run again: the new emulator has another port,
    yet the resumed crawl recognises every journaled URL (no pair twice, nothing journaled fetched again)."""
    ws = tmp_path / "ws"
    small = ["--set", 'emulator.corpus_options={"variants_per_class": 3}', "--set", "http.threads=2"]
    slow = ["--set", "http.per_host_rate=4"]  # every request of a task goes to one host: about 4 a second
    command = [str(BIN / "sdgan"), "crawl", "--workspace", str(ws), "--profile", "demo", *small]
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "killed.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(command + slow, cwd=PROJECT_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own group: its children die with it
    try:
        deadline = time.monotonic() + 240
        killed_run = None
        while time.monotonic() < deadline and process.poll() is None:
            runs = [p for p in (ws / "runs" / "crawl").glob("crawl-*") if p.is_dir()] if ws.is_dir() else []
            if runs and len(_journaled(ws, runs[0].name)) >= 6:
                killed_run = runs[0].name
                break
            time.sleep(0.05)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
    assert killed_run is not None, log.read_text(errors="replace")[-4000:]
    workspace = Workspace(ws, create=False)
    assert workspace.table("runs").empty or "completed" not in set(workspace.table("runs")["status"])
    journaled = _journaled(ws, killed_run)

    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    candidates = workspace.table("candidates")
    assert candidates["url"].str.startswith(ALIAS + "/").all()
    pairs = candidates[["url", "query_id"]]
    assert not pairs.duplicated().any(), pairs[pairs.duplicated(keep=False)]
    # ... even compared without the host: URLs that carried the port were new URLs to the resumed run
    by_path = pd.DataFrame({"path": [urlsplit(u).path for u in candidates["url"]], "query_id": candidates["query_id"]})
    assert not by_path.duplicated().any(), by_path[by_path.duplicated(keep=False)]
    assert len(latest_candidates(workspace)) == len(candidates)
    # Every journaled row is in the catalog once, and the resumed run fetched none of its URLs again: a fetched
    # URL would be recorded as a fresh outcome, a known one is copied as `duplicate_url`.
    assert {(r["url"], r["query_id"]) for r in journaled} <= set(pairs.itertuples(index=False, name=None))
    resumed_run = (set(candidates["run_id"]) - {killed_run}).pop()
    resumed = candidates[candidates["run_id"] == resumed_run]
    fetched_before = {r["url"] for r in journaled if r["status"] == "ok" and r["reason"] is None}
    again = resumed[resumed["url"].isin(fetched_before)]
    assert not again.empty and (again["reason"] == "duplicate_url").all(), again[["url", "reason"]]
    runs = workspace.table("runs")
    assert sorted(runs[runs["stage"] == "crawl"]["status"]) == ["completed", "failed"]
    queries = workspace.table("queries")
    assert set(queries["engine"]) == set(ENGINES)
