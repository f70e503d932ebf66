"""The offline demo corpus: four classes with the plan's keywords, really composited, reproducible and idempotent;
and the emulator's corpus_builder hook that runs it without crawling importing alignment."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from alignment.demo_corpus import CLASSES, KEYWORDS, analysed_photos, build_demo_corpus, dressed, template_pool
from alignment.detect import make_detector
from crawling.config import CrawlConfig, EmulatorConfig
from crawling.corpus_builders import (
    GROUP,
    builder_names,
    corpus_builder,
    load_entry_point,
    register_corpus_builder,
    resolve_builder,
)
from crawling.emulator import load_corpus
from crawling.emulator_support import start_emulator
from crawling.plan import load_plan
from data_catalog import Workspace
from data_catalog.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = 2
PHOTOS = 3  # astronaut, t1, Tom Hanks


def index_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "index.json").read_text(encoding="utf-8"))


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_corpus(tmp_path_factory.mktemp("demo-corpus"), variants_per_class=VARIANTS, seed=0)


def test_every_class_is_there_with_its_plan_keywords(corpus: Path) -> None:
    index = index_of(corpus)
    assert index["classes"] == {c: PHOTOS * VARIANTS for c in CLASSES}
    for entry in index["images"]:
        assert entry["keywords"] == KEYWORDS[entry["attribute"]] and entry["licence"] and entry["title"]
        with Image.open(corpus / entry["file"]) as image:
            assert image.format == "JPEG" and min(image.size) >= 64
    served = load_corpus(corpus)
    assert len(served) == len(index["images"])
    attribute_of = {e["file"]: e["attribute"] for e in index["images"]}
    for query in load_plan(ROOT / "configs" / "plans" / "megn-demo.yaml").queries():
        hits = {attribute_of[image.name] for image in served if image.matches(query.keyword)}
        assert hits == {query.attribute}, query.keyword


def test_attributes_are_composited_on_every_face() -> None:
    photos = {p.name: p for p in analysed_photos(make_detector("retinaface"))}
    assert len(photos["t1"].faces) == 6
    rng = np.random.default_rng(0)
    masked, styles = dressed(photos["t1"], template_pool("face_mask", 0), rng)
    glasses, _ = dressed(photos["t1"], template_pool("sunglasses", 0), rng)
    plain = photos["t1"].image.astype(int)
    assert len(styles) == 6
    for landmarks in photos["t1"].faces:
        mouth = np.round(landmarks[48:68]).astype(int)
        eyes = np.round(landmarks[36:48]).astype(int)
        assert np.abs(masked[mouth[:, 1], mouth[:, 0]] - plain[mouth[:, 1], mouth[:, 0]]).mean() > 20
        assert np.abs(glasses[eyes[:, 1], eyes[:, 0]] - plain[eyes[:, 1], eyes[:, 0]]).mean() > 20
    assert (masked[:20, :20] == plain[:20, :20]).all()  # far from any face nothing changes
    assert {t.name for t in template_pool("face_mask", 0)} == {"surgical_mask", "cloth_mask"}


def test_the_detector_finds_a_face_in_every_image(corpus: Path) -> None:
    detector = make_detector("retinaface")
    for entry in index_of(corpus)["images"]:
        rgb = np.asarray(Image.open(corpus / entry["file"]).convert("RGB"))
        assert detector.detect(rgb), entry["file"]


def test_same_seed_same_bytes_and_other_parameters_rebuild(corpus: Path, tmp_path: Path) -> None:
    again = build_demo_corpus(tmp_path / "again", variants_per_class=VARIANTS, seed=0)
    assert contents(again) == contents(corpus)
    (again / "notes.txt").write_text("mine", encoding="utf-8")
    build_demo_corpus(again, variants_per_class=1, seed=0)
    index = index_of(again)
    assert index["params"] == {"variants_per_class": 1, "seed": 0}
    files = {e["file"] for e in index["images"]}
    assert len(files) == PHOTOS * len(CLASSES)
    assert {p.name for p in again.iterdir()} == files | {"index.json", "notes.txt"}  # stale images removed
    original = contents(corpus)
    assert all((again / f).read_bytes() == original[f] for f in files)  # a variant depends on its position only


def test_a_second_call_writes_nothing(corpus: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in corpus.iterdir()}
    assert build_demo_corpus(corpus, variants_per_class=VARIANTS, seed=0) == corpus
    assert {p.name: p.stat().st_mtime_ns for p in corpus.iterdir()} == before


# ----------------------------------------------------------------------------------------------- builder hook

calls: list[tuple[Path, dict[str, Any]]] = []


def fake_builder(folder: Path, **options: Any) -> Path:
    """A stand-in builder the hook can name: records its call and writes one image."""
    calls.append((Path(folder), options))
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 100, 50)).save(folder / "one.jpg")
    return folder


def test_the_hook_calls_the_named_builder_with_its_options(tmp_path: Path) -> None:
    with corpus_builder("test-fake", fake_builder):
        config = EmulatorConfig(corpus="corpus/x", corpus_builder="test-fake",
                                corpus_options={"variants_per_class": 3, "seed": 7})
        with start_emulator(config, Workspace(tmp_path / "ws")) as emulator:
            assert [image.name for image in emulator.images] == ["one.jpg"]
    assert calls[-1] == ((tmp_path / "ws").resolve() / "corpus" / "x", {"variants_per_class": 3, "seed": 7})
    assert "test-fake" not in builder_names()  # the registration ends with the block


def test_the_project_builder_is_the_demo_entry_point() -> None:
    assert resolve_builder("demo") is build_demo_corpus
    assert load_config(CrawlConfig, "demo").emulator.corpus_builder == "demo"


@pytest.mark.parametrize("reference", ["os:system", "alignment.demo_corpus:build_demo_corpus", "builtins:exec"])
def test_a_module_reference_is_refused_before_anything_is_imported(reference: str) -> None:
    with pytest.raises(ConfigError, match="not a 'module:function' reference") as error:
        load_config(CrawlConfig, "demo", [f"emulator.corpus_builder={reference}", "emulator.corpus=touch X"])
    assert "--set emulator.corpus_builder" in str(error.value)


@pytest.mark.parametrize("name", ["no-such-builder", "os.system", "subprocess"])
def test_an_unregistered_name_is_a_config_error_naming_the_allowed_ones(name: str) -> None:
    with pytest.raises(ValidationError, match=f"{name!r} is not a registered corpus builder; registered: .*demo"):
        EmulatorConfig(corpus="c", corpus_builder=name)


@pytest.mark.parametrize("name", ["", " demo", "a b", "-x", "démo/"])
def test_a_malformed_builder_name_is_a_config_error(name: str) -> None:
    with pytest.raises(ValidationError, match="corpus_builder must be a builder name"):
        EmulatorConfig(corpus="c", corpus_builder=name)


def test_a_taken_name_cannot_be_registered_again() -> None:
    with pytest.raises(ValueError, match="'demo' is already registered"):
        register_corpus_builder("demo", fake_builder)
    with corpus_builder("test-twice", fake_builder):
        with pytest.raises(ValueError, match="already registered"):
            register_corpus_builder("test-twice", build_demo_corpus)
        assert resolve_builder("test-twice") is fake_builder
    with pytest.raises(TypeError, match="not callable"):
        register_corpus_builder("test-value", 42)  # type: ignore[arg-type]


def test_options_without_a_builder_are_a_config_error() -> None:
    with pytest.raises(ValidationError, match="no corpus_builder"):
        EmulatorConfig(corpus="c", corpus_options={"seed": 1})


@pytest.mark.parametrize(("value", "message"), [
    ("no_such_module_for_sdgan:build", "does not load"),
    ("alignment.demo_corpus:no_such_builder", "does not load"),
    ("alignment.demo_corpus:CORPUS_VERSION", "is not callable"),
])
def test_a_broken_entry_point_names_itself(value: str, message: str) -> None:
    entry = importlib.metadata.EntryPoint("test-broken", value, GROUP)
    with pytest.raises(ValueError, match=f"'test-broken': its entry point {value!r} {message}"):
        load_entry_point(entry)
