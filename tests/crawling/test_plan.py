from __future__ import annotations

from pathlib import Path

import pytest

from crawling.config import CrawlConfig
from crawling.plan import ATTRIBUTE_IDS, load_plan
from data_catalog.config import ConfigError, default_config_dir, load_config

PLANS = default_config_dir() / "plans"


def test_full_plan_covers_every_attribute_and_both_engines() -> None:
    plan = load_plan(PLANS / "megn-full.yaml")
    queries = plan.queries()
    assert {q.attribute for q in queries} == set(ATTRIBUTE_IDS)
    assert {q.engine for q in queries} == {"google", "naver", "google-api", "naver-api"}
    assert {q.language for q in queries if q.engine.startswith("naver")} == {"ko"}
    assert len({q.query_id for q in queries}) == len(queries)
    # windows multiply the queries of an engine
    google_keywords = {(q.attribute, q.keyword) for q in queries if q.engine == "google"}
    assert len([q for q in queries if q.engine == "google"]) == len(google_keywords) * len(plan.windows["google"])


def test_query_ids_are_stable_across_plan_versions(tmp_path: Path) -> None:
    text = (PLANS / "megn-demo.yaml").read_text(encoding="utf-8")
    (tmp_path / "v2.yaml").write_text(text.replace("version: 1", "version: 2"), encoding="utf-8")
    a, b = load_plan(PLANS / "megn-demo.yaml"), load_plan(tmp_path / "v2.yaml")
    assert a.hash != b.hash
    assert [q.query_id for q in a.queries()] == [q.query_id for q in b.queries()]
    assert len(a.queries(["naver-api"])) == 4


def test_plan_errors_name_the_key_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\nattributes:\n  hats:\n    - {language: en, engines: [google], keywords: [hat]}\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*unknown attribute.*hats"):
        load_plan(bad)
    bad.write_text("name: x\nversion: 1\nattributes:\n  none:\n    - {language: en, engines: [bing], keywords: [a]}\n")
    with pytest.raises(ConfigError, match=r"attributes\.none\.0\.engines\.0"):
        load_plan(bad)


def test_crawl_config_inlines_the_plan_so_its_hash_covers_it(tmp_path: Path) -> None:
    config = load_config(CrawlConfig, "demo")
    assert config.plan is not None and config.plan.name == "megn-demo"
    plan_copy = tmp_path / "plan.yaml"
    plan_copy.write_text((PLANS / "megn-demo.yaml").read_text(encoding="utf-8").replace("max_per_query: 50", "max_per_query: 49"))
    edited = load_config(CrawlConfig, "demo", [f"plan={plan_copy}"])
    assert edited.hash != config.hash
    assert CrawlConfig.model_validate(config.to_dict()) == config  # config.json round trip
    assert load_config(CrawlConfig, "full").sources == ["google-api", "naver-api"]


def test_sources_need_their_inputs() -> None:
    with pytest.raises(ConfigError, match="need a query plan"):
        load_config(CrawlConfig, "demo", ["plan=null"])
    with pytest.raises(ConfigError, match="needs a URL list"):
        load_config(CrawlConfig, "demo", ['sources=["urls"]'])
