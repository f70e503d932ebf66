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
