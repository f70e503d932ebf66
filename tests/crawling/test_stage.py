"""The crawl stage end to end against the loopback emulator: engines, faults, resume, retry, opt-out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from crawling.config import CrawlConfig
from crawling.emulator import FAULT_MODES, SearchEmulator
from crawling.stage import CrawlError, run
from data_catalog.effective import latest_candidates
from data_catalog import Workspace
from data_catalog.verify import verify_workspace

from tests.crawl_corpus import MASK_FILES, PLAIN_FILES
from tests.stage_kit import StageContract

ROOT = Path(__file__).resolve().parents[2]
FAST_HTTP = {"threads": 8, "per_host_connections": 8, "connect_timeout": 2, "read_timeout": 1.0,
             "total_timeout": 10, "max_attempts": 2, "backoff_seconds": 0.05, "max_bytes": 5_000_000}


def plan(engines: list[str], keyword: str = "person wearing face mask", language: str = "en",
         attribute: str = "face_mask", max_per_query: int = 100) -> dict[str, Any]:
    return {"name": "t", "version": 1, "max_per_query": max_per_query,
            "attributes": {attribute: [{"language": language, "engines": engines, "keywords": [keyword]}]}}


def config(emulator: SearchEmulator, engines: list[str], **extra: Any) -> CrawlConfig:
    base: dict[str, Any] = {"sources": engines, "plan": plan([e for e in engines if e != "urls"] or ["google"]),
                            "endpoints": emulator.endpoints, "http": FAST_HTTP, "images": {"min_side": 32}, "flush_every": 3}
    for key, value in extra.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return CrawlConfig.model_validate(base)


@pytest.fixture
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_API_KEY", "GOOGLE_CSE_ID", "NAVER_CLIENT_ID", "NAVER_CLIENT_SECRET"):
        monkeypatch.setenv(name, "test-" + name.lower())


def state(ws: Workspace) -> set[tuple]:
    latest = latest_candidates(ws)
    return set(latest[["url", "query_id", "status", "sha256"]].astype(object).where(latest.notna(), None).itertuples(index=False, name=None))


@pytest.mark.parametrize(("engine", "keyword", "language"), [
    ("google", "person wearing face mask", "en"),
    ("naver", "마스크 쓴 사람", "ko"),
    ("google-api", "person wearing face mask", "en"),
    ("naver-api", "마스크 쓴 사람", "ko"),
])
def test_each_engine_end_to_end(engine: str, keyword: str, language: str, corpus: Path, tmp_path: Path, api_keys: None) -> None:
    ws = Workspace(tmp_path / "ws")
    with SearchEmulator(corpus) as emulator:
        cfg = config(emulator, [engine], plan=plan([engine], keyword, language))
        manifest = run(cfg, ws)
    candidates = ws.table("candidates")
    assert sorted(Path(u).name for u in candidates["url"]) == sorted(MASK_FILES)
    assert set(candidates["status"]) == {"ok"} and set(candidates["engine"]) == {engine}
    assert sorted(candidates["rank"].tolist()) == list(range(len(MASK_FILES)))
    if engine != "google":  # the Google web parser only sees image URLs
        assert candidates["title"].str.startswith("photo mask").all()
    if engine in ("naver", "google-api"):
        assert candidates["page_url"].str.contains("/pages/").all()
    images = ws.table("images")
    assert len(images) == len(MASK_FILES) and all(ws.blobs.exists(s) for s in images["sha256"])
    assert set(candidates["sha256"]) == set(images["sha256"])
    (query,) = ws.table("queries").to_dict("records")
    assert (query["engine"], query["keyword"], query["attribute"], query["language"]) == (engine, keyword, "face_mask", language)
    assert candidates["query_id"].eq(query["query_id"]).all()
    assert manifest.counts["status_ok"] == len(MASK_FILES) and manifest.tables["images"].rows == len(MASK_FILES)
    assert verify_workspace(ws).ok


EXPECTED = {
    "slow": ("ok", {None, "duplicate_content"}),
    "timeout": ("failed", {"timeout"}),
    "error500": ("failed", {"http_500"}),
    "flaky503": ("ok", {None, "duplicate_content"}),
    "rate429": ("ok", {None, "duplicate_content"}),
    "not-found": ("failed", {"http_404"}),
    "reset": ("failed", {"connection_error"}),
    "truncated": ("failed", {"truncated"}),
    "wrong-type": ("failed", {"content_type"}),
    "html": ("failed", {"content_type"}),
    "html-as-image": ("failed", {"not_an_image"}),
    "corrupt": ("failed", {"not_an_image", "decode_error", "truncated_image"}),
    "tiny": ("failed", {"too_small"}),
    "bomb": ("failed", {"decompression_bomb"}),
    "redirect": ("ok", {None, "duplicate_content"}),
    "redirect-loop": ("failed", {"too_many_redirects"}),
    "huge": ("failed", {"too_large"}),
    "noai": ("skipped", {"x_robots_tag_noai"}),
    "noimageai": ("skipped", {"x_robots_tag_noimageai"}),
    "robots": ("skipped", {"robots_disallowed"}),
}


def test_every_fault_ends_in_its_status_and_reason(corpus: Path, tmp_path: Path) -> None:
    assert set(EXPECTED) == set(FAULT_MODES)
    ws = Workspace(tmp_path / "ws")
    started = time.monotonic()
    with SearchEmulator(corpus, faults=FAULT_MODES, slow_seconds=0.3, hang_seconds=5) as emulator:
        run(config(emulator, ["google"]), ws)
        private_hits = emulator.hits("/private/")
    elapsed = time.monotonic() - started
    rows = {(Path(u).parent.name if "/fault/" in u else ("robots" if "/private/" in u else "real")): r
            for u, r in ws.table("candidates").set_index("url").iterrows()}
    for mode, (status, reasons) in EXPECTED.items():
        row = rows[mode]
        reason = None if pd.isna(row["reason"]) else row["reason"]
        assert (row["status"], reason in reasons) == (status, True), (mode, row["status"], reason)
        if status != "ok":
            assert pd.isna(row["sha256"]), mode
    assert private_hits == 0
    stored = {sha for sha, _ in ws.blobs}
    assert stored == set(ws.table("images")["sha256"]) == set(ws.table("candidates").dropna(subset=["sha256"])["sha256"])
    assert len(stored) == len(MASK_FILES)  # faults that succeed serve the same bytes: stored once
    assert elapsed < 60
    assert verify_workspace(ws).ok


def test_rerun_downloads_nothing_and_retry_failed_fetches_only_failures(corpus: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    with SearchEmulator(corpus, faults=["rate429", "error500"]) as emulator:
        first = run(config(emulator, ["google"], http={"max_retry_after": 0}), ws)
        assert first.counts["reason_http_429"] == 1 and first.counts["reason_http_500"] == 1
        hits = emulator.hits("/images/")
        second = run(config(emulator, ["google"], http={"max_retry_after": 0}), ws)
        assert second.counts.get("status_ok", 0) == 0 and second.counts["queries_skipped_done"] == 1
        assert emulator.hits("/images/") == hits
        retry = run(config(emulator, ["google"], retry_failed=True), ws)
        assert emulator.hits("/images/") == hits  # ok images are not fetched again
        assert retry.counts["status_ok"] == 1 and retry.counts["status_failed"] == 1  # 429 now served; 500 still failing
    latest = latest_candidates(ws).set_index("url")
    assert latest.filter(like="rate429", axis=0)["status"].tolist() == ["ok"]
    assert latest.filter(like="error500", axis=0)["status"].tolist() == ["failed"]
    assert len(ws.table("candidates")) == len(MASK_FILES) + 2 + 2  # the retried rows are appended, history kept


def test_opt_out_registry_applies_to_urls_domains_and_content(corpus: Path, tmp_path: Path) -> None:
    from data_catalog.hashing import sha256_bytes

    ws = Workspace(tmp_path / "ws")
    with SearchEmulator(corpus) as emulator:
        registry = tmp_path / "optout.txt"
        registry.write_text(f"{emulator.image_url(MASK_FILES[0])}\nsha256:{sha256_bytes((corpus / MASK_FILES[1]).read_bytes())}\n")
        run(config(emulator, ["google"], optout=str(registry)), ws)
        assert emulator.hits(f"/images/{MASK_FILES[0]}") == 0
    reasons = ws.table("candidates").set_index("url")["reason"].to_dict()
    by_name = {Path(u).name: r for u, r in reasons.items()}
    assert by_name[MASK_FILES[0]] == "opt_out_url" and by_name[MASK_FILES[1]] == "opt_out_sha256"
    assert len(ws.table("images")) == len(MASK_FILES) - 2 and len(list(ws.blobs)) == len(MASK_FILES) - 2

    other = Workspace(tmp_path / "ws2")
    with SearchEmulator(corpus) as emulator:
        registry.write_text("domain:127.0.0.1\n")
        run(config(emulator, ["google"], optout=str(registry)), other)
        assert emulator.hits("/images/") == 0
    assert set(other.table("candidates")["reason"]) == {"opt_out_domain"}


def test_url_lists_and_bad_schemes(corpus: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    with SearchEmulator(corpus) as emulator:
        urls = tmp_path / "urls.txt"
        urls.write_text("\n".join([emulator.image_url(PLAIN_FILES[0]), emulator.image_url("absent.jpg"),
                                   "ftp://127.0.0.1/x.jpg", "file:///etc/passwd"]) + "\n")
        run(config(emulator, ["urls"], urls=str(urls), plan=None), ws)
    table = ws.table("candidates")
    reasons = dict(zip(table["url"], table["reason"].astype(object).where(table["reason"].notna(), None)))
    assert [r for u, r in reasons.items() if u.endswith(PLAIN_FILES[0])] == [None]
    assert reasons["ftp://127.0.0.1/x.jpg"] == "unsupported_scheme" and reasons["file:///etc/passwd"] == "unsupported_scheme"
    assert [r for u, r in reasons.items() if u.endswith("absent.jpg")] == ["http_404"]
    assert set(ws.table("queries")["engine"]) == {"urls"}


def test_missing_credentials_and_failing_search_are_clear_errors(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAVER_CLIENT_ID", raising=False)
    ws = Workspace(tmp_path / "ws")
    with SearchEmulator(corpus, search_fault="error500") as emulator:
        with pytest.raises(Exception, match="NAVER_CLIENT_ID"):
            run(config(emulator, ["naver-api"], plan=plan(["naver-api"])), ws)
        with pytest.raises(CrawlError, match=r"every search failed.*http_500"):
            run(config(emulator, ["naver"], plan=plan(["naver"])), ws)
    runs = ws.table("runs")
    assert runs["status"].tolist() == ["failed"]  # the credential error happens before a run starts


def test_search_rate_limit_is_retried(corpus: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    with SearchEmulator(corpus, search_fault="rate429-once") as emulator:
        manifest = run(config(emulator, ["google"]), ws)
    assert manifest.counts["status_ok"] == len(MASK_FILES) and "search_errors" not in manifest.counts


KILLED_CRAWL = """
import sys
from crawling.config import CrawlConfig
from crawling.stage import run
from data_catalog import Workspace
run(CrawlConfig.model_validate_json(sys.argv[2]), Workspace(sys.argv[1]))
"""


def test_kill_9_mid_crawl_then_rerun_equals_an_uninterrupted_crawl(corpus: Path, tmp_path: Path) -> None:
    slow = {"per_host_rate": 6.0, "threads": 2}
    with SearchEmulator(corpus) as emulator:
        cfg = config(emulator, ["google", "naver"], http=slow, flush_every=1000,
                     plan={"name": "t", "version": 1, "max_per_query": 100, "attributes": {
                         "face_mask": [{"language": "en", "engines": ["google"], "keywords": ["face mask"]},
                                       {"language": "ko", "engines": ["naver"], "keywords": ["마스크"]}],
                         "none": [{"language": "en", "engines": ["google", "naver"], "keywords": ["face portrait"]}]}})
        reference = Workspace(tmp_path / "reference")
        run(cfg, reference)

        ws = Workspace(tmp_path / "ws")
        before = emulator.hits("/images/")
        process = subprocess.Popen([sys.executable, "-c", KILLED_CRAWL, str(ws.root), cfg.model_dump_json()], cwd=ROOT)
        journal_dirs = ws.root / "runs" / "crawl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            journals = list(journal_dirs.glob("*/batch-*/journal.jsonl"))
            if journals and journals[0].read_text(encoding="utf-8").count("\n") >= 6:
                break
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert ws.table("runs").empty  # killed before finishing
        killed_hits = emulator.hits("/images/") - before
        manifest = run(cfg.model_copy(update={"http": cfg.http.model_copy(update={"per_host_rate": 0.0})}), ws)
        rerun_hits = emulator.hits("/images/") - before - killed_hits
    assert manifest.counts["rows_recovered"] > 0
    assert state(ws) == state(reference)
    assert {s for s, _ in ws.blobs} == {s for s, _ in reference.blobs}
    assert sorted(ws.table("runs")["status"]) == ["completed", "failed"]  # the killed run is on record
    reference_hits = len(MASK_FILES) + len(PLAIN_FILES)
    assert killed_hits + rerun_hits <= reference_hits + cfg.http.threads  # only in-flight fetches repeat
    assert verify_workspace(ws).ok


class TestCrawlStageContract(StageContract):
    """The crawl through its built-in emulator (port-free URLs, so configs and rows do not depend on the port)."""

    stage = "crawl"

    def prepare(self, tmp_path: Path) -> tuple[Workspace, list]:
        from tests.crawl_corpus import write_corpus

        (tmp_path / "corpus").mkdir()
        self.corpus = write_corpus(tmp_path / "corpus")
        return Workspace(tmp_path / "ws"), []

    def config(self, **extra: Any) -> CrawlConfig:
        return CrawlConfig.model_validate({"sources": ["google", "naver"], "plan": plan(["google", "naver"]),
                                           "emulator": {"corpus": str(self.corpus)}, "http": FAST_HTTP,
                                           "images": {"min_side": 32}, **extra})

    def changed_config(self) -> CrawlConfig:
        return self.config(max_per_query=3)


def test_a_cap_that_hides_the_built_in_emulators_faults_is_warned_about(corpus: Path, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Fault results follow a query's matching images: max_per_query 1 never reaches them, and the crawl says so."""
    ws = Workspace(tmp_path / "ws")
    capped = CrawlConfig.model_validate({
        "sources": ["google"], "plan": plan(["google"]), "max_per_query": 1, "http": FAST_HTTP,
        "images": {"min_side": 32}, "emulator": {"corpus": str(corpus), "faults": ["not-found", "error500"]}})
    with caplog.at_level("WARNING", logger="crawling.stage"):
        run(capped, ws)
    assert "cuts off the fault results of 1 of 1 queries" in caplog.text
    assert f"max_per_query >= {len(MASK_FILES) + 2}" in caplog.text
    assert set(ws.table("candidates")["status"]) == {"ok"}  # no fault URL was ever tried


def test_no_more_images_are_stored_at_once_than_there_are_cpus(corpus: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Decode, hash and write run at most `usable_cpus()` at a time while the other threads keep downloading."""
    import threading

    import crawling.stage as stage

    lock, inside, most = threading.Lock(), [0], [0]
    real_check = stage.check_image

    def slow_check(*args: Any, **kwargs: Any) -> Any:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.05)
            return real_check(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(stage, "usable_cpus", lambda: 2)
    monkeypatch.setattr(stage, "check_image", slow_check)
    ws = Workspace(tmp_path / "ws")
    with SearchEmulator(corpus) as emulator:
        urls = tmp_path / "urls.txt"
        names = (MASK_FILES + PLAIN_FILES) * 2  # the same image under two URLs: each URL fetched and checked
        urls.write_text("".join(f"{emulator.image_url(name)}?copy={i}\n" for i, name in enumerate(names)))
        run(config(emulator, ["urls"], urls=str(urls), plan=None), ws)
    assert most[0] == 2
    table = ws.table("candidates")
    assert len(table) == len(names) and set(table["status"]) == {"ok"}
    assert len(ws.table("images")) == len(set(MASK_FILES + PLAIN_FILES))
