from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_catalog import Workspace, WorkspaceError
from data_catalog.config import StageConfig
from data_catalog.lock import workspace_lock
from data_catalog.runs import stage_run
from data_catalog.workspace import LAYERS


class ToyConfig(StageConfig):
    STAGE = "toy"


def test_creates_layout(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "w")
    for layer in LAYERS:
        assert (ws.root / layer).is_dir()
    assert Workspace(tmp_path / "w").root == ws.root  # reopening is fine
    assert ws.blobs.root == ws.root / "raw" / "blobs" and ws.aligned.root == ws.root / "intermediate" / "aligned"


def test_refuses_foreign_or_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(WorkspaceError, match="not empty and is not an sdgan workspace"):
        Workspace(tmp_path / "other")
    with pytest.raises(WorkspaceError, match="is not an sdgan workspace"):
        Workspace(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()


def test_rejects_other_layout_versions(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "w")
    (ws.root / "workspace.json").write_text('{"layout_version": 99}')
    with pytest.raises(WorkspaceError, match="layout version 99"):
        Workspace(ws.root)


def test_a_workspace_another_process_is_laying_out_is_waited_for(tmp_path: Path) -> None:
    """Two runs started together on a fresh path: the second finds a folder without its marker for a moment."""
    import json
    import os
    import threading
    import time

    root = tmp_path / "ws"
    (root / "catalog").mkdir(parents=True)  # what the first process has made so far

    def finish_creating() -> None:
        time.sleep(0.5)
        (root / "workspace.json").write_text(json.dumps({"layout_version": 1}))

    creator = threading.Thread(target=finish_creating)
    creator.start()
    assert Workspace(root).root == root.resolve()
    creator.join()
    old = tmp_path / "old"
    (old / "stuff").mkdir(parents=True)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    started = time.monotonic()
    with pytest.raises(WorkspaceError, match="not an sdgan workspace"):
        Workspace(old)
    assert time.monotonic() - started < 1


def test_a_file_where_the_workspace_should_be_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a folder\n")
    for create in (True, False):
        with pytest.raises(WorkspaceError, match=f"workspace path {path} is a file, not a folder"):
            Workspace(path, create=create)
    with pytest.raises(WorkspaceError, match=f"cannot create the workspace {path / 'ws'}: a part of the path is a file"):
        Workspace(path / "ws")
    assert path.read_text() == "not a folder\n"


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot add to: mode 0555, or /sys for root (who ignores modes; sysfs refuses all)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").mkdir()
    except OSError:
        return folder
    (folder / "probe").rmdir()
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no unwritable folder for this user")
    return Path("/sys/kernel")


def test_a_workspace_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    parent = unwritable_folder(tmp_path)
    with pytest.raises(WorkspaceError, match=f"cannot create the workspace {parent / 'ws'}: "
                                             "(permission denied|operation not permitted)"):
        Workspace(parent / "ws")


@pytest.fixture
def read_only_workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A workspace with one run, then made read-only (modes; for root, a read-only bind mount)."""
    ws = Workspace(tmp_path / "ws")
    with stage_run(ws, "toy", ToyConfig(), []):
        pass
    if os.geteuid() != 0:
        for path in [ws.root, *ws.root.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        yield ws
        for path in [ws.root, *ws.root.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        return
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(ws.root), str(ws.root)], capture_output=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"root cannot make a read-only bind mount here: {mounted.stderr.decode().strip()}")
    try:
        yield ws
    finally:
        subprocess.run(["umount", str(ws.root)], check=True)


def test_a_read_only_workspace_reads_and_refuses_runs_clearly(read_only_workspace: Workspace) -> None:
    ws = Workspace(read_only_workspace.root)  # opening and reading need no write access
    assert list(ws.table("runs")["stage"]) == ["toy"]
    with pytest.raises(WorkspaceError, match=f"cannot write to the workspace {ws.root}: "), \
            stage_run(ws, "toy", ToyConfig(), []):
        pytest.fail("a run started in a read-only workspace")
    with pytest.raises(WorkspaceError, match=f"cannot lock the workspace {ws.root}: "), workspace_lock(ws.root):
        pass
    assert list(ws.table("runs")["stage"]) == ["toy"]
