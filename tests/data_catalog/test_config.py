from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from data_catalog.config import (
    ConfigError,
    ConfigModel,
    StageConfig,
    apply_overrides,
    load_config,
    load_saved_config,
    parse_override,
)


class Filters(ConfigModel):
    min_size: int = 64
    blur: float = 100.0


class ToyConfig(StageConfig):
    STAGE = "toy"
    name: str = "x"
    batch: int = 8
    tags: list[str] = []
    filters: Filters = Filters()


def write(tmp_path: Path, text: str, profile: str = "demo") -> Path:
    folder = tmp_path / profile
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "toy.yaml"
    path.write_text(text)
    return path


def test_loads_profile_file_and_applies_typed_overrides(tmp_path: Path) -> None:
    write(tmp_path, "name: a\nbatch: 4\nfilters:\n  min_size: 32\n")
    config = load_config(ToyConfig, "demo", ["batch=16", "filters.blur=2.5", "tags=[a, b]"], config_dir=tmp_path)
    assert config.name == "a"
    assert config.batch == 16
    assert config.filters.min_size == 32 and config.filters.blur == 2.5
    assert config.tags == ["a", "b"]


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nbatchh: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(ToyConfig, "demo", config_dir=tmp_path)
    message = str(err.value)
    assert "'batchh'" in message and str(path) in message and "did you mean 'batch'" in message


def test_unknown_nested_key_names_full_path(tmp_path: Path) -> None:
    write(tmp_path, "filters:\n  min_sise: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'filters\.min_sise' \(did you mean 'min_size'\?\)"):
        load_config(ToyConfig, "demo", config_dir=tmp_path)


def test_wrong_type_names_key_file_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "batch: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(ToyConfig, "demo", config_dir=tmp_path)
    assert "'batch'" in str(err.value) and str(path) in str(err.value) and "'many'" in str(err.value)


def test_wrong_override_is_attributed_to_set(tmp_path: Path) -> None:
    write(tmp_path, "batch: 2\n")
    with pytest.raises(ConfigError, match=r"--set filters\.min_size: key 'filters\.min_size'"):
        load_config(ToyConfig, "demo", ["filters.min_size=big"], config_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"--set nope: unknown key 'nope'"):
        load_config(ToyConfig, "demo", ["nope=1"], config_dir=tmp_path)


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*full/toy\.yaml"):
        load_config(ToyConfig, "full", config_dir=tmp_path)


def test_malformed_yaml_and_non_mapping(tmp_path: Path) -> None:
    write(tmp_path, "batch: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(ToyConfig, "demo", config_dir=tmp_path)
    write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(ToyConfig, "demo", config_dir=tmp_path)


def test_override_syntax_errors() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("batch")
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({"batch": 3}, ["batch.x=1"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("a..b=1")
    assert parse_override("a.b=true") == (["a", "b"], True)
    assert parse_override("a=!") == (["a"], "!")
    assert parse_override("a=[1,") == (["a"], "[1,")
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=") == (["a"], "")


def test_hash_is_canonical_and_sensitive(tmp_path: Path) -> None:
    a = ToyConfig(name="a", batch=4)
    b = ToyConfig.model_validate({"batch": 4, "name": "a"})
    assert a.hash == b.hash and len(a.hash) == 64
    assert ToyConfig(name="a", batch=5).hash != a.hash
    assert ToyConfig(name="a", filters=Filters(blur=1.0)).hash != ToyConfig(name="a").hash


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    config = ToyConfig(name="z", tags=["q"])
    path = config.save(tmp_path)
    saved = json.loads(path.read_text())
    assert saved["stage"] == "toy" and saved["config_hash"] == config.hash
    assert load_saved_config(ToyConfig, tmp_path) == config


def test_saved_config_of_another_stage_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"stage": "other", "config": {}}))
    with pytest.raises(ConfigError, match="saved for stage 'other'"):
        load_saved_config(ToyConfig, tmp_path)


def test_configs_are_immutable() -> None:
    config = ToyConfig()
    with pytest.raises(Exception):
        config.batch = 3  # type: ignore[misc]


class FreeForm(StageConfig):
    STAGE = "toy"
    blur: float = 1.0
    options: dict[str, Any] = Field(default_factory=dict)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400", "-1e400"])
def test_a_non_finite_override_names_its_key(tmp_path: Path, value: str) -> None:
    write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"key 'filters\.blur'.*finite number"):
        load_config(ToyConfig, "demo", [f"filters.blur={value}"], config_dir=tmp_path)


def test_a_non_finite_value_inside_free_form_data_names_its_path(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "toy.yaml").write_text("options: {a: [1, .inf]}\n")
    with pytest.raises(ConfigError, match=r"toy\.yaml: key 'options\.a\.1': inf is not a finite number"):
        load_config(FreeForm, "demo", config_dir=tmp_path)
    (folder / "toy.yaml").write_text("")
    with pytest.raises(ConfigError, match=r"--set 'options=\{b: \.nan\}': key 'options\.b': nan is not a finite"):
        load_config(FreeForm, "demo", ["options={b: .nan}"], config_dir=tmp_path)
    assert load_config(FreeForm, "demo", ["options={b: 1e400}"], config_dir=tmp_path).options == {"b": "1e400"}


class Resumable(StageConfig):
    STAGE = "toy"
    batch: int = 8
    filters: Filters = Filters()
    resume: str | None = None
    resume_overrides: dict[str, Any] = Field(default_factory=dict)


def test_resume_records_the_overrides_given_with_it(tmp_path: Path) -> None:
    write(tmp_path, "batch: 4\n")
    plain = load_config(Resumable, "demo", ["filters.blur=3"], config_dir=tmp_path)
    assert plain.resume_overrides == {} and "resume_overrides" not in plain.to_dict()  # hashes as without the field
    resumed = load_config(Resumable, "demo", ["filters.blur=3", "resume=r-1", "filters.blur=4", "batch=2"],
                          config_dir=tmp_path)
    assert resumed.resume_overrides == {"filters.blur": 4, "batch": 2}
    assert resumed.to_dict()["resume_overrides"] == {"filters.blur": 4, "batch": 2}
    with pytest.raises(ConfigError, match="filled from the --set values given with resume"):
        load_config(Resumable, "demo", ["resume=r-1", "resume_overrides={batch: 1}"], config_dir=tmp_path)
