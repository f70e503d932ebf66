"""Typed stage configuration: YAML profiles + `--set key=value` overrides, validated by pydantic.

Every stage declares one `StageConfig` subclass. The resolved config is what gets hashed into cache keys
and saved as `config.json` next to outputs, so two runs with equal configs are interchangeable.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from data_catalog.atomic import atomic_write_text
from data_catalog.hashing import json_hash

CONFIG_FILE_NAME = "config.json"


class ConfigError(ValueError):
    """A config file or override is missing, malformed, or does not match the stage's schema."""


class ConfigModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class StageConfig(ConfigModel):
    """Base for one stage's config. Subclasses set `STAGE` to the stage name used for file lookup."""

    STAGE: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of the resolved config."""
        return json_hash(self.to_dict())

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_FILE_NAME
        payload = {"stage": self.STAGE, "config_hash": self.hash, "config": self.to_dict()}
        atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return path


C = TypeVar("C", bound=ConfigModel)


def default_config_dir() -> Path:
    """`$SDGAN_CONFIG_DIR`, else the `configs/` folder of this checkout, else `./configs`."""
    if env := os.environ.get("SDGAN_CONFIG_DIR"):
        return Path(env)
    checkout = Path(__file__).resolve().parents[1] / "configs"
    return checkout if checkout.is_dir() else Path.cwd() / "configs"


def config_path(stage: str, profile: str, config_dir: str | Path | None = None) -> Path:
    return Path(config_dir or default_config_dir()) / profile / f"{stage}.yaml"


_NULLS = {"null", "Null", "NULL", "~"}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (["a", "b"], 3).

    The value is read as YAML so numbers, booleans and lists keep their type; text YAML cannot read as a
    value (`!`, `a: b`, `[1,`) stays a plain string, and the stage's schema then judges it.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return key.split("."), raw
    if value is None and raw.strip() not in _NULLS:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    merged = json.loads(json.dumps(data))  # deep copy of plain data
    for text in overrides:
        keys, value = parse_override(text)
        node = merged
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {'.'.join(keys[:-1])!r} is not a section")
            node = child
        node[keys[-1]] = value
    return merged


def read_mapping(path: Path) -> dict[str, Any]:
    """A YAML (or JSON, its subset) file holding a mapping; empty files read as {}."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def _known_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names valid at `loc` (the parent of the offending key), for 'did you mean' hints."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return list(getattr(current, "model_fields", {}))


def _describe(error: Mapping[str, Any], model: type[BaseModel], source: str, overridden: set[str]) -> str:
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc)
    where = f"--set {key}" if key in overridden else source
    if error["type"] == "extra_forbidden":
        known = _known_keys(model, error["loc"][:-1])
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{where}: unknown key {key!r}{suggestion}; valid keys: {', '.join(sorted(known))}"
    if error["type"] == "missing":
        return f"{where}: missing required key {key!r}"
    return f"{where}: key {key!r}: {error['msg']} (got {error.get('input')!r})"


def validate_config(cls: type[C], data: Mapping[str, Any], source: str, overridden: Iterable[str] = ()) -> C:
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        overridden_keys = set(overridden)
        lines = [_describe(err, cls, source, overridden_keys) for err in exc.errors()]
        what = getattr(cls, "STAGE", "") or cls.__name__
        raise ConfigError(f"invalid {what} config:\n  " + "\n  ".join(lines)) from None


def load_config(
    cls: type[C],
    profile: str = "demo",
    overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
    path: str | Path | None = None,
) -> C:
    """Read `configs/<profile>/<stage>.yaml` (or `path`), apply `--set` overrides, validate."""
    file = Path(path) if path else config_path(cls.STAGE, profile, config_dir)
    data = apply_overrides(read_mapping(file), overrides)
    overridden = {".".join(parse_override(o)[0]) for o in overrides}
    return validate_config(cls, data, str(file), overridden)


def load_saved_config(cls: type[C], folder: str | Path) -> C:
    """Re-read the `config.json` a run saved, e.g. to resume it with exactly the same settings."""
    path = Path(folder) / CONFIG_FILE_NAME
    payload = read_mapping(path)
    if payload.get("stage") != cls.STAGE:
        raise ConfigError(f"{path}: saved for stage {payload.get('stage')!r}, not {cls.STAGE!r}")
    return validate_config(cls, payload.get("config", {}), str(path))
