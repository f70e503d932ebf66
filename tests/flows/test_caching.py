"""The stage-task helper through a real Prefect server: hits, misses, --force, deleted outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_catalog import stages

pytestmark = pytest.mark.prefect_server

TOY = ["toy-source", "toy-sink"]


@pytest.fixture
def toy_dag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setitem(stages.STAGES, "toy-source", stages.StageSpec(
        "toy-source", "toy", module="tests.flows.toy_stages", config_class="SourceConfig", function="run_source"))
    monkeypatch.setitem(stages.STAGES, "toy-sink", stages.StageSpec(
        "toy-sink", "toy", ("toy-source",), module="tests.flows.toy_stages", config_class="SinkConfig", function="run_sink"))
    for profile in ("demo",):
        (tmp_path / "configs" / profile).mkdir(parents=True)
        (tmp_path / "configs" / profile / "toy-source.yaml").write_text("text: hi\ncopies: 2\n")
        (tmp_path / "configs" / profile / "toy-sink.yaml").write_text("suffix: '?'\n")
    return tmp_path / "configs"


def run_toy(workspace: Path, config_dir: Path, overrides=(), force=(), names=TOY) -> dict[str, str]:
    from prefect import flow

    from flows.pipeline import run_stages

    @flow(name="toy")
    def toy_flow():
        return run_stages(names, workspace, "demo", list(overrides), list(force), config_dir)

    return {o.stage: o.status for o in toy_flow()}


def sink_text(workspace: Path) -> str:
    from data_catalog import Workspace

    ws = Workspace(workspace)
    return ws.resolve(ws.current("toy-sink").files["sink"].path).read_text()


def test_second_run_is_cached_and_changes_rerun_exactly_downstream(prefect_server: str, toy_dag: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run_toy(ws, toy_dag) == {"toy-source": "ran", "toy-sink": "ran"}
    assert sink_text(ws) == "hihi?"
    assert run_toy(ws, toy_dag) == {"toy-source": "cached", "toy-sink": "cached"}
    # Only the sink's config changed: the source stays cached.
    assert run_toy(ws, toy_dag, overrides=["toy-sink.suffix=!"]) == {"toy-source": "cached", "toy-sink": "ran"}
    assert sink_text(ws) == "hihi!"
    # The source's config changed and so did its output: both rerun.
    assert run_toy(ws, toy_dag, overrides=["toy-source.copies=3"]) == {"toy-source": "ran", "toy-sink": "ran"}
    assert sink_text(ws) == "hihihi?"
    # Back to the first config: both cache entries are still valid.
    assert run_toy(ws, toy_dag) == {"toy-source": "cached", "toy-sink": "cached"}
    assert sink_text(ws) == "hihi?"


def test_force_and_deleted_outputs_rerun(prefect_server: str, toy_dag: Path, tmp_path: Path) -> None:
    from data_catalog import Workspace

    ws = tmp_path / "ws"
    run_toy(ws, toy_dag)
    assert run_toy(ws, toy_dag, force=["toy-sink"]) == {"toy-source": "cached", "toy-sink": "ran"}
    # The forced source reruns, produces the same content, so the sink stays cached.
    assert run_toy(ws, toy_dag, force=["toy-source"]) == {"toy-source": "ran", "toy-sink": "cached"}
    workspace = Workspace(ws)
    workspace.resolve(workspace.current("toy-sink").files["sink"].path).unlink()
    assert run_toy(ws, toy_dag) == {"toy-source": "cached", "toy-sink": "ran"}
    assert sink_text(ws) == "hihi?"
    assert run_toy(ws, toy_dag, force=["all"]) == {"toy-source": "ran", "toy-sink": "ran"}


def test_single_stage_reuses_latest_upstream_and_is_blocked_without_one(prefect_server: str, toy_dag: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run_toy(ws, toy_dag, names=["toy-sink"]) == {"toy-sink": "blocked"}
    run_toy(ws, toy_dag, names=["toy-source"])
    assert run_toy(ws, toy_dag, names=["toy-sink"]) == {"toy-sink": "ran"}


def test_caches_are_per_workspace(prefect_server: str, toy_dag: Path, tmp_path: Path) -> None:
    assert run_toy(tmp_path / "a", toy_dag)["toy-source"] == "ran"
    assert run_toy(tmp_path / "b", toy_dag)["toy-source"] == "ran"


def test_bad_config_and_force_fail_before_anything_runs(prefect_server: str, toy_dag: Path, tmp_path: Path) -> None:
    from data_catalog import ConfigError
    from flows.pipeline import PipelineError

    ws = tmp_path / "ws"
    with pytest.raises(ConfigError, match=r"(?s)invalid toy-source config.*copies.*'lots'"):
        run_toy(ws, toy_dag, overrides=["toy-source.copies=lots"])
    with pytest.raises(ConfigError, match="prefix the key"):
        run_toy(ws, toy_dag, overrides=["copies=2"])
    with pytest.raises(PipelineError, match="not a stage of this flow"):
        run_toy(ws, toy_dag, force=["crawl"])
    assert not (ws / "runs" / "toy-source").exists()
