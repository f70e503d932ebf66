"""Offline-safe Prefect defaults, applied before Prefect is imported (its settings are read at import)."""

from __future__ import annotations

import logging
import os
import sys

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Our own cache policy decides what is cached; results of cached stage tasks are persisted explicitly.
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    # Stages log through `sdgan.<stage>` loggers (tick lines, progress); Prefect forwards them to the run's log.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "sdgan",
    # ... and says nothing when such a line is logged outside a run (a stage called from a notebook).
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # The embedded server needs more than Prefect's 20 s to start on a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def configure() -> None:
    """Set the defaults without overriding anything the user exported."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # Tick lines are INFO: without a level of its own the `sdgan` logger would inherit the root's WARNING.
    sdgan_logger = logging.getLogger("sdgan")
    if sdgan_logger.level == logging.NOTSET:
        sdgan_logger.setLevel(logging.INFO)
    forward_stage_logs()


def forward_stage_logs() -> None:
    """Attach Prefect's run-log handlers to `sdgan` when Prefect configured its logging before we set
    PREFECT_LOGGING_EXTRA_LOGGERS (a worker or `python -m prefect.engine` imports Prefect first, then the flows)."""
    configuration = sys.modules.get("prefect.logging.configuration")
    if configuration is None or not getattr(configuration, "PROCESS_LOGGING_CONFIG", None):
        return  # Prefect is not configured yet: it will read the variable itself
    sdgan_logger = logging.getLogger("sdgan")
    for handler in logging.getLogger("prefect.extra").handlers:
        if handler not in sdgan_logger.handlers:
            sdgan_logger.addHandler(handler)
