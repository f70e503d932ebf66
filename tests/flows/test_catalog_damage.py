"""`sdgan catalog ls` and `catalog verify` on a workspace with a truncated `runs` part: the file is named, the
rest is listed or checked, and the exit status says something is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main as cli
from tests.data_catalog.test_unreadable_parts import damaged_workspace


def test_catalog_ls_lists_everything_readable_and_names_the_part(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    ws, part, intact = damaged_workspace(tmp_path / "ws")
    assert cli(["catalog", "ls", "--workspace", str(ws.root)]) == 1
    out = capsys.readouterr().out
    assert "candidates" in out and intact in out
    assert f"unreadable part {part}: " in out  # one unwrapped line: the path can be copied


def test_catalog_verify_reports_the_part_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ws, part, _ = damaged_workspace(tmp_path / "ws")
    assert cli(["catalog", "verify", "--workspace", str(ws.root), "--json"]) == 1
    out = capsys.readouterr().out
    assert '"kind": "unreadable_part"' in out and ws.relative(part) in out and '"runs": 1' in out
