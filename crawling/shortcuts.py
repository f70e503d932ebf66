"""The crawl's shortcuts (`sdgan crawl --source ... --plan ...`, the crawl flow's parameters) as config overrides."""

from __future__ import annotations

import json
from pathlib import Path


def crawl_overrides(
    sources: list[str] | None = None,
    plan: str | None = None,
    urls: str | None = None,
    endpoint: str | None = None,
    max_per_query: int | None = None,
    retry_failed: bool = False,
) -> list[str]:
    """Translate the shortcuts into `--set` overrides of the crawl config (paths made absolute).

    When `--endpoint` or `--urls` leave no source for the built-in emulator to answer, it is switched off
    (`emulator=null`): the demo profile would otherwise still build and serve its corpus for nothing.
    """
    out: list[str] = []
    engines = [s for s in (sources or []) if s != "urls"]
    if sources:
        out.append(f"sources={json.dumps(list(sources))}")
    if plan:
        out.append(f"plan={json.dumps(str(Path(plan).expanduser().resolve()))}")
    if urls:
        out.append(f"urls={json.dumps(str(Path(urls).expanduser().resolve()))}")
        if not sources:
            out.append('sources=["urls"]')
    if endpoint:
        if len(engines) != 1:
            raise ValueError("--endpoint needs exactly one search --source (it is that engine's base URL)")
        out.append(f"endpoints={json.dumps({engines[0]: endpoint})}")
    if endpoint or (urls and not engines):
        out.append("emulator=null")
    if max_per_query is not None:
        out.append(f"max_per_query={int(max_per_query)}")
    if retry_failed:
        out.append("retry_failed=true")
    return out
