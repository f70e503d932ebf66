"""Two small but real stages (blob + table rows + output file) to exercise the caching helper."""

from __future__ import annotations

import pandas as pd

from data_catalog import Manifest, StageConfig, Workspace, stage_run


class SourceConfig(StageConfig):
    STAGE = "toy-source"
    text: str = "hello"
    copies: int = 1


class SinkConfig(StageConfig):
    STAGE = "toy-sink"
    suffix: str = "!"


def run_source(config: SourceConfig, workspace: Workspace, inputs: list[Manifest]) -> Manifest:
    with stage_run(workspace, config.STAGE, config, inputs) as run:
        data = (config.text * config.copies).encode()
        sha = workspace.blobs.put(data, "txt")
        run.append("images", pd.DataFrame([{"sha256": sha, "format": "txt", "width": len(data), "height": 1, "bytes": len(data)}]),
                   content_columns=["sha256"])
        run.count("blobs")
    return run.manifest


def run_sink(config: SinkConfig, workspace: Workspace, inputs: list[Manifest]) -> Manifest:
    (source,) = inputs
    with stage_run(workspace, config.STAGE, config, inputs) as run:
        rows = workspace.table("images")
        text = workspace.blobs.read(rows[rows["run_id"] == source.run_id]["sha256"].iloc[0]).decode()
        out = workspace.root / "reporting" / run.run_id / "sink.txt"
        out.parent.mkdir(parents=True)
        out.write_text(text + config.suffix)
        run.save_config(out.parent)
        run.add_file("sink", out)
    return run.manifest
