"""Start the loopback search emulator for a crawl whose config asks for one (demo, tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crawling.config import EmulatorConfig
from crawling.demo_corpus import build_demo_corpus
from crawling.emulator import SearchEmulator
from data_catalog.workspace import Workspace


def corpus_path(config: EmulatorConfig, workspace: Workspace) -> Path:
    path = Path(config.corpus).expanduser()
    return path if path.is_absolute() else workspace.root / path


@contextmanager
def start_emulator(config: EmulatorConfig, workspace: Workspace) -> Iterator[SearchEmulator]:
    corpus = corpus_path(config, workspace)
    if config.build_demo_corpus:
        build_demo_corpus(corpus)
    if not corpus.is_dir():
        raise FileNotFoundError(f"emulator corpus folder not found: {corpus}")
    with SearchEmulator(corpus, faults=config.faults) as emulator:
        yield emulator
