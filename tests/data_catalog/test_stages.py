"""The stage declarations: a DAG in topological order, code paths that cover what each stage imports,
shortcuts that become overrides, and everything derived from them (flows, deployments, CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_catalog.manifest import PROJECT_ROOT, code_fingerprint
from data_catalog.stages import DAG_ORDER, PIPELINES, STAGES, flow_names, flow_stages, get

BUILT = [name for name, spec in STAGES.items() if spec.built]


def test_dag_order_is_topological_and_every_upstream_is_declared() -> None:
    position = {name: i for i, name in enumerate(DAG_ORDER)}
    assert set(DAG_ORDER) == set(STAGES)
    for name, spec in STAGES.items():
        for upstream in spec.upstream:
            assert upstream in STAGES, f"{name}: unknown upstream {upstream}"
            assert position[upstream] < position[name], f"{upstream} must come before {name}"
    for pipeline in PIPELINES.values():
        assert [s for s in DAG_ORDER if s in pipeline.stages] == list(pipeline.stages)


def test_a_cycle_would_be_caught() -> None:
    """The check above is not vacuous: swapping two dependent stages breaks it."""
    order = list(DAG_ORDER)
    i, j = order.index("shard"), order.index("train-stylegan2")
    order[i], order[j] = order[j], order[i]
    position = {name: k for k, name in enumerate(order)}
    assert any(position[u] > position[n] for n, s in STAGES.items() for u in s.upstream)


@pytest.mark.parametrize("stage", BUILT)
def test_declared_code_paths_exist_and_cover_every_project_module_the_stage_imports(stage: str) -> None:
    spec = get(stage)
    for entry in spec.code:
        assert (PROJECT_ROOT / entry).exists(), f"{stage}: declared code path {entry} does not exist"
    probe = ("import json, sys, importlib; importlib.import_module(sys.argv[1]); "
             "print(json.dumps(sorted(m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None))))")
    done = subprocess.run([sys.executable, "-c", probe, spec.module], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300, check=True)
    ours = [Path(f).resolve().relative_to(PROJECT_ROOT).as_posix() for f in json.loads(done.stdout)
            if Path(f).is_absolute() and Path(f).resolve().is_relative_to(PROJECT_ROOT) and ".venv" not in Path(f).parts]
    covered = [path for path in ours if any(path == entry or path.startswith(entry.rstrip("/") + "/")
                                            for entry in spec.code)]
    assert sorted(set(ours) - set(covered)) == [], f"{stage} imports modules its declaration does not cover"


def test_stage_fingerprints_are_per_stage() -> None:
    """StyleGAN2's key no longer covers the crawler or the aligner, and the dataset stages not the trainer."""
    assert "alignment" not in get("train-stylegan2").code and "crawling" not in get("train-stylegan2").code
    assert not any(entry.startswith("training") for entry in get("shard").code)
    assert code_fingerprint(get("train-stylegan2").code) != code_fingerprint(get("shard").code)


def test_shortcuts_become_overrides() -> None:
    crawl = get("crawl")
    overrides, forced = crawl.shortcut_overrides({"sources": ["naver"], "endpoint": "http://127.0.0.1:9/x",
                                                  "retry_failed": True})
    assert 'sources=["naver"]' in overrides and "retry_failed=true" in overrides and forced
    assert 'endpoints={"naver": "http://127.0.0.1:9/x"}' in overrides
    assert "emulator=null" in overrides  # the one source has its endpoint: no built-in emulator to start
    assert "emulator=null" in crawl.shortcut_overrides({"urls": "list.txt"})[0]
    assert "emulator=null" not in crawl.shortcut_overrides({"sources": ["urls", "google"], "urls": "list.txt"})[0]
    with pytest.raises(ValueError, match="exactly one search --source"):
        crawl.shortcut_overrides({"endpoint": "http://x"})
    with pytest.raises(ValueError, match="unknown option"):
        crawl.shortcut_overrides({"detector": "dlib-hog"})
    align, _ = get("align").shortcut_overrides({"detector": "dlib-hog", "output_size": 512})
    assert align == ['detector="dlib-hog"', "output_size=512"]


def test_a_resume_path_becomes_absolute_and_a_run_id_stays_a_run_id(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt.pt").write_bytes(b"")
    train = get("train-stylegan2")
    assert train.shortcut_overrides({"resume": "ckpt.pt"})[0] == [f'resume="{tmp_path / "ckpt.pt"}"']
    assert train.shortcut_overrides({"resume": "1234e5"})[0] == ['resume="1234e5"']


def test_every_flow_is_built_from_the_declarations_with_its_shortcuts_as_parameters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from data_catalog.stages import StageSpec
    from flows import dag

    for name in flow_names():
        flow = getattr(dag, name.replace("-", "_") + "_flow")
        assert flow.name == name
        parameters = set(flow.parameters.properties)
        assert {"workspace", "profile", "overrides", "force", "task_runner", "workers", "lock_wait"} <= parameters
        if name in STAGES:
            assert {o.name for o in STAGES[name].options} <= parameters
    assert set(flow_stages("build-megn")) == {"crawl", "align", "shard"}
    monkeypatch.setitem(STAGES, "future-stage", StageSpec("future-stage", "designed, not built"))
    with pytest.raises(AttributeError, match="no flow"):
        dag.future_stage_flow  # noqa: B018 - declared but not built: no flow yet


def test_prefect_yaml_is_generated_from_the_declarations() -> None:
    from flows.deployments import DEFAULT_FILE, deployment_entries, render_prefect_yaml

    assert DEFAULT_FILE.read_text(encoding="utf-8") == render_prefect_yaml(), "run: sdgan deployments --write"
    names = {(e["entrypoint"].split(":")[1], e["name"]) for e in deployment_entries()}
    for flow in flow_names():
        for profile in ("demo", "full"):
            assert (flow.replace("-", "_") + "_flow", profile) in names


def test_cli_has_a_subcommand_per_declared_shortcut() -> None:
    from flows.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["crawl", "--workspace", "w", "--source", "naver", "--source", "google", "--retry-failed"])
    assert args.sources == ["naver", "google"] and args.retry_failed and args.stage == "crawl"
    args = parser.parse_args(["train-stylegan2", "--workspace", "w", "--dataset", "v1", "--wait", "forever"])
    assert args.dataset == "v1" and args.lock_wait == "forever"
    with pytest.raises(SystemExit):
        parser.parse_args(["align", "--workspace", "w", "--detector", "nope"])


def test_every_built_stage_keeps_the_stage_contract_in_its_tests() -> None:
    """Each built stage has a test class built on tests/stage_kit.py's StageContract."""
    import re

    covered = set()
    for path in (PROJECT_ROOT / "tests").rglob("test_*.py"):
        for match in re.finditer(r"class \w+\(StageContract\):\n(?:[ ]{4}.*\n|\n)*?[ ]{4}stage = \"([\w-]+)\"",
                                 path.read_text(encoding="utf-8")):
            covered.add(match.group(1))
    assert set(BUILT) - covered == set(), "stages without a StageContract test"


def test_a_checkpoint_path_stands_in_for_an_upstream_run_and_counts_by_its_content(tmp_path: Path) -> None:
    from data_catalog.config import load_config
    from flows.caching import stage_cache_key
    from training.boundaries.config import FitBoundariesConfig

    spec = get("fit-boundaries")
    generator, classifier = tmp_path / "g.pt", tmp_path / "c.pt"
    generator.write_bytes(b"official generator")
    classifier.write_bytes(b"a classifier")
    plain = load_config(FitBoundariesConfig, "demo").to_dict()
    assert spec.required_upstream(plain) == ("train-stylegan2", "train-classifier")
    with_paths = load_config(FitBoundariesConfig, "demo", [f"generator={generator}", f"classifier={classifier}"])
    assert spec.required_upstream(with_paths.to_dict()) == ()
    key = stage_cache_key("fit-boundaries", with_paths.to_dict(), [])
    assert stage_cache_key("fit-boundaries", with_paths.to_dict(), []) == key
    generator.write_bytes(b"another generator at the same path")
    assert stage_cache_key("fit-boundaries", with_paths.to_dict(), []) != key
