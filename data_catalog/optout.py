"""Opt-out registry: URLs, domains and content hashes that must never enter the dataset.

Applied at crawl time (before a request, and on the downloaded bytes) and again at shard time, so an
opt-out that arrives after the crawl still removes the image from every later dataset version.
File format: one entry per line, `#` comments; `url:`, `domain:` or `sha256:` prefixes, or bare values
(a 64-hex string is a hash, `http(s)://...` a URL, anything else a domain). Domains cover subdomains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from data_catalog.hashing import is_sha256, json_hash


def normalise_url(url: str) -> str:
    parts = urlsplit(url.strip())
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower(), fragment="").geturl()


@dataclass
class OptOutRegistry:
    urls: set[str] = field(default_factory=set)
    domains: set[str] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: str | Path | None) -> OptOutRegistry:
        registry = cls()
        if path is None:
            return registry
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"opt-out registry not found: {path}")
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if line:
                registry.add(line, where=f"{path}:{number}")
        return registry

    def add(self, entry: str, where: str = "") -> None:
        kind, sep, value = entry.partition(":")
        if sep and kind in {"url", "domain", "sha256"} and not value.startswith("//"):
            entry = value.strip()
        else:
            kind = "sha256" if is_sha256(entry.lower()) else "url" if entry.startswith(("http://", "https://")) else "domain"
        if kind == "sha256":
            if not is_sha256(entry.lower()):
                raise ValueError(f"{where}: {entry!r} is not a sha256 hex digest")
            self.hashes.add(entry.lower())
        elif kind == "url":
            self.urls.add(normalise_url(entry))
        else:
            self.domains.add(entry.lower().lstrip("."))

    def blocks_url(self, url: str) -> str | None:
        """The reason `url` is opted out, or None."""
        if normalise_url(url) in self.urls:
            return "opt_out_url"
        host = (urlsplit(url).hostname or "").lower()
        labels = host.split(".")
        if any(".".join(labels[i:]) in self.domains for i in range(len(labels))):
            return "opt_out_domain"
        return None

    def blocks_sha256(self, sha256: str) -> str | None:
        return "opt_out_sha256" if sha256 in self.hashes else None

    @property
    def hash(self) -> str:
        return json_hash({"urls": sorted(self.urls), "domains": sorted(self.domains), "hashes": sorted(self.hashes)})
