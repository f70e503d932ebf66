"""Search sources by engine name."""

from __future__ import annotations

from crawling.sources.base import Result, SearchError, SearchPage, SearchSource
from crawling.sources.google import GoogleSource
from crawling.sources.google_api import GoogleApiSource
from crawling.sources.naver import NaverSource
from crawling.sources.naver_api import NaverApiSource

SOURCES: dict[str, type[SearchSource]] = {
    "google": GoogleSource,
    "naver": NaverSource,
    "google-api": GoogleApiSource,
    "naver-api": NaverApiSource,
}


def make_source(engine: str, endpoint: str | None = None, credentials: tuple[str, str] | None = None) -> SearchSource:
    """`credentials` (API engines only) default to the engine's environment variables."""
    try:
        return SOURCES[engine](endpoint, credentials)
    except KeyError:
        raise ValueError(f"unknown search engine {engine!r}; engines: {', '.join(SOURCES)}") from None


__all__ = ["SOURCES", "Result", "SearchError", "SearchPage", "SearchSource", "make_source"]
