"""What the catalog already knows about URLs, so a rerun neither downloads twice nor loses anything."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd

OUTCOME_COLUMNS = ("status", "reason", "http_status", "bytes", "sha256", "width", "height", "content_type")


@dataclass(frozen=True)
class Outcome:
    """What fetching a URL ended with; copied onto every (url, query) pair that saw the same URL."""

    status: str
    reason: str | None = None
    http_status: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Outcome:
        return cls(**{f.name: (None if pd.isna(row[f.name]) else row[f.name]) for f in fields(cls)})


class Fetching:
    """A fetch in flight: `result` blocks until `settle` gives its outcome (a lock as the gate, no Condition)."""

    __slots__ = ("_done", "outcome")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self.outcome: Outcome | None = None

    def settle(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._done.release()

    def result(self) -> Outcome:
        with self._done:
            assert self.outcome is not None
            return self.outcome


class UrlBook:
    """Thread-safe: the known outcome of each URL, and URLs being fetched right now by another query."""

    def __init__(self, latest: pd.DataFrame, known_images: set[str], retry_failed: bool) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[str, Outcome] = {}
        self.pairs: set[tuple[str, str]] = set()
        for row in latest.to_dict("records"):
            self.pairs.add((row["url"], row["query_id"]))
            outcome = Outcome.from_row(row)
            previous = self._outcomes.get(row["url"])
            if previous is None or previous.status == "failed":
                self._outcomes[row["url"]] = outcome
        self._in_flight: dict[str, Fetching] = {}
        self._fresh: set[str] = set()  # fetched during this run: never fetched twice, even when failed
        self.known_images = set(known_images)
        self.retry_failed = retry_failed

    def claim(self, url: str) -> tuple[Outcome | None, Fetching | None, bool]:
        """(known outcome, the fetch in flight (new when the caller must fetch it itself), whether it must)."""
        with self._lock:
            known = self._outcomes.get(url)
            fresh = url in self._fresh
            if known is not None and (known.status != "failed" or not self.retry_failed or fresh):
                return known, None, False
            if url in self._in_flight:
                return None, self._in_flight[url], False
            fetching = self._in_flight[url] = Fetching()
            return None, fetching, True

    def settle(self, url: str, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes[url] = outcome
            self._fresh.add(url)
            fetching = self._in_flight.pop(url)
        fetching.settle(outcome)

    def new_image(self, sha256: str) -> bool:
        """True the first time a blob is seen (its `images` row is then due)."""
        with self._lock:
            if sha256 in self.known_images:
                return False
            self.known_images.add(sha256)
            return True
