"""Progress of a long loop (crawl, align), twice: a tqdm bar for a terminal and periodic INFO tick lines for logs.

The bar is what a person at a terminal watches; tqdm writes nothing into Prefect's run log (and hides itself
when stderr is not a TTY), so the same counts also go out as log lines, at most every `interval` seconds and
once at the end, through a logger the orchestration layer forwards (`sdgan.*`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from tqdm import tqdm


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts done items against a total that may be unknown or grow as work is discovered. Thread-safe."""

    def __init__(self, desc: str, unit: str, logger: logging.Logger, total: int | None = None,
                 interval: float = 10.0) -> None:
        self.desc, self.unit, self.logger, self.interval = desc, unit, logger, interval
        self.done = 0
        self.total = total
        self.postfix: dict[str, Any] = {}
        self.started = time.monotonic()
        self._last_tick = self.started
        self._lock = threading.Lock()
        self._closed = False
        self.bar = tqdm(desc=desc, unit=unit, total=total, disable=None, dynamic_ncols=True)

    def add_total(self, count: int) -> None:
        """`count` more items are known (negative: fewer); the bar then shows done/known and an ETA."""
        if not count:
            return
        with self._lock:
            self.total = max(self.done, (self.total or 0) + count)
            self.bar.total = self.total
            self.bar.refresh()

    def update(self, count: int = 1, **postfix: Any) -> None:
        """`count` items finished; `postfix` replaces the named counts shown after the bar."""
        with self._lock:
            self.done += count
            self.postfix.update(postfix)
            self.bar.update(count)
            if postfix:
                self.bar.set_postfix(self.postfix, refresh=False)
            now = time.monotonic()
            due = now - self._last_tick >= self.interval
            if due:
                self._last_tick = now
        if due:
            self.logger.info("%s", self.line())

    def line(self, final: bool = False) -> str:
        """`crawl: 120/300 url (40%), 9.5 url/s, ETA 0:19, ok=...`; the final line says done and the time taken."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        parts = [f"{self.desc}: {'done ' if final else ''}{count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts.append(f"{rate:.1f} {self.unit}/s")
        if final:
            parts.append(f"in {_duration(elapsed)}")
        elif self.total is not None and rate > 0:
            parts.append(f"ETA {_duration(max(0, self.total - self.done) / rate)}")
        if self.postfix:
            parts.append(" ".join(f"{k}={v}" for k, v in self.postfix.items()))
        return ", ".join(parts)

    def close(self) -> None:
        """Close the bar and log the final tick line (once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.bar.close()
        self.logger.info("%s", self.line(final=True))
