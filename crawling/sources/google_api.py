"""Google Custom Search JSON API, image search (the terms-respecting Google route).

`GET https://www.googleapis.com/customsearch/v1?key&cx&q&searchType=image&start&num`; at most 10 results
a call and 100 a query (start + num - 1 <= 100), hence plan windows such as imgSize or dateRestrict.
Credentials come from the environment: GOOGLE_API_KEY and GOOGLE_CSE_ID (never stored in configs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from crawling.plan import Query
from crawling.sources.base import Result, SearchError, SearchPage, SearchSource, as_int, clean_title, credentials_from_env

MAX_RESULTS = 100
PAGE_SIZE = 10
KEY_ENV, CX_ENV = "GOOGLE_API_KEY", "GOOGLE_CSE_ID"
# Plan-window keys passed straight through as documented API parameters.
WINDOW_PARAMS = {"imgSize", "imgType", "imgColorType", "imgDominantColor", "dateRestrict", "rights", "safe", "gl", "hl", "lr"}


class GoogleApiSource(SearchSource):
    engine = "google-api"
    default_endpoint = "https://www.googleapis.com/customsearch/v1"

    def __init__(self, endpoint: str | None = None, credentials: tuple[str, str] | None = None) -> None:
        super().__init__(endpoint, credentials)
        self.key, self.cx = credentials_from_env(self.engine, credentials, (KEY_ENV, CX_ENV))

    def pages(self, query: Query, max_results: int) -> Iterator[SearchPage]:
        window = query.window or {}
        unknown = set(window) - WINDOW_PARAMS
        if unknown:
            raise SearchError(f"google-api window keys {sorted(unknown)} are not API parameters ({sorted(WINDOW_PARAMS)})")
        last = min(max_results, MAX_RESULTS)
        for index, start in enumerate(range(1, last + 1, PAGE_SIZE)):
            params = {"key": self.key, "cx": self.cx, "q": query.keyword, "searchType": "image",
                      "start": start, "num": min(PAGE_SIZE, last - start + 1), **window}
            yield SearchPage(url=self.endpoint, page=index, offset=start - 1, params=params)

    def parse(self, body: bytes, page: SearchPage) -> list[Result]:
        payload = json.loads(body)
        if "error" in payload:
            raise SearchError(self.error_message(body) or "google-api error")
        licence = str(page.params.get("rights")) if page.params and page.params.get("rights") else None
        out = []
        for i, item in enumerate(payload.get("items") or []):
            image = item.get("image") or {}
            if item.get("link"):
                out.append(Result(url=item["link"], rank=page.offset + i, page=page.page, page_url=image.get("contextLink"),
                                  title=clean_title(item.get("title")), licence=licence,
                                  width=as_int(image.get("width")), height=as_int(image.get("height"))))
        return out

    def error_message(self, body: bytes | None) -> str | None:
        try:
            error = json.loads(body or b"{}").get("error") or {}
        except (json.JSONDecodeError, AttributeError):
            return None
        return f"{error.get('status', '')} {error.get('message', '')}".strip() or None
