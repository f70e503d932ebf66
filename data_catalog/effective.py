"""The effective row of an entity in the append-only tables, where later rows supersede earlier ones.

Stages never rewrite rows; a rerun or a later decision appends a newer row for the same entity. Every
reader of these tables must apply the same rule, so it lives here once: the crawl and the shard stage
read candidates through `latest_candidates`, the align and the shard stage read faces through
`effective_faces`.
"""

from __future__ import annotations

import pandas as pd

from data_catalog.workspace import Workspace


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
