"""A truncated Parquet part is named wherever it is met: strict reads fail naming it, `catalog verify` reports it
and checks everything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_catalog import Workspace
from data_catalog.config import StageConfig
from data_catalog.runs import stage_run
from data_catalog.tables import TableReadError
from data_catalog.verify import verify_workspace


class ToyConfig(StageConfig):
    STAGE = "toy"
    n: int = 0


def damaged_workspace(root: Path) -> tuple[Workspace, Path, str]:
    """Two completed runs, each with an output file; the first one's `runs` part cut in half.

    Returns the workspace, the truncated part and the intact run's id."""
    ws = Workspace(root)
    run_ids = []
    for n in range(2):
        with stage_run(ws, "toy", ToyConfig(n=n), []) as run:
            output = ws.root / "reporting" / f"out-{n}.txt"
            output.write_text(f"output {n}\n")
            run.add_file("out", output)
        run_ids.append(run.run_id)
    (part,) = ws.tables.root.glob(f"runs/{run_ids[0]}/*.parquet")
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    return ws, part, run_ids[1]


def test_strict_reads_name_the_truncated_part(tmp_path: Path) -> None:
    ws, part, _ = damaged_workspace(tmp_path / "ws")
    for read in (lambda: ws.table("runs"), lambda: ws.tables.count("runs"), lambda: ws.manifests()):
        with pytest.raises(TableReadError, match="table 'runs': 1 unreadable part") as error:
            read()
        assert str(part) in str(error.value) and error.value.parts[0][0] == part


def test_tolerant_reads_keep_the_readable_rows_and_report_the_part(tmp_path: Path) -> None:
    ws, part, intact = damaged_workspace(tmp_path / "ws")
    seen: dict[Path, str] = {}
    runs = ws.tables.read("runs", columns=["run_id"], on_unreadable=seen.__setitem__)
    assert runs["run_id"].tolist() == [intact] and list(seen) == [part]
    assert "magic bytes" in seen[part] and str(part) not in seen[part]  # the reason, without the path again
    assert ws.tables.count("runs", on_unreadable=lambda *_: None) == 1
    assert [path for path, _ in ws.tables.unreadable("runs")] == [part]
    assert ws.tables.unreadable("candidates") == []


def test_verify_reports_the_part_and_checks_the_rest(tmp_path: Path) -> None:
    ws, part, _ = damaged_workspace(tmp_path / "ws")
    (ws.root / "reporting" / "out-1.txt").unlink()  # a problem of the intact run: verify must still reach it
    report = verify_workspace(ws)
    kinds = {(p.kind, p.subject) for p in report.problems}
    assert ("unreadable_part", ws.relative(part)) in kinds
    assert ("missing_file", "reporting/out-1.txt") in kinds
    assert report.checked["runs"] == 1 and not report.ok
