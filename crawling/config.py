"""Typed config of the crawl stage (configs/<profile>/crawl.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from crawling.corpus_builders import check_allowed
from crawling.plan import QueryPlan, load_plan
from data_catalog.config import ConfigModel, StageConfig, default_config_dir

Source = Literal["google", "naver", "google-api", "naver-api", "urls"]


def split_host_port(text: str) -> tuple[str, int | None]:
    """("host", port or None) of "host", "host:port" or "[v6]:port"; ValueError when it is neither."""
    parts = urlsplit(f"//{text.strip()}")
    if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username is not None:
        raise ValueError(f"not a host or host:port: {text!r}")
    return parts.hostname.lower(), parts.port  # .port raises ValueError for a bad port


class HttpConfig(ConfigModel):
    """Politeness and robustness of every request the crawler makes."""

    threads: int = Field(default=16, ge=1, le=512)  # global download concurrency
    per_host_connections: int = Field(default=4, ge=1)
    per_host_rate: float = Field(default=0.0, ge=0)  # requests/s per host, 0 = unlimited
    global_rate: float = Field(default=0.0, ge=0)  # requests/s overall, 0 = unlimited
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=20.0, gt=0)  # longest silence between bytes
    total_timeout: float = Field(default=60.0, gt=0)  # longest single response, headers to last byte
    max_attempts: int = Field(default=3, ge=1)
    backoff_seconds: float = Field(default=1.0, ge=0)
    max_retry_after: float = Field(default=60.0, ge=0)  # longest Retry-After we wait for; longer = failed
    max_redirects: int = Field(default=5, ge=0)
    max_bytes: int = Field(default=25_000_000, ge=1)
    user_agent: str = "sdgan-pipeline/0.1 (research face-dataset crawler; honours robots.txt and X-Robots-Tag noai)"
    robots_token: str = "sdgan-pipeline"  # the name robots.txt rules are matched against
    respect_robots: bool = True
    x_robots_tag_blocks: list[str] = ["noai", "noimageai"]
    allowed_content_types: list[str] = ["image/", "application/octet-stream", "binary/octet-stream"]
    # curl's --resolve: {"host" or "host:port": "address:port" or "address"}. Requests to the host connect to the
    # address; URLs, Host headers and what is recorded keep the host. The crawl adds the built-in emulator's
    # alias at run time (in the copy of the config its tasks get), so its random port is never hashed or stored.
    host_aliases: dict[str, str] = {}

    @field_validator("host_aliases")
    @classmethod
    def _aliases_are_hosts(cls, value: dict[str, str]) -> dict[str, str]:
        for text in (*value, *value.values()):
            try:
                split_host_port(text)
            except ValueError as exc:
                raise ValueError(f"host_aliases: {exc}") from None
        return value


class ImageRules(ConfigModel):
    min_side: int = Field(default=64, ge=1)
    max_pixels: int = Field(default=40_000_000, ge=1)  # larger = decompression bomb
    formats: list[str] = ["JPEG", "PNG", "WEBP", "BMP"]


EMULATOR_PUBLIC_URL = "http://search-emulator.invalid"  # .invalid never resolves (RFC 2606)


class EmulatorConfig(ConfigModel):
    """Serve search results from a local folder (the demo and tests): endpoints point at it."""

    corpus: str  # folder of images (+ index.json); relative paths resolve against the workspace
    faults: list[str] = []
    # The base URL the emulator writes into its results and the crawl records, mapped to the real 127.0.0.1:<port>
    # by an http.host_aliases entry at run time: the same corpus gives the same URLs whatever port was free.
    # null: record the real loopback URLs (they change with the port, so nothing built on them is reproducible).
    public_url: str | None = EMULATOR_PUBLIC_URL
    # The name of an allowed builder (crawling/corpus_builders.py: the project's `demo`, other entry points of
    # group sdgan.corpus_builders, or registered in-process), called as builder(corpus_path, **corpus_options)
    # before serving. A name, never a 'module:function': a config value must not choose which code runs.
    corpus_builder: str | None = None
    corpus_options: dict[str, Any] = {}

    @field_validator("corpus_builder")
    @classmethod
    def _allowed_builder(cls, value: str | None) -> str | None:
        return value if value is None else check_allowed(value)

    @field_validator("public_url")
    @classmethod
    def _public_base(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname or parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError(f"emulator public_url must be a plain http://host[:port] base (the emulator speaks "
                             f"http only), got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _options_need_builder(self) -> EmulatorConfig:
        if self.corpus_options and self.corpus_builder is None:
            raise ValueError("emulator corpus_options are given but no corpus_builder takes them")
        return self


class CrawlConfig(StageConfig):
    STAGE = "crawl"
    sources: list[Source] = Field(default=["google-api", "naver-api"], min_length=1)
    # The plan is inlined when the config is loaded, so config.json and the config hash cover its content.
    plan: QueryPlan | None = None
    urls: str | None = None  # txt (one URL a line), csv or parquet with a `url` column; for source "urls"
    endpoints: dict[str, str] = {}  # per-engine base URL overrides
    max_per_query: int | None = Field(default=None, ge=1)  # caps the plan's max_per_query
    query_workers: int = Field(default=4, ge=1)  # queries searched at once within a task
    queries_per_task: int = Field(default=1, ge=1)  # when a flow fans out: queries per Prefect task
    retry_failed: bool = False  # fetch again the URLs whose last attempt failed
    optout: str | None = None  # opt-out registry file
    flush_every: int = Field(default=256, ge=1)  # rows per Parquet batch
    http: HttpConfig = HttpConfig()
    images: ImageRules = ImageRules()
    emulator: EmulatorConfig | None = None

    @field_validator("plan", mode="before")
    @classmethod
    def _inline_plan(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            path = Path(value)
            if not path.is_absolute() and not path.exists():
                path = default_config_dir() / path
            return load_plan(path)
        return value

    @model_validator(mode="after")
    def _sources_have_inputs(self) -> CrawlConfig:
        engines = [s for s in self.sources if s != "urls"]
        if engines and self.plan is None:
            raise ValueError(f"sources {engines} need a query plan (key 'plan')")
        if "urls" in self.sources and not self.urls:
            raise ValueError("source 'urls' needs a URL list (key 'urls')")
        return self
