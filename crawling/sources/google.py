"""Google web image search through icrawler's Google feeder and parser.

icrawler hard-codes the search URL inside `GoogleFeeder.feed` and its parser returns None for a page
without results; the subclasses below make the URL configurable (the emulator, a mirror) and turn
"nothing found" into an empty list. Google's page markup changes often, which breaks the regex parser;
the `google-api` source is the robust route.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

from icrawler.builtin.google import GoogleFeeder, GoogleParser
from icrawler.utils import Signal

from crawling.plan import Query
from crawling.sources.base import Result, SearchPage, SearchSource, feeder_pages

PAGE_SIZE = 100  # results per Google image page (the `ijn` page index)


class ConfigurableGoogleFeeder(GoogleFeeder):
    """GoogleFeeder whose search URL is an attribute instead of a constant."""

    base_url = "https://www.google.com/search"

    def feed(self, keyword: str, offset: int, max_num: int, language: str | None = None,
             filters: dict[str, Any] | None = None) -> None:
        self.filter = self.get_filter()
        tbs = self.filter.apply(filters, sep=",")
        for start in range(offset, offset + max_num, PAGE_SIZE):
            params: dict[str, Any] = {"q": keyword, "ijn": start // PAGE_SIZE, "start": start, "tbs": tbs, "tbm": "isch"}
            if language:
                params["lr"] = f"lang_{language}"
            self.out_queue.put(f"{self.base_url}?{urlencode(params)}")


class EmptySafeGoogleParser(GoogleParser):
    """GoogleParser that answers [] instead of None when a page has no image URLs."""

    def parse(self, response: Any) -> list[dict[str, str]]:
        return super().parse(response) or []


def _filters(window: dict[str, Any] | None) -> dict[str, Any] | None:
    """Plan window -> icrawler filters; a date window becomes Google's custom date range."""
    if not window:
        return None
    filters = {k: v for k, v in window.items() if k != "date"}
    if "date" in window:
        start, end = (dt.date.fromisoformat(str(d)) if d else None for d in window["date"])
        filters["date"] = (start, end)
    return filters


class GoogleSource(SearchSource):
    engine = "google"
    default_endpoint = ConfigurableGoogleFeeder.base_url

    def pages(self, query: Query, max_results: int) -> Iterator[SearchPage]:
        feeder = ConfigurableGoogleFeeder(thread_num=1, signal=Signal(), session=None)
        feeder.base_url = self.endpoint
        language = None if query.language in ("", "und") else query.language
        feeder.feed(keyword=query.keyword, offset=0, max_num=max_results, language=language,
                    filters=_filters(query.window))
        yield from feeder_pages(feeder, PAGE_SIZE)

    def parse(self, body: bytes, page: SearchPage) -> list[Result]:
        parser = EmptySafeGoogleParser(thread_num=1, signal=Signal(), session=None)
        found = parser.parse(SimpleNamespace(content=body))
        return [Result(url=item["file_url"], rank=page.offset + i, page=page.page) for i, item in enumerate(found)]
