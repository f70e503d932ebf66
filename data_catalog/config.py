"""Typed stage configuration: YAML profiles + `--set key=value` overrides, validated by pydantic.

Every stage declares one `StageConfig` subclass. The resolved config is what gets hashed into cache keys
and saved as `config.json` next to outputs, so two runs with equal configs are interchangeable.

A config with a `resume` field (the trainers) also has `resume_overrides`: when `resume` is given,
`load_config` records there the `--set` values given with it, because a resumed run continues with the
config it saved and changes only what was asked for explicitly (training/common/resume.py). The profile's
other values do not reach a resumed run: repeating them is not needed, and forgetting them changes nothing.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from data_catalog.atomic import atomic_write_text
from data_catalog.hashing import json_hash

CONFIG_FILE_NAME = "config.json"
RESUME_KEY = "resume"
RESUME_OVERRIDES_KEY = "resume_overrides"


class ConfigError(ValueError):
    """A config file or override is missing, malformed, or does not match the stage's schema."""


class ConfigModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are immutable once loaded."""

    # No inf / NaN: canonical JSON (config hashes, config.json) cannot hold them, and no setting means them.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class StageConfig(ConfigModel):
    """Base for one stage's config. Subclasses set `STAGE` to the stage name used for file lookup."""

    STAGE: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if not data.get(RESUME_OVERRIDES_KEY, True):
            del data[RESUME_OVERRIDES_KEY]  # absent unless used: a config that resumes nothing hashes as before
        return data

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


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str],
                    parsed: Iterable[tuple[list[str], Any]] = ()) -> dict[str, Any]:
    """A deep copy of `data` with every `--set` text (or already parsed (keys, value) pair) applied in order."""
    merged = json.loads(json.dumps(data))  # deep copy of plain data
    pairs = [(text, *parse_override(text)) for text in overrides]
    pairs += [(".".join(keys) + "=...", keys, value) for keys, value in parsed]
    for text, keys, value in pairs:
        if (found := _non_finite(value)) is not None:
            key = ".".join(keys + ([found[0]] if found[0] else []))
            raise ConfigError(f"--set {text!r}: key {key!r}: {found[1]} is not a finite number (inf and NaN are not "
                              f"config values)")
        node = merged
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {'.'.join(keys[:-1])!r} is not a section")
            node = child
        node[keys[-1]] = value
    return merged


def resume_overrides(cls: type[BaseModel], data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`data` with `resume_overrides` filled from the `--set` values, when `cls` resumes and `resume` is set.

    The dotted keys and YAML-read values of every override except `resume` itself, the last one winning."""
    if RESUME_OVERRIDES_KEY not in cls.model_fields:
        return data
    parsed = [(".".join(keys), value) for keys, value in map(parse_override, overrides)]
    if any(key.split(".")[0] == RESUME_OVERRIDES_KEY for key, _ in parsed):
        raise ConfigError(f"--set {RESUME_OVERRIDES_KEY}: it is filled from the --set values given with "
                          f"{RESUME_KEY}; set the keys themselves")
    if data.get(RESUME_KEY) is None:
        if data.get(RESUME_OVERRIDES_KEY):
            raise ConfigError(f"{RESUME_OVERRIDES_KEY} is given but {RESUME_KEY} is not")
        return data
    return {**data, RESUME_OVERRIDES_KEY: {key: value for key, value in parsed if key != RESUME_KEY}}


def apply_dotted(data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `data` with each dotted key of `values` set (what `--set` does, from parsed values)."""
    return apply_overrides(data, [], parsed=[(key.split("."), value) for key, value in values.items()])


def _non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """(dotted path, value) of the first inf / NaN in plain data (dicts, lists, numbers), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        if (found := _non_finite(item, f"{path}.{key}" if path else str(key))) is not None:
            return found
    return None


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
    what = getattr(cls, "STAGE", "") or cls.__name__
    overridden_keys = set(overridden)
    try:
        config = cls.model_validate(dict(data))
    except ValidationError as exc:
        lines = [_describe(err, cls, source, overridden_keys) for err in exc.errors()]
        raise ConfigError(f"invalid {what} config:\n  " + "\n  ".join(lines)) from None
    # Typed floats refuse inf / NaN themselves; free-form values (dict[str, Any]) are checked here.
    if (found := _non_finite(config.model_dump(mode="python"))) is not None:
        key = found[0]
        where = next((f"--set {k}" for k in overridden_keys if key == k or key.startswith(k + ".")), source)
        raise ConfigError(f"invalid {what} config:\n  {where}: key {key!r}: {found[1]} is not a finite number (inf "
                          f"and NaN are not config values)")
    return config


def load_config(
    cls: type[C],
    profile: str = "demo",
    overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
    path: str | Path | None = None,
) -> C:
    """Read `configs/<profile>/<stage>.yaml` (or `path`), apply `--set` overrides, validate."""
    file = Path(path) if path else config_path(cls.STAGE, profile, config_dir)
    data = resume_overrides(cls, apply_overrides(read_mapping(file), overrides), overrides)
    overridden = {".".join(parse_override(o)[0]) for o in overrides}
    return validate_config(cls, data, str(file), overridden)


def load_saved_config(cls: type[C], folder: str | Path) -> C:
    """Re-read the `config.json` a run saved, e.g. to resume it with exactly the same settings."""
    path = Path(folder) / CONFIG_FILE_NAME
    payload = read_mapping(path)
    if payload.get("stage") != cls.STAGE:
        raise ConfigError(f"{path}: saved for stage {payload.get('stage')!r}, not {cls.STAGE!r}")
    return validate_config(cls, payload.get("config", {}), str(path))
