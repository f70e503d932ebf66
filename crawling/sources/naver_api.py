"""Naver Open API image search (the terms-respecting Naver route).

`GET https://openapi.naver.com/v1/search/image?query&display&start&sort&filter` with the headers
X-Naver-Client-Id / X-Naver-Client-Secret; display <= 100, start <= 1000 (so about 1000 results a query:
plan windows vary `sort` (sim, date) and `filter` (all, large, medium, small)). Credentials come from the
environment: NAVER_CLIENT_ID and NAVER_CLIENT_SECRET.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from crawling.plan import Query
from crawling.sources.base import Result, SearchError, SearchPage, SearchSource, as_int, clean_title, credentials_from_env

PAGE_SIZE = 100
MAX_START = 1000
ID_ENV, SECRET_ENV = "NAVER_CLIENT_ID", "NAVER_CLIENT_SECRET"
WINDOW_PARAMS = {"sort", "filter"}


class NaverApiSource(SearchSource):
    engine = "naver-api"
    default_endpoint = "https://openapi.naver.com/v1/search/image"

    def __init__(self, endpoint: str | None = None, credentials: tuple[str, str] | None = None) -> None:
        super().__init__(endpoint, credentials)
        self.client_id, self.secret = credentials_from_env(self.engine, credentials, (ID_ENV, SECRET_ENV))

    def pages(self, query: Query, max_results: int) -> Iterator[SearchPage]:
        window = query.window or {}
        if unknown := set(window) - WINDOW_PARAMS:
            raise SearchError(f"naver-api window keys {sorted(unknown)} are not API parameters ({sorted(WINDOW_PARAMS)})")
        headers = {"X-Naver-Client-Id": self.client_id, "X-Naver-Client-Secret": self.secret}
        for index, start in enumerate(range(1, min(max_results, MAX_START) + 1, PAGE_SIZE)):
            display = min(PAGE_SIZE, max_results - start + 1)
            params = {"query": query.keyword, "display": display, "start": start, "sort": "sim", "filter": "all", **window}
            yield SearchPage(url=self.endpoint, page=index, offset=start - 1, params=params, headers=headers)

    def parse(self, body: bytes, page: SearchPage) -> list[Result]:
        payload = json.loads(body)
        if "errorCode" in payload:
            raise SearchError(self.error_message(body) or "naver-api error")
        return [
            Result(url=item["link"], rank=page.offset + i, page=page.page, title=clean_title(item.get("title")),
                   width=as_int(item.get("sizewidth")), height=as_int(item.get("sizeheight")))
            for i, item in enumerate(payload.get("items") or [])
            if item.get("link")
        ]

    def error_message(self, body: bytes | None) -> str | None:
        try:
            payload = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return None
        if "errorCode" not in payload:
            return None
        return f"{payload.get('errorCode')}: {payload.get('errorMessage', '')}".strip()
