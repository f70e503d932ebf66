"""The effective row of an entity in the append-only tables, where later rows supersede earlier ones.

Stages never rewrite rows; a rerun or a later decision appends a newer row for the same entity, so
`ws.table("faces")` holds every decision ever made, superseded ones included. Every reader of these tables
must apply the same rule, so it lives here once: `ws.effective(table)` (`effective_table`) is the documented
view, the crawl and the shard stage read candidates through `latest_candidates`, the align and the shard stage
read faces through `effective_faces`.
"""

from __future__ import annotations

import pandas as pd

from data_catalog.workspace import Workspace

# table -> how a newer row supersedes an older one (tables not listed never supersede rows)
RULES: dict[str, str] = {
    "candidates": "the last row per (url, query_id) by fetch time: a retry supersedes the failed attempt",
    "faces": "the last row per face_id among the rows of one align config (the current align run's unless "
             "config_hash is given): dedup decisions and identity clusters supersede the detection rows",
    "queries": "the last row per query_id",
}


def latest_candidates(ws: Workspace) -> pd.DataFrame:
    """The effective candidates: the last row per (url, query_id) by fetch time."""
    frame = ws.table("candidates")
    if frame.empty:
        return frame
    frame = frame.sort_values("fetched_at", kind="stable", na_position="first")
    return frame.drop_duplicates(["url", "query_id"], keep="last").reset_index(drop=True)


def effective_faces(ws: Workspace, config_hash: str) -> pd.DataFrame:
    """The latest row of every face for one align config (dedup rows supersede the batches' rows)."""
    faces = ws.table("faces")
    faces = faces[faces["config_hash"] == config_hash]
    if faces.empty:
        return faces
    return faces.drop_duplicates("face_id", keep="last").reset_index(drop=True)  # table order is append order


def effective_table(ws: Workspace, name: str, config_hash: str | None = None) -> pd.DataFrame:
    """`name` with superseded rows dropped: what the pipeline treats as current (see RULES).

    faces: the rows of `config_hash`, by default the current align run's config (the faces the current
    dataset was built from); with no align run and no `config_hash`, an error rather than a mix of configs.
    Tables whose rows are never superseded (runs, images, samples, label_checks, artifacts) come back whole.
    """
    if name == "candidates":
        return latest_candidates(ws)
    if name == "faces":
        if config_hash is None:
            align = ws.current("align")
            if align is None:
                raise ValueError(f"no completed align run in {ws.root}: pass config_hash= to choose the faces' config")
            config_hash = align.config_hash
        return effective_faces(ws, config_hash)
    if name == "queries":
        return ws.table("queries").drop_duplicates("query_id", keep="last").reset_index(drop=True)
    if config_hash is not None:
        raise ValueError(f"config_hash only applies to faces, not to {name!r}")
    return ws.table(name)
