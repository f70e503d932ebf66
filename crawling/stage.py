"""The crawl stage: query plan -> search pages -> polite downloads -> blobs + catalog rows.

Resumable at any point: finished rows go to a per-run journal before Parquet, queries are marked done
only after all their downloads finished, and a rerun first recovers what killed runs journaled, then
searches only unfinished queries and fetches only URLs with no recorded outcome.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.compute as pc

from crawling.config import CrawlConfig
from crawling.http import PoliteClient, Response
from crawling.journal import JOURNAL, QUERIES_DONE, Journal, read_journal, read_queries_done
from crawling.plan import Query, queries_frame, urls_query
from crawling.sources import SearchError, SearchSource, make_source
from crawling.sources.base import Result
from crawling.sources.urls import read_url_list
from crawling.state import Outcome, UrlBook
from crawling.validate import EXTENSIONS, check_image
from data_catalog.atomic import atomic_write_text
from data_catalog.blobs import BlobNotFoundError
from data_catalog.effective import latest_candidates
from data_catalog.hashing import sha256_bytes, sha256_file
from data_catalog.manifest import Manifest, TableOutput, table_digest
from data_catalog.optout import OptOutRegistry
from data_catalog.progress import Progress
from data_catalog.runs import MapBatches, StageRun, finished_run_ids, map_in_process, record_interrupted, stage_run
from data_catalog.schemas import TABLE_SCHEMAS
from data_catalog.workspace import Workspace

STAGE = "crawl"
CANDIDATE_COLUMNS = [n for n in TABLE_SCHEMAS["candidates"].names if n != "run_id"]
STATE_COLUMNS = ["url", "query_id", "status", "sha256"]
FORMATS_BY_EXT = {ext: fmt for fmt, ext in EXTENSIONS.items()}
EMULATOR_CREDENTIALS = {"google-api": ("emulator-key", "emulator-cx"), "naver-api": ("emulator-id", "emulator-secret")}
log = logging.getLogger(__name__)
ticks = logging.getLogger("sdgan.crawl")  # progress lines for logs (Prefect's run log); tqdm is for terminals


class CrawlError(RuntimeError):
    pass


# rows ---------------------------------------------------------------------------------------------
class RowWriter:
    """Journal first (survives kill -9), then Parquet in batches of `flush_every` rows.

    A full batch is written by the thread whose row filled it, outside the buffer lock: the other download
    threads keep recording while it syncs the blobs and writes the Parquet file."""

    def __init__(self, ws: Workspace, run_id: str, journal: Journal, flush_every: int) -> None:
        self.ws, self.run_id, self.journal, self.flush_every = ws, run_id, journal, flush_every
        self._buffers: dict[str, list[dict[str, Any]]] = {"candidates": []}
        self._lock = threading.Lock()  # the buffers
        self._flush_lock = threading.Lock()  # one batch written at a time

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.journal.write(table, row)
        with self._lock:
            rows = self._buffers[table]
            rows.append(row)
            if len(rows) < self.flush_every:
                return
            self._buffers[table] = []
        self._write(table, rows)

    def _write(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self._flush_lock:
            self.ws.blobs.sync()  # blobs were written without fsync: make them durable before rows commit
            self.ws.append(table, _frame(table, rows), self.run_id)

    def flush(self) -> None:
        with self._lock:
            pending, self._buffers = self._buffers, {table: [] for table in self._buffers}
        for table, rows in pending.items():
            self._write(table, rows)


def _frame(table: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if "fetched_at" in frame.columns:
        frame["fetched_at"] = pd.to_datetime(frame["fetched_at"], utc=True)
    return frame


def _blob_intact(ws: Workspace, sha256: str | None) -> bool:
    if not sha256:
        return True
    path = ws.blobs.find(sha256)
    return path is not None and sha256_file(path) == sha256


def recover_interrupted(ws: Workspace) -> int:
    """Append journaled candidates of killed crawl runs that never reached Parquet; give those runs a row."""
    folder = ws.root / "runs" / STAGE
    if not folder.is_dir():
        return 0
    finished = finished_run_ids(ws)
    recovered = 0
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in finished and (p / "config.json").is_file()):
        journaled = [row for batch_dir in sorted({p.parent for p in run_dir.rglob(JOURNAL)})
                     for table, row in read_journal(batch_dir) if table == "candidates"]
        existing = ws.table("candidates", columns=["url", "query_id"], filter=pc.field("run_id") == run_dir.name)
        existing_pairs = set(existing.itertuples(index=False, name=None))
        # Journal lines were not fsynced either: after a power loss, trust a row only if its blob hashes right.
        missing = [r for r in journaled if (r["url"], r["query_id"]) not in existing_pairs and _blob_intact(ws, r.get("sha256"))]
        if missing:
            ws.append("candidates", _frame("candidates", missing), run_dir.name)
        count = len(missing)
        record_interrupted(ws, STAGE, run_dir.name, f"interrupted; {count} journaled rows recovered by a later run")
        recovered += count
    return recovered


# fetching -------------------------------------------------------------------------------------------
class Pending:
    """The downloads one query (or URL list) queued; `wait` returns once every one of them has finished.

    A plain lock is the gate (held while downloads are pending, released by whichever thread finishes the
    last one): cheaper than a Future per download and `concurrent.futures.wait` over all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Lock()
        self._count = 0

    def add(self) -> None:
        with self._lock:
            if self._count == 0:
                self._idle.acquire()
            self._count += 1

    def done(self) -> None:
        with self._lock:
            self._count -= 1
            if self._count == 0:
                self._idle.release()

    def wait(self) -> None:
        with self._idle:
            pass


_Task = tuple[Pending, Callable[..., None], tuple[Any, ...]]


class Downloads:
    """`threads` download threads fed by a queue; `submit` blocks while `limit` downloads are queued or running.

    The queue and the free slots are C-level SimpleQueues, so handing a URL to a thread costs no Future
    and no Python-level Condition, the overhead that ThreadPoolExecutor plus a semaphore paid per image."""

    def __init__(self, threads: int, limit: int) -> None:
        self._work: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()  # one token per free slot (memory stays flat)
        for _ in range(limit):
            self._slots.put(None)
        self._threads = [threading.Thread(target=self._loop, name=f"download_{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, pending: Pending, fn: Callable[..., None], *args: Any) -> None:
        self._slots.get()
        pending.add()
        self._work.put((pending, fn, args))

    def _loop(self) -> None:
        while (item := self._work.get()) is not None:
            pending, fn, args = item
            try:
                fn(*args)
            except Exception:  # the thread must live on; the row is lost and the URL fetched again next run
                log.exception("download task failed")
            finally:
                self._slots.put(None)
                pending.done()

    def shutdown(self) -> None:
        """Finish what is queued, then stop the threads."""
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under taskset or a cluster's cgroup)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Crawl:
    """One crawl run's shared state: client, URL book, writer, download pool, counters."""

    def __init__(self, ws: Workspace, config: CrawlConfig, run_id: str, folder: Path, sources: dict[str, SearchSource],
                 label: str = "crawl") -> None:
        self.ws, self.config, self.run_id, self.sources = ws, config, run_id, sources
        self.optout = OptOutRegistry.load(config.optout)
        self.client = PoliteClient(config.http, self.optout)
        known_images = set(ws.table("images", columns=["sha256"])["sha256"])
        self.book = UrlBook(latest_candidates(ws), known_images, config.retry_failed)
        self.journal = Journal(folder)
        self.writer = RowWriter(ws, run_id, self.journal, config.flush_every)
        self.downloads = Downloads(config.http.threads, config.http.threads * 4)  # flat memory however many URLs
        self.formats = frozenset(config.images.formats)
        # Decoding, hashing and writing are CPU and filesystem work: more of them at once than there are cores
        # only adds contention (GIL hand-offs, the filesystem's locks); the download threads keep fetching.
        self._storing = threading.BoundedSemaphore(usable_cpus())
        self.counts: Counter[str] = Counter()
        self.search_errors: list[dict[str, str]] = []
        self._lock = threading.Lock()
        # total: URLs known so far (a query's results as its pages are listed; a URL list counted up front)
        self.progress = Progress(label, "url", ticks)

    def close(self) -> None:
        self.downloads.shutdown()
        self.writer.flush()
        self.journal.close()
        self.client.close()
        self.progress.close()

    def fetch_image(self, url: str) -> Outcome:
        response = self.client.fetch(url)
        if response.status != "ok" or response.body is None:
            return Outcome(response.status, response.reason, response.http_status, content_type=response.content_type)
        with self._storing:
            return self._store(response.body, response)

    def _store(self, body: bytes, response: Response) -> Outcome:
        """Decode, hash and write one downloaded image; the outcome of its URL."""
        rules = self.config.images
        check = check_image(body, rules.min_side, rules.max_pixels, self.formats)
        common = {"http_status": response.http_status, "bytes": len(body), "content_type": response.content_type,
                  "width": check.width, "height": check.height}
        if not check.ok:
            return Outcome("failed", check.reason, **common)
        sha = sha256_bytes(body)
        if reason := self.optout.blocks_sha256(sha):
            return Outcome("skipped", reason, **common)
        # Synced per batch (RowWriter); the `images` rows come from reconcile_images.
        self.ws.blobs.put(body, check.ext, durable=False, sha256=sha)
        return Outcome("ok", None if self.book.new_image(sha) else "duplicate_content", sha256=sha, **common)

    def process(self, query: Query, result: Result) -> None:
        """Resolve one (query, url) pair to an outcome (fetching at most once per URL) and record it."""
        known, fetching, mine = self.book.claim(result.url)
        if mine:
            try:
                outcome = self.fetch_image(result.url)
            except Exception as exc:  # a bug or an OS error must not lose the row
                log.exception("fetching %s", result.url)
                outcome = Outcome("failed", f"error:{type(exc).__name__}")
            self.book.settle(result.url, outcome)
        else:  # fetched before (known) or right now by another query (fetching): record, don't refetch
            if known is None:
                assert fetching is not None
                known = fetching.result()
            outcome = known
            if outcome.status == "ok" and outcome.reason is None:
                outcome = dataclasses.replace(outcome, reason="duplicate_url")
        self.record(query, result, outcome)

    def record(self, query: Query, result: Result, outcome: Outcome) -> None:
        row = {"url": result.url, "engine": query.engine, "query_id": query.query_id, "page": result.page,
               "rank": result.rank, "page_url": result.page_url, "title": result.title, "licence": result.licence,
               **outcome.__dict__, "fetched_at": pd.Timestamp.now(tz="UTC")}
        self.writer.add("candidates", row)
        with self._lock:
            self.counts[f"status_{outcome.status}"] += 1
            if outcome.reason:
                self.counts[f"reason_{outcome.reason}"] += 1
            shown = {"ok": self.counts["status_ok"], "failed": self.counts["status_failed"],
                     "skipped": self.counts["status_skipped"]}
        self.progress.update(1, **shown)

    def submit(self, pending: Pending, query: Query, result: Result, counted: bool = False) -> None:
        """Queue the download of one result unless its pair is recorded; `counted`: already in the total."""
        with self._lock:
            pair = (result.url, query.query_id)
            accepted = not (pair in self.book.pairs and not self.config.retry_failed)
            if accepted:
                self.book.pairs.add(pair)
        if accepted != counted:
            self.progress.add_total(1 if accepted else -1)
        if accepted:  # else recorded for this query by an earlier run, or twice in its results
            self.downloads.submit(pending, self.process, query, result)

    def search(self, query: Query) -> None:
        """All pages of one query, then wait for its downloads, then mark it done (resume unit)."""
        source = self.sources[query.engine]
        limit = min(query.max_results, self.config.max_per_query or query.max_results)
        pending = Pending()
        seen = 0
        try:
            for page in source.pages(query, limit):
                response = self.client.fetch(page.url, page.headers, image=False, params=page.params)
                if response.status != "ok" or response.body is None:
                    detail = source.error_message(response.body) or ""
                    raise SearchError(f"{response.reason} {detail}".strip())
                results = source.parse(response.body, page)
                for result in results[: limit - seen]:
                    self.submit(pending, query, result)
                seen += len(results)
                if not results or seen >= limit:
                    break
        except (SearchError, ValueError) as exc:
            with self._lock:
                self.counts["search_errors"] += 1
                self.search_errors.append({"query_id": query.query_id, "engine": query.engine,
                                           "keyword": query.keyword, "error": str(exc)})
            log.warning("search %s %r failed: %s", query.engine, query.keyword, exc)
            pending.wait()
            return
        pending.wait()
        self.journal.query_done(query.query_id)
        with self._lock:
            self.counts["queries_done"] += 1

    def ingest(self, query: Query, results: Iterable[Result], counted: bool = False) -> None:
        pending = Pending()
        for result in results:
            self.submit(pending, query, result, counted)
        pending.wait()

    def retry_failed(self) -> None:
        """Fetch again every URL whose latest outcome is failed, keeping its original provenance."""
        latest = latest_candidates(self.ws)
        failed = latest[latest["status"] == "failed"]
        queries = self.ws.table("queries").drop_duplicates("query_id").set_index("query_id")
        self.progress.add_total(len(failed))
        pending = Pending()
        for row in failed.to_dict("records"):
            q = queries.loc[row["query_id"]] if row["query_id"] in queries.index else None
            query = Query(row["query_id"], "", row["engine"], q["attribute"] if q is not None else "unknown",
                          q["keyword"] if q is not None else "", "und", None, 0)
            result = Result(url=row["url"], rank=_int(row["rank"]), page=_int(row["page"]), page_url=_str(row["page_url"]),
                            title=_str(row["title"]), licence=_str(row["licence"]))
            self.submit(pending, query, result, counted=True)
        pending.wait()


def _int(value: Any) -> int:
    return 0 if pd.isna(value) else int(value)


def _str(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


# the stage ------------------------------------------------------------------------------------------
def _register_queries(ws: Workspace, run: StageRun, queries: list[Query]) -> None:
    known = set(ws.table("queries", columns=["query_id", "plan_hash"]).itertuples(index=False, name=None))
    new = [q for q in queries if (q.query_id, q.plan_hash) not in known]
    if new:
        ws.append("queries", queries_frame(new), run.run_id)


def _done_queries(ws: Workspace) -> set[str]:
    folder = ws.root / "runs" / STAGE
    done: set[str] = set()
    if folder.is_dir():
        for marker in folder.rglob(QUERIES_DONE):
            done |= read_queries_done(marker.parent)
    return done


def _make_sources(config: CrawlConfig, endpoints: dict[str, str], emulated: bool) -> dict[str, SearchSource]:
    sources = {}
    for engine in config.sources:
        if engine == "urls":
            continue
        source = make_source(engine, endpoints.get(engine), EMULATOR_CREDENTIALS.get(engine) if emulated else None)
        sources[engine] = source
    return sources


def preflight(config: CrawlConfig) -> None:
    """What would stop a crawl, checked before a run (or Prefect) starts: credentials and input files."""
    if "urls" in config.sources and config.urls and not Path(config.urls).expanduser().is_file():
        raise FileNotFoundError(f"URL list not found: {config.urls}")
    OptOutRegistry.load(config.optout)
    if config.emulator is None:  # the built-in emulator supplies its own credentials
        _make_sources(config, config.endpoints, emulated=False)


def _warn_unreached_faults(emulator: Any, config: CrawlConfig, queries: list[Query]) -> None:
    """The emulator lists a query's fault results after its matching images: a small cap never reaches them."""
    if not emulator.faults or not queries:
        return
    needed = {q.query_id: len(emulator.results(q.keyword)) for q in queries}
    short = [q for q in queries if min(q.max_results, config.max_per_query or q.max_results) < needed[q.query_id]]
    if short:
        log.warning("emulator faults: max_per_query cuts off the fault results of %d of %d queries (they follow each "
                    "query's matching images); use max_per_query >= %d to reach them all",
                    len(short), len(queries), max(needed.values()))


def _state_outputs(ws: Workspace, run: StageRun, query_ids: set[str]) -> None:
    """Describe the crawl's cumulative result (not just this run's rows): that is what align consumes."""
    latest = latest_candidates(ws)
    mine = latest[latest["query_id"].isin(query_ids)]
    run.manifest.tables["candidates"] = TableOutput(table="candidates", rows=len(mine), digest=table_digest(mine, STATE_COLUMNS))
    images = mine.loc[mine["status"] == "ok", ["sha256"]].drop_duplicates()
    run.manifest.tables["images"] = TableOutput(table="images", rows=len(images), digest=table_digest(images, ["sha256"]))


def reconcile_images(ws: Workspace, run_id: str) -> int:
    """One `images` row per stored blob that an ok candidate references and the table lacks.

    Written by the stage alone, after its tasks: tasks in other processes never race on it, and a run
    killed before this point is completed by the next run.
    """
    candidates = ws.table("candidates", columns=["status", "sha256", "width", "height", "bytes"])
    ok = candidates[(candidates["status"] == "ok") & candidates["sha256"].notna()].drop_duplicates("sha256")
    known = set(ws.table("images", columns=["sha256"])["sha256"])
    missing = ok[~ok["sha256"].isin(known)]
    if missing.empty:
        return 0
    paths = ws.blobs.find_many(missing["sha256"])
    if (lost := [sha for sha, path in paths.items() if path is None]):
        raise BlobNotFoundError(f"{len(lost)} blobs of ok candidates are not in {ws.blobs.root}, e.g. {lost[0]}")
    formats = [FORMATS_BY_EXT.get(paths[sha].suffix.lstrip("."), "unknown") for sha in missing["sha256"]]
    rows = missing.assign(format=formats)[["sha256", "format", "width", "height", "bytes"]]
    ws.append("images", rows.reset_index(drop=True), run_id)
    return len(rows)


@dataclass(frozen=True)
class Batch:
    """A picklable unit of crawl work (one Prefect task when the flow fans out)."""

    workspace: str
    config_json: str  # the resolved config, endpoints included
    emulated: bool
    run_id: str
    index: int
    queries: list[dict[str, Any]] = field(default_factory=list)  # Query fields
    retry_failed: bool = False
    url_list: dict[str, Any] | None = None  # the URL-list pseudo-query
    batches: int = 1  # how many batches the run has (names the progress bar and tick lines)

    @property
    def label(self) -> str:
        return STAGE if self.batches == 1 else f"{STAGE} {self.index + 1}/{self.batches}"


def crawl_batch(batch: Batch) -> dict[str, Any]:
    """Search and download one batch of queries; returns its counts and search errors."""
    ws = Workspace(batch.workspace, create=False)
    config = CrawlConfig.model_validate_json(batch.config_json)
    sources = _make_sources(config, config.endpoints, batch.emulated)
    folder = ws.run_dir(STAGE, batch.run_id) / f"batch-{batch.index:05d}"
    crawl = Crawl(ws, config, batch.run_id, folder, sources, batch.label)
    try:
        if batch.retry_failed:
            crawl.retry_failed()
        queries = [Query(**q) for q in batch.queries]
        with ThreadPoolExecutor(config.query_workers, thread_name_prefix="search") as pool:
            list(pool.map(crawl.search, queries))
        if batch.url_list is not None:
            # One streamed pass to count (memory stays flat), so the bar and the ticks have a total and an ETA.
            crawl.progress.add_total(sum(1 for _ in read_url_list(config.urls)))
            crawl.ingest(Query(**batch.url_list), read_url_list(config.urls), counted=True)
    finally:
        crawl.close()
    return {"counts": dict(crawl.counts), "search_errors": crawl.search_errors}


def _batches(config: CrawlConfig, ws: Workspace, run_id: str, queries: list[Query], url_query: Query | None,
             emulated: bool, fan_out: bool) -> list[Batch]:
    common = {"workspace": str(ws.root), "config_json": config.model_dump_json(), "emulated": emulated, "run_id": run_id}
    if config.retry_failed:
        return [Batch(**common, index=0, retry_failed=True)]
    rows = [q.__dict__ for q in queries]
    size = config.queries_per_task if fan_out else max(1, len(rows))
    batches = [Batch(**common, index=i, queries=rows[start:start + size]) for i, start in enumerate(range(0, len(rows), size))]
    if url_query is not None:
        batches.append(Batch(**common, index=len(batches), url_list=url_query.__dict__))
    return [dataclasses.replace(b, batches=len(batches)) for b in batches]


def run(config: CrawlConfig, workspace: Workspace, inputs: list[Manifest] | tuple = (),
        map_batches: MapBatches[Batch] | None = None) -> Manifest:
    """The stage. `map_batches` (from flows) runs batches as parallel tasks; default: all in this process."""
    recovered = recover_interrupted(workspace)
    with ExitStack() as stack:
        endpoints, aliases = dict(config.endpoints), dict(config.http.host_aliases)
        if config.emulator is not None:
            from crawling.emulator_support import start_emulator

            emulator = stack.enter_context(start_emulator(config.emulator, workspace))
            endpoints = {**emulator.endpoints, **endpoints}
            aliases = {**aliases, **emulator.host_aliases}  # its real port: known now, never hashed nor recorded
        emulated = config.emulator is not None
        _make_sources(config, endpoints, emulated)  # missing credentials fail here, before a run starts
        # What the tasks get: the hash, config.json and the cache key stay those of `config`.
        resolved = config.model_copy(update={"endpoints": endpoints,
                                             "http": config.http.model_copy(update={"host_aliases": aliases})})
        with stage_run(workspace, STAGE, config, inputs) as run_ctx:
            queries = config.plan.queries(config.sources) if config.plan else []
            url_query = (urls_query(config.plan.hash if config.plan else "none", Path(config.urls).name)
                         if config.urls and "urls" in config.sources else None)
            _register_queries(workspace, run_ctx, queries + ([url_query] if url_query else []))
            if emulated:
                _warn_unreached_faults(emulator, config, queries)
            done = _done_queries(workspace)
            todo = [q for q in queries if q.query_id not in done]
            batches = _batches(resolved, workspace, run_ctx.run_id, todo, url_query, emulated, map_batches is not None)
            results = (map_batches or map_in_process)(crawl_batch, batches)
            counts: Counter[str] = Counter()
            search_errors: list[dict[str, str]] = []
            for result in results:
                counts.update(result["counts"])
                search_errors.extend(result["search_errors"])
            counts["new_images"] = reconcile_images(workspace, run_ctx.run_id)
            query_ids = {q.query_id for q in queries} | ({url_query.query_id} if url_query else set())
            _state_outputs(workspace, run_ctx, query_ids)
            counts.update(queries=len(query_ids), queries_skipped_done=len(queries) - len(todo),
                          rows_recovered=recovered, tasks=len(batches))
            run_ctx.manifest.counts.update(dict(counts))
            stats = {"counts": dict(counts), "search_errors": search_errors,
                     "plan_hash": config.plan.hash if config.plan else None,
                     "optout_hash": OptOutRegistry.load(config.optout).hash,
                     "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()}
            atomic_write_text(run_ctx.dir / "stats.json", json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
            attempted = sum(v for k, v in counts.items() if k.startswith("status_"))
            ticks.info("crawl: finished %d url in %d task(s): ok=%d failed=%d skipped=%d; %d/%d queries done "
                       "(%d before), %d search errors", attempted, len(batches), counts["status_ok"],
                       counts["status_failed"], counts["status_skipped"], counts["queries_done"], len(todo),
                       len(queries) - len(todo), len(search_errors))
            if search_errors and attempted == 0 and counts.get("queries_done", 0) == 0:
                first = search_errors[0]
                raise CrawlError(f"every search failed ({len(search_errors)}); first: {first['engine']} "
                                 f"{first['keyword']!r}: {first['error']}")
    return run_ctx.manifest
