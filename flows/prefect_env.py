"""Offline-safe Prefect defaults, applied before Prefect is imported (its settings are read at import)."""

from __future__ import annotations

import logging
import os

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Our own cache policy decides what is cached; results of cached stage tasks are persisted explicitly.
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    # Stages log through `sdgan.<stage>` loggers (tick lines, progress); Prefect forwards them to the run's log.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "sdgan",
    # ... and says nothing when such a line is logged outside a run (a stage called from a notebook).
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def configure() -> None:
    """Set the defaults without overriding anything the user exported."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # Tick lines are INFO: without a level of its own the `sdgan` logger would inherit the root's WARNING.
    sdgan_logger = logging.getLogger("sdgan")
    if sdgan_logger.level == logging.NOTSET:
        sdgan_logger.setLevel(logging.INFO)
