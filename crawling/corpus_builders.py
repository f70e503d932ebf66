"""The corpus builders the crawl's emulator may run, by name: an allow-list, never a reference taken from a value.

A config is data: `--set` values and deployment parameters come from whoever starts a run. When
`emulator.corpus_builder` was any 'module:function', `--set emulator.corpus_builder=os:system --set
emulator.corpus='touch X'` ran a shell command. Now the value is a name, looked up among

- the entry points of group `sdgan.corpus_builders` of the installed distributions: the project declares its
  own (`demo`, alignment's demo corpus) in pyproject.toml, and another package adds builders the same way;
- builders registered in this process with `register_corpus_builder` (Python code: whoever calls it can run
  code anyway; tests and notebooks use it).

Lookups import only what an entry point or a registration names, so `crawling` still never imports
`alignment` (the demo's builder lives there).
"""

from __future__ import annotations

import importlib.metadata
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GROUP = "sdgan.corpus_builders"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")  # entry point names as we allow them: no ':' or spaces

Builder = Callable[..., object]


class CorpusBuilderError(ValueError):
    """A corpus_builder value names no allowed builder, or its entry point does not give one."""


_registered: dict[str, Builder] = {}
_lock = threading.Lock()


def check_name(name: str) -> str:
    """`name` if it can name a builder; CorpusBuilderError saying what a value must be otherwise."""
    if ":" in name:
        raise CorpusBuilderError(f"corpus_builder names a registered builder ({', '.join(builder_names()) or 'none'}),"
                                 f" not a 'module:function' reference: got {name!r}; a package adds its builder as an"
                                 f" entry point of group {GROUP!r}")
    if not NAME.match(name):
        raise CorpusBuilderError(f"corpus_builder must be a builder name (letters, digits, '_', '-', '.'), "
                                 f"got {name!r}")
    return name


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def builder_names() -> list[str]:
    """Every name a config may give: entry points and in-process registrations."""
    with _lock:
        registered = set(_registered)
    return sorted(registered | set(_entry_points()))


def _not_allowed(name: str) -> CorpusBuilderError:
    return CorpusBuilderError(f"corpus_builder {name!r} is not a registered corpus builder; registered: "
                              f"{', '.join(builder_names()) or 'none'} (entry points of group {GROUP!r}: is the "
                              f"project installed? pip install -e .)")


def check_allowed(name: str) -> str:
    """`name` if a builder is allowed under it (without importing it); CorpusBuilderError naming the allowed ones."""
    check_name(name)
    if name not in builder_names():
        raise _not_allowed(name)
    return name


def register_corpus_builder(name: str, builder: Builder) -> None:
    """Allow `builder` under `name` in this process; a name already taken is an error, never a silent swap."""
    check_name(name)
    if not callable(builder):
        raise TypeError(f"corpus builder {name!r} is not callable: {builder!r}")
    with _lock:
        if name in _registered or name in _entry_points():
            raise CorpusBuilderError(f"corpus builder {name!r} is already registered")
        _registered[name] = builder


def unregister_corpus_builder(name: str) -> None:
    """Forget an in-process registration (entry points stay: they belong to installed packages)."""
    with _lock:
        if _registered.pop(name, None) is None:
            raise KeyError(f"no corpus builder {name!r} was registered in this process")


@contextmanager
def corpus_builder(name: str, builder: Builder) -> Iterator[None]:
    """`builder` is allowed under `name` inside the block."""
    register_corpus_builder(name, builder)
    try:
        yield
    finally:
        unregister_corpus_builder(name)


def resolve_builder(name: str) -> Builder:
    """The builder allowed under `name`; CorpusBuilderError naming the allowed ones when there is none."""
    check_name(name)
    with _lock:
        builder = _registered.get(name)
    if builder is not None:
        return builder
    entry = _entry_points().get(name)
    if entry is None:
        raise _not_allowed(name)
    return load_entry_point(entry)


def load_entry_point(entry: importlib.metadata.EntryPoint) -> Builder:
    """The builder an installed entry point names; CorpusBuilderError naming it when it does not load."""
    try:
        loaded = entry.load()
    except (ImportError, AttributeError) as exc:
        raise CorpusBuilderError(f"corpus_builder {entry.name!r}: its entry point {entry.value!r} does not load "
                                 f"({exc})") from exc
    if not callable(loaded):
        raise CorpusBuilderError(f"corpus_builder {entry.name!r}: its entry point {entry.value!r} is not callable")
    return loaded
