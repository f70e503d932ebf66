"""Start the loopback search emulator for a crawl whose config asks for one (demo, tests)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from crawling.config import EmulatorConfig
from crawling.emulator import SearchEmulator
from data_catalog.workspace import Workspace


def corpus_path(config: EmulatorConfig, workspace: Workspace) -> Path:
    path = Path(config.corpus).expanduser()
    return path if path.is_absolute() else workspace.root / path


def resolve_builder(reference: str) -> Callable[..., object]:
    """The function a "module:function" reference names, imported at run time so that crawling never imports
    the package that builds the corpus (the demo's builder lives in alignment)."""
    module_name, _, qualname = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"corpus_builder {reference!r}: cannot import module {module_name!r} ({exc})") from exc
    try:
        builder = functools.reduce(getattr, qualname.split("."), module)
    except AttributeError as exc:
        raise ValueError(f"corpus_builder {reference!r}: module {module_name!r} has no {qualname!r}") from exc
    if not callable(builder):
        raise ValueError(f"corpus_builder {reference!r} is not callable")
    return builder


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
