"""Offline-safe Prefect defaults, applied before Prefect is imported (its settings are read at import)."""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Our own cache policy decides what is cached; results of cached stage tasks are persisted explicitly.
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
}


def configure() -> None:
    """Set the defaults without overriding anything the user exported."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
