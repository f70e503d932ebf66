"""The result of a metric that was not computed: a report prints the reason where the number would be."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Skipped"]


@dataclass(frozen=True)
class Skipped:
    """Why a metric is missing (no model path given, ...); `skipped` lets a JSON reader tell it from a score."""

    reason: str
    skipped: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
