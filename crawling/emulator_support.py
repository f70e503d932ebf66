"""Start the loopback search emulator for a crawl whose config asks for one (demo, tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crawling.config import EmulatorConfig
from crawling.corpus_builders import resolve_builder
from crawling.emulator import SearchEmulator
from data_catalog.workspace import Workspace


def corpus_path(config: EmulatorConfig, workspace: Workspace) -> Path:
    path = Path(config.corpus).expanduser()
    return path if path.is_absolute() else workspace.root / path


@contextmanager
def start_emulator(config: EmulatorConfig, workspace: Workspace) -> Iterator[SearchEmulator]:
    """Build the corpus if asked, then serve it under `config.public_url`.

    The crawl reaches that stable name through `emulator.host_aliases` (its HTTP client's --resolve), so the
    URLs it records are the same whichever port the emulator got."""
    corpus = corpus_path(config, workspace)
    if config.corpus_builder is not None:
        resolve_builder(config.corpus_builder)(corpus, **config.corpus_options)
    if not corpus.is_dir():
        raise FileNotFoundError(f"emulator corpus folder not found: {corpus}")
    with SearchEmulator(corpus, faults=config.faults, public_url=config.public_url) as emulator:
        yield emulator
