"""The catalog's tables, declared once. Appends are checked against these schemas.

Columns marked nullable may hold nulls (a failed download has no sha256); all others must be filled.
Adding a nullable column later is backward compatible: older Parquet files read it as null.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")
FLOATS = pa.list_(pa.float64())


def _schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema([pa.field("run_id", pa.string(), nullable=False), *fields])


def _req(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _opt(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


TABLE_SCHEMAS: dict[str, pa.Schema] = {
    # One row per finished stage run (completed or failed); JSON columns hold the manifest parts.
    "runs": _schema(
        _req("stage", pa.string()),
        _req("status", pa.string()),
        _req("config_hash", pa.string()),
        _req("config", pa.string()),
        _req("code_version", pa.string()),
        _req("code_fingerprint", pa.string()),
        _req("inputs", pa.string()),
        _req("outputs", pa.string()),
        _req("counts", pa.string()),
        _opt("content_hash", pa.string()),
        _opt("error", pa.string()),
        _req("started_at", TIMESTAMP),
        _req("finished_at", TIMESTAMP),
        _req("duration_s", pa.float64()),
        _opt("host", pa.string()),
    ),
    # The query plan, one row per (engine, attribute, keyword, language, window).
    "queries": _schema(
        _req("query_id", pa.string()),
        _req("plan_hash", pa.string()),
        _req("engine", pa.string()),
        _req("attribute", pa.string()),
        _req("keyword", pa.string()),
        _req("language", pa.string()),
        _opt("window", pa.string()),
        _opt("max_results", pa.int64()),
    ),
    # One row per URL seen by the crawler, whatever happened to it.
    "candidates": _schema(
        _req("url", pa.string()),
        _req("engine", pa.string()),
        _opt("query_id", pa.string()),
        _opt("page", pa.int64()),
        _opt("rank", pa.int64()),
        _opt("page_url", pa.string()),
        _opt("title", pa.string()),
        _opt("licence", pa.string()),
        _req("status", pa.string()),  # ok | failed | skipped
        _opt("reason", pa.string()),
        _opt("http_status", pa.int64()),
        _opt("bytes", pa.int64()),
        _opt("sha256", pa.string()),
        _opt("width", pa.int64()),
        _opt("height", pa.int64()),
        _opt("content_type", pa.string()),
        _opt("fetched_at", TIMESTAMP),
    ),
    # One row per stored raw blob.
    "images": _schema(
        _req("sha256", pa.string()),
        _req("format", pa.string()),
        _req("width", pa.int64()),
        _req("height", pa.int64()),
        _req("bytes", pa.int64()),
    ),
    # One row per detected face, kept or rejected (with the reason).
    "faces": _schema(
        _req("face_id", pa.string()),
        _req("image_sha256", pa.string()),
        _req("face_index", pa.int64()),
        _req("box", FLOATS),  # x0, y0, x1, y1 in source pixels
        _opt("landmarks5", FLOATS),  # 5 (x, y) pairs, flattened
        _opt("landmarks68", FLOATS),  # 68 (x, y) pairs in dlib order, flattened
        _req("detector", pa.string()),
        _req("detector_version", pa.string()),
        _req("det_score", pa.float64()),
        _opt("align_confidence", pa.float64()),
        _opt("landmark_sources", pa.string()),  # JSON: which points came from which model
        _opt("quad", FLOATS),  # 4 corners (x, y), flattened, in source pixels
        _req("decision", pa.string()),  # kept | rejected
        _opt("reason", pa.string()),
        _opt("aligned_sha256", pa.string()),
        _opt("identity_cluster", pa.int64()),
        _req("config_hash", pa.string()),
        _opt("transform", FLOATS),  # 3x3 homography, row-major: output pixel -> source pixel
        _opt("quality", pa.string()),  # JSON: the measures the filters judged
        _opt("phash", pa.string()),  # 64-bit perceptual hash of the aligned crop (mirror-invariant)
        _opt("descriptor", FLOATS),  # 128-d identity descriptor (dlib)
        _opt("duplicate_of", pa.string()),  # face_id this face duplicates
    ),
    # One row per sample written into a dataset version.
    "samples": _schema(
        _req("dataset_version", pa.string()),
        _req("split", pa.string()),
        _req("shard", pa.string()),
        _req("key", pa.string()),
        _req("face_id", pa.string()),
        _req("attribute_id", pa.int64()),
        _req("attribute", pa.string()),
        _req("label_source", pa.string()),
    ),
    # train-classifier's label check: one row per sample scored (or per disagreement), labels never changed.
    "label_checks": _schema(
        _req("dataset_version", pa.string()),
        _req("key", pa.string()),
        _req("split", pa.string()),
        _req("query_label", pa.string()),
        _req("scores", FLOATS),  # calibrated probability per attribute, in training.classifier.ATTRIBUTES order
        _req("verdict", pa.string()),  # agrees | disagrees | uncertain
        _req("threshold", pa.float64()),
    ),
    # fusion-pairs: one row per pair written (train: fresh seeded w; test: the boundaries' held-out w).
    "fusion_pairs": _schema(
        _req("key", pa.string()),
        _req("split", pa.string()),  # train | test
        _req("seed", pa.int64()),  # z seed of the pair's w
        _req("shard", pa.string()),  # relative to the workspace
        _req("landmark_source", pa.string()),  # detected | ffhq_canonical
        _opt("area_face_mask", pa.float64()),  # mean placed alpha (fraction of the image the attribute covers)
        _opt("area_sunglasses", pa.float64()),
        _opt("area_frame_glasses", pa.float64()),
    ),
    # Trained models, boundaries, canonical maps and other files later stages consume.
    "artifacts": _schema(
        _req("artifact_id", pa.string()),
        _req("kind", pa.string()),
        _req("stage", pa.string()),
        _req("path", pa.string()),  # relative to the workspace
        _req("sha256", pa.string()),
        _req("bytes", pa.int64()),
        _opt("metadata", pa.string()),  # JSON
    ),
}

# Which columns of which tables hold references to blobs, by blob store.
BLOB_REFERENCES: dict[str, list[tuple[str, str]]] = {
    "raw": [("images", "sha256"), ("candidates", "sha256")],
    "aligned": [("faces", "aligned_sha256")],
}
