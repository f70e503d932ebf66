from __future__ import annotations

from pathlib import Path

import pytest

from data_catalog import Workspace, WorkspaceError
from data_catalog.workspace import LAYERS


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
