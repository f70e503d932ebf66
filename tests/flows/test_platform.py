"""The stage platform as a user meets it, with real processes in a copy of the project.

In order (one scenario, one demo build): train-stylegan2 stays cached when a module is added under training/
and reruns when its own code changes; a moved workspace rebuilds as cache hits and verifies; two build-megn runs
started together on one workspace end with one dataset equal to a clean build; `kill -9` of `sdgan run
build-megn` during the crawl leaves nothing of that run alive or listening.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from data_catalog import Workspace
from data_catalog.hashing import sha256_file
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.prefect_server

SMALL_CORPUS = 'crawl.emulator.corpus_options={"variants_per_class": 3}'
SHORT_TRAINING = ["--set", "schedule.total_kimg=0.016", "--set", "schedule.grid_seeds=4"]
STATE: dict[str, Path] = {}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's tracked and untracked (not ignored) files: code the tests may change."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    root = tmp_path_factory.mktemp("project-copy") / "sdgan-pipeline"
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    return root


def sdgan(project: Path, *args: str, api: str | None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`sdgan ...` run from the copy (its packages come first on sys.path)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | ({"PREFECT_API_URL": api} if api else {})
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=timeout)


def statuses(output: str, stages: list[str]) -> dict[str, str]:
    """Each stage's status from the outcome lines `sdgan run` prints (`  <stage>  <status>  <run id>  <counts>`)."""
    found = {}
    for line in output.splitlines():
        stage, _, rest = line.strip().partition(" ")
        if stage in stages and rest.strip():
            found[stage] = "not built yet" if rest.strip().startswith("not built yet") else rest.split()[0]
    return found


def shard_bytes(workspace: Path) -> dict[str, str]:
    folder = Workspace(workspace, create=False).dataset_dir(_version(Workspace(workspace, create=False)))
    return {p.name: sha256_file(p) for p in sorted(folder.glob("megn-*"))}


def _version(ws: Workspace) -> str:
    from data_catalog.dataset import version_folder

    return version_folder(ws, ws.current("shard")).name


def test_train_stylegan2_is_cached_across_a_new_sibling_module_and_reruns_on_its_own_code(
        prefect_server: str, project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    workspace = tmp_path_factory.mktemp("platform") / "ws"
    built = sdgan(project, "run", "build-megn", "--workspace", str(workspace), "--set", SMALL_CORPUS, api=prefect_server)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert statuses(built.stdout, ["crawl", "align", "shard"]) == {"crawl": "ran", "align": "ran", "shard": "ran"}
    STATE["clean"] = workspace

    def train() -> dict[str, str]:
        done = sdgan(project, "run", "train-stylegan2", "--workspace", str(workspace), *SHORT_TRAINING, api=prefect_server)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return statuses(done.stdout, ["train-stylegan2"])

    assert train() == {"train-stylegan2": "ran"}
    new_stage = project / "training" / "a_future_stage"
    new_stage.mkdir()
    (new_stage / "__init__.py").write_text('"""A new stage\'s folder: not train-stylegan2\'s code."""\n')
    (new_stage / "model.py").write_text("WIDTH = 64\n")
    assert train() == {"train-stylegan2": "cached"}
    losses = project / "training" / "stylegan2" / "losses.py"
    losses.write_text(losses.read_text() + "\n# an edit of the stage's own code\n")
    assert train() == {"train-stylegan2": "ran"}


def test_a_moved_workspace_rebuilds_as_cache_hits_and_verifies(prefect_server: str, project: Path,
                                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    moved = tmp_path_factory.mktemp("elsewhere") / "moved-ws"
    shutil.copytree(STATE["clean"], moved)
    original = STATE["clean"].rename(STATE["clean"].with_name("original-ws"))  # the old path no longer exists
    STATE["clean"] = original
    done = sdgan(project, "run", "build-megn", "--workspace", str(moved), "--set", SMALL_CORPUS, api=prefect_server)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert statuses(done.stdout, ["crawl", "align", "shard"]) == {"crawl": "cached", "align": "cached",
                                                                   "shard": "cached"}
    verified = sdgan(project, "catalog", "verify", "--workspace", str(moved), api=None)
    assert verified.returncode == 0, verified.stdout[-3000:]
    assert shard_bytes(moved) == shard_bytes(original)


def test_two_builds_started_together_leave_the_dataset_of_one_clean_build(
        prefect_server: str, project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    workspace = tmp_path_factory.mktemp("together") / "ws"
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    command = [sys.executable, "-m", "flows.cli", "run", "build-megn", "--workspace", str(workspace),
               "--set", SMALL_CORPUS]
    runs = [subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(p.wait(timeout=900), *p.communicate()) for p in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results  # no --wait: the run that finds the workspace held stops at once
    for code, out, err in results:
        if code == 2:
            other = next(p.pid for p, (c, _, _) in zip(runs, results) if c == 0)
            assert f"is in use by PID {other}" in err and "build-megn" in err, err
    verified = sdgan(project, "catalog", "verify", "--workspace", str(workspace), api=None)
    assert verified.returncode == 0, verified.stdout[-3000:]
    clean, ws = Workspace(STATE["clean"], create=False), Workspace(workspace, create=False)
    assert _version(ws) == _version(clean)
    keys = ws.table("samples")
    reference = clean.table("samples")
    assert sorted(keys[keys["dataset_version"] == _version(ws)]["key"]) == sorted(
        reference[reference["dataset_version"] == _version(clean)]["key"])
    assert shard_bytes(workspace) == shard_bytes(STATE["clean"])


def test_kill_9_during_the_crawl_leaves_no_process_of_the_run(project: Path,
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    workspace = tmp_path_factory.mktemp("killed") / "ws"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the embedded server
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "build-megn", "--workspace", str(workspace)],
                           cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list((workspace / "runs" / "crawl").glob("*/batch-*")):
        assert run.poll() is None, "the build ended before the crawl was seen"
        time.sleep(0.2)
    family = [run.pid] + [c.pid for c in psutil.Process(run.pid).children(recursive=True)]
    ports = {c.laddr.port for pid in family for c in _connections(pid) if c.status == psutil.CONN_LISTEN}
    assert len(family) > 1 and ports, "the embedded Prefect server was not running"
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(family):
        time.sleep(0.2)
    assert not _alive(family), f"still alive 10 s after kill -9: {_alive(family)}"
    listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert not ports & listening


def _connections(pid: int) -> list:
    try:
        return psutil.Process(pid).net_connections("tcp")
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_the_copy_is_the_code_that_ran(project: Path) -> None:
    """The scenario ran the copy: its edit is there, the checkout is untouched."""
    assert (project / "training" / "a_future_stage" / "model.py").is_file()
    assert not (PROJECT_ROOT / "training" / "a_future_stage" / "model.py").exists()
