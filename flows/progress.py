"""A stage's progress as a Prefect progress artifact (the stage only calls `progress(fraction, line)`)."""

from __future__ import annotations

import logging
import time
from uuid import UUID

log = logging.getLogger("sdgan.flows")


class PrefectProgress:
    """Keeps one progress artifact per stage run up to date, at most every `min_interval` seconds.

    The tick line itself reaches the run's log through the `sdgan.*` loggers Prefect forwards; this only moves
    the bar. A failure to reach the API never stops the stage.
    """

    def __init__(self, stage: str, min_interval: float = 2.0) -> None:
        self.stage = stage
        self.min_interval = min_interval
        self.artifact: UUID | None = None
        self.last = float("-inf")

    def __call__(self, fraction: float, line: str = "") -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self.last < self.min_interval:
            return
        self.last = now
        percent = max(0.0, min(100.0, 100.0 * float(fraction)))
        try:
            from prefect.artifacts import create_progress_artifact, update_progress_artifact

            if self.artifact is None:
                self.artifact = create_progress_artifact(percent, key=f"{self.stage}-progress",
                                                         description=line or f"{self.stage} progress")
            else:
                update_progress_artifact(self.artifact, percent, description=line or None)
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            log.debug("progress artifact of %s not updated: %s", self.stage, exc)
