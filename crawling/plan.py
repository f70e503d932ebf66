"""The query plan: which keywords, in which languages, on which engines, over which windows.

Engines cap results at about 1000 per query, so the plan (keywords x languages x windows) is what sets
the size of MEGN. It is versioned: its hash is in the crawl manifest and its rows in the `queries` table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field, field_validator

from data_catalog.config import ConfigModel, read_mapping, validate_config
from data_catalog.hashing import canonical_json, json_hash
from data_catalog.shards import ATTRIBUTE_IDS  # one definition of the ids (DESIGN.md section 4)

Engine = Literal["google", "naver", "google-api", "naver-api"]
ENGINES: tuple[str, ...] = ("google", "naver", "google-api", "naver-api")

# DESIGN.md section 4: attribute ids used by shards, dataset.json and the classifier.


class KeywordGroup(ConfigModel):
    language: str = Field(min_length=2, max_length=8)  # BCP-47 primary tag: en, ko, ja, zh, ...
    engines: list[Engine]
    keywords: list[str] = Field(min_length=1)


class QueryPlan(ConfigModel):
    name: str
    version: int = Field(ge=1)
    description: str = ""
    max_per_query: int = Field(default=1000, ge=1)
    # Engine-specific windows that split one keyword into several result sets (each capped separately):
    # google: {"date": ["YYYY-MM-DD", "YYYY-MM-DD"]}; google-api: {"imgSize": ..., "dateRestrict": ...};
    # naver-api: {"filter": "large|medium|small|all", "sort": "sim|date"}.
    windows: dict[Engine, list[dict[str, Any]]] = {}
    attributes: dict[str, list[KeywordGroup]]

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, value: dict[str, list[KeywordGroup]]) -> dict[str, list[KeywordGroup]]:
        unknown = set(value) - set(ATTRIBUTE_IDS)
        if unknown:
            raise ValueError(f"unknown attribute(s) {sorted(unknown)}; attributes: {sorted(ATTRIBUTE_IDS)}")
        return value

    @property
    def hash(self) -> str:
        return json_hash(self.model_dump(mode="json"))

    def queries(self, engines: Iterable[str] | None = None) -> list[Query]:
        """Expand to one query per (engine, attribute, keyword, language, window), in plan order."""
        selected = set(engines) if engines is not None else set(ENGINES)
        out: list[Query] = []
        for attribute, groups in self.attributes.items():
            for group in groups:
                for engine in group.engines:
                    if engine not in selected:
                        continue
                    for keyword in group.keywords:
                        for window in self.windows.get(engine) or [None]:
                            out.append(Query.make(self.hash, engine, attribute, keyword, group.language, window,
                                                  self.max_per_query))
        return out


@dataclass(frozen=True)
class Query:
    query_id: str
    plan_hash: str
    engine: str
    attribute: str
    keyword: str
    language: str
    window: dict[str, Any] | None
    max_results: int

    @classmethod
    def make(cls, plan_hash: str, engine: str, attribute: str, keyword: str, language: str,
             window: dict[str, Any] | None, max_results: int) -> Query:
        # The id ignores the plan hash: the same query in a later plan version is the same query, so
        # a rerun with an extended plan does not fetch what it already has.
        identity = {"engine": engine, "attribute": attribute, "keyword": keyword, "language": language, "window": window}
        return cls(json_hash(identity)[:20], plan_hash, engine, attribute, keyword, language, window, max_results)

    def row(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "plan_hash": self.plan_hash,
            "engine": self.engine,
            "attribute": self.attribute,
            "keyword": self.keyword,
            "language": self.language,
            "window": canonical_json(self.window) if self.window is not None else None,
            "max_results": self.max_results,
        }


def urls_query(plan_hash: str, source: str) -> Query:
    """The pseudo-query that owns URLs ingested from a list (no engine, no attribute known)."""
    return Query.make(plan_hash, "urls", "unknown", source, "und", None, 0)


def load_plan(path: str | Path) -> QueryPlan:
    return validate_config(QueryPlan, read_mapping(Path(path)), str(path))


def queries_frame(queries: Iterable[Query]) -> pd.DataFrame:
    return pd.DataFrame([q.row() for q in queries], columns=list(Query.__dataclass_fields__))
