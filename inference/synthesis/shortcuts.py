"""`sdgan synthesize --attribute A --template PNG`: the two shortcuts that need each other, as config overrides."""

from __future__ import annotations

import json
from pathlib import Path


def synthesize_overrides(attribute: list[str] | None = None, template: str | None = None) -> list[str]:
    """`attributes=[...]`, and `templates={A: PNG}` for the one attribute `--template` belongs to."""
    out: list[str] = []
    if attribute:
        out.append(f"attributes={json.dumps(list(attribute))}")
    if template:
        if not attribute or len(attribute) != 1:
            raise ValueError("--template needs exactly one --attribute: the attribute the template PNG draws")
        path = str(Path(template).expanduser().resolve())
        out.append(f"templates={json.dumps({attribute[0]: path})}")
    return out


__all__ = ["synthesize_overrides"]
