"""Config sections every trainer shares (each stage's config class composes them)."""

from __future__ import annotations

from pydantic import Field

from data_catalog.config import ConfigModel


class RuntimeConfig(ConfigModel):
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    threads: int | None = Field(default=None, ge=1)  # torch CPU threads
