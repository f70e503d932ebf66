"""Naver web image search, written on icrawler's Feeder / Parser / Crawler classes (icrawler has none).

The pipeline uses `NaverFeeder` and `NaverParser` through `NaverSource`; `NaverImageCrawler` is the same
pair wired into icrawler's own threaded crawler for people who use icrawler directly.

The default endpoint is Naver's JSON image-search endpoint (`s.search.naver.com/p/c/image/search.naver`,
`json_type=6`, `items[].originalUrl`); its exact shape could not be checked against the live service from
the offline build machine, so the parser also reads the HTML result page (`img[data-source]`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

from bs4 import BeautifulSoup
from icrawler import Crawler, Feeder, ImageDownloader, Parser
from icrawler.utils import Signal

from crawling.plan import Query
from crawling.sources.base import Result, SearchPage, SearchSource, feeder_pages, as_int, clean_title

PAGE_SIZE = 50


class NaverFeeder(Feeder):
    base_url = "https://s.search.naver.com/p/c/image/search.naver"
    page_size = PAGE_SIZE

    def feed(self, keyword: str, offset: int = 0, max_num: int = 1000) -> None:
        for start in range(offset, offset + max_num, self.page_size):
            params = {"where": "image", "json_type": 6, "query": keyword, "start": start + 1, "display": self.page_size}
            self.out_queue.put(f"{self.base_url}?{urlencode(params)}")


class NaverParser(Parser):
    """Reads the JSON endpoint, or the HTML result page, into icrawler task dicts."""

    def parse(self, response: Any, **kwargs: Any) -> list[dict[str, Any]]:
        text = response.content.decode("utf-8", "replace").strip()
        if text.startswith("{"):
            try:
                payload = json.loads(text)
            except json.JSONDecodeError:
                return []
            items = payload.get("items") or []
            return [
                {
                    "file_url": item.get("originalUrl") or item.get("link"),
                    "title": clean_title(item.get("title")),
                    "page_url": item.get("link") if item.get("originalUrl") else item.get("sourceUrl"),
                    "width": as_int(item.get("orgWidth")),
                    "height": as_int(item.get("orgHeight")),
                }
                for item in items
                if item.get("originalUrl") or item.get("link")
            ]
        soup = BeautifulSoup(text, "lxml")
        return [
            {
                "file_url": img.get("data-source") or img.get("data-original"),
                "title": clean_title(img.get("alt")),
                "page_url": img.get("data-link"),
                "width": None,
                "height": None,
            }
            for img in soup.find_all("img")
            if img.get("data-source") or img.get("data-original")
        ]


class NaverImageCrawler(Crawler):
    """icrawler-style crawler: `NaverImageCrawler(storage={"root_dir": d}).crawl("마스크", max_num=100)`."""

    def __init__(self, feeder_cls=NaverFeeder, parser_cls=NaverParser, downloader_cls=ImageDownloader, *args, **kwargs):
        super().__init__(feeder_cls, parser_cls, downloader_cls, *args, **kwargs)

    def crawl(self, keyword: str, offset: int = 0, max_num: int = 1000, min_size=None, max_size=None,
              file_idx_offset: int = 0, overwrite: bool = False, max_idle_time: float | None = None) -> None:
        super().crawl(
            feeder_kwargs={"keyword": keyword, "offset": offset, "max_num": max_num},
            downloader_kwargs={"max_num": max_num, "min_size": min_size, "max_size": max_size,
                               "file_idx_offset": file_idx_offset, "overwrite": overwrite,
                               "max_idle_time": max_idle_time},
        )


class NaverSource(SearchSource):
    engine = "naver"
    default_endpoint = NaverFeeder.base_url

    def pages(self, query: Query, max_results: int) -> Iterator[SearchPage]:
        feeder = NaverFeeder(thread_num=1, signal=Signal(), session=None)
        feeder.base_url = self.endpoint
        feeder.feed(keyword=query.keyword, offset=0, max_num=max_results)
        yield from feeder_pages(feeder, feeder.page_size)

    def parse(self, body: bytes, page: SearchPage) -> list[Result]:
        items = NaverParser(thread_num=1, signal=Signal(), session=None).parse(SimpleNamespace(content=body))
        return [
            Result(url=it["file_url"], rank=page.offset + i, page=page.page, page_url=it["page_url"],
                   title=it["title"], width=it["width"], height=it["height"])
            for i, it in enumerate(items)
        ]
