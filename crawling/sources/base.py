"""What every search source provides: the page requests for a query, and a parser for each page."""

from __future__ import annotations

import html
import os
import queue
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from crawling.plan import Query


class SearchError(RuntimeError):
    """The engine refused the query (bad credentials, quota, bad parameter), with its own message."""


@dataclass(frozen=True)
class SearchPage:
    url: str
    page: int  # 0-based page index within the query
    offset: int  # rank of the page's first result
    params: dict[str, str | int] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    url: str
    rank: int
    page: int
    page_url: str | None = None
    title: str | None = None
    licence: str | None = None
    width: int | None = None
    height: int | None = None


_TAGS = re.compile(r"<[^>]+>")


def clean_title(title: str | None) -> str | None:
    """Engines wrap matched words in <b>...</b> and escape entities; keep the plain text."""
    if not title:
        return None
    return html.unescape(_TAGS.sub("", title)).strip() or None


def as_int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def feeder_pages(feeder: Any, page_size: int) -> Iterator[SearchPage]:
    """The page URLs an icrawler Feeder put on its queue (after `feed()` ran), as SearchPages."""
    for index in range(feeder.out_queue.qsize()):
        try:
            url = feeder.out_queue.get_nowait()
        except queue.Empty:
            return
        yield SearchPage(url=url, page=index, offset=index * page_size)


def credentials_from_env(engine: str, given: tuple[str, str] | None, names: tuple[str, str]) -> tuple[str, str]:
    """API credentials: given explicitly (the emulator), else from the environment; both or an error."""
    values = given or (os.environ.get(names[0], ""), os.environ.get(names[1], ""))
    if not all(values):
        raise SearchError(f"source {engine} needs the environment variables {names[0]} and {names[1]}")
    return values[0], values[1]


class SearchSource(ABC):
    engine: str = ""
    default_endpoint: str = ""

    def __init__(self, endpoint: str | None = None, credentials: tuple[str, str] | None = None) -> None:
        self.endpoint = endpoint or self.default_endpoint
        self.credentials = credentials

    @abstractmethod
    def pages(self, query: Query, max_results: int) -> Iterator[SearchPage]:
        """The page requests for `query`, in order; the caller stops at the first empty page."""

    @abstractmethod
    def parse(self, body: bytes, page: SearchPage) -> list[Result]:
        """The results of one page (an empty list when the page has none)."""

    def error_message(self, body: bytes | None) -> str | None:
        """The engine's own explanation in an error payload, if it sent one."""
        return None
