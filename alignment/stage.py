"""The align stage: raw images -> detected, landmarked, FFHQ-aligned, filtered, deduplicated faces.

Batches of images (one Prefect task each when the flow fans out) detect faces, reconcile landmarks,
align, store the crops in the content-addressed `intermediate/aligned` store and append `faces` rows
with the filter decision. The stage then deduplicates across all batches (exact pixels, perceptual hash,
identity) and appends the final row of every face whose decision or identity it set; the effective row
of a face is its latest for the config hash. Images already processed with the same config hash are
not processed again, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from alignment.config import AlignConfig
from alignment.dedup import FaceDescriber, identity_clusters, near_duplicate_groups, perceptual_hash
from alignment.detect import LandmarkPredictor, make_detector
from alignment.ffhq import align
from alignment.filters import judge, measure
from alignment.landmarks import fuse
from data_catalog.effective import effective_faces
from data_catalog.manifest import Manifest, TableOutput, table_digest
from data_catalog.progress import Progress
from data_catalog.runs import MapBatches, map_in_process, stage_run
from data_catalog.workspace import Workspace

STAGE = "align"
NO_FACE = -1  # face_index of the row that records an image without a usable face
STATE_COLUMNS = ["face_id", "decision", "reason", "aligned_sha256", "identity_cluster", "duplicate_of"]
log = logging.getLogger(__name__)
ticks = logging.getLogger("sdgan.align")  # progress lines for logs (Prefect's run log); tqdm is for terminals
TICK_SECONDS = 10.0


@dataclass(frozen=True)
class Batch:
    workspace: str
    config_json: str
    run_id: str
    index: int
    images: list[str] = field(default_factory=list)  # sha256 of raw blobs
    batches: int = 1  # how many batches the run has (names the progress bar and tick lines)

    @property
    def label(self) -> str:
        return STAGE if self.batches == 1 else f"{STAGE} {self.index + 1}/{self.batches}"


def _image_row(sha: str, config: AlignConfig, detector_version: str, reason: str) -> dict[str, Any]:
    """The row of an image that yields no face (corrupt, undetected): nothing is dropped silently."""
    return {"face_id": f"{sha[:20]}_x", "image_sha256": sha, "face_index": NO_FACE, "box": [],
            "landmarks5": None, "landmarks68": None, "detector": config.detector, "detector_version": detector_version,
            "det_score": 0.0, "align_confidence": None, "landmark_sources": None, "quad": None,
            "decision": "rejected", "reason": reason, "aligned_sha256": None, "identity_cluster": None,
            "config_hash": config.hash, "transform": None, "quality": None, "phash": None, "descriptor": None,
            "duplicate_of": None}


def _decode(data: bytes, max_pixels: int) -> Image.Image | str:
    """The RGB image, or the reason it cannot be used."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                return "image_too_large"
            image.load()
            return image.convert("RGB")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return "image_too_large"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return "decode_error"


class Aligner:
    """Models loaded once per task: detector, 68-point predictor, descriptor."""

    def __init__(self, config: AlignConfig) -> None:
        self.config = config
        self.detector = make_detector(config.detector, config.detector_threshold, config.scrfd_model_dir)
        self.predictor = LandmarkPredictor()
        self.describer = FaceDescriber()

    def faces(self, ws: Workspace, sha: str) -> list[dict[str, Any]]:
        cfg = self.config
        decoded = _decode(ws.blobs.read(sha), cfg.max_image_pixels)
        if isinstance(decoded, str):
            return [_image_row(sha, cfg, self.detector.version, decoded)]
        rgb = np.asarray(decoded)
        detections = self.detector.detect(rgb)[: cfg.max_faces_per_image]
        if not detections:
            return [_image_row(sha, cfg, self.detector.version, "no_face")]
        rows = []
        for index, det in enumerate(detections):
            l68 = self.predictor.predict(rgb, det.box)
            fused = fuse(det.landmarks5, l68, det.score, cfg.fusion_tolerance, image=rgb,
                         repredict=lambda image, box=det.box: self.predictor.predict(image, box))
            aligned = align(decoded, fused.points5, cfg.output_size, cfg.transform_size, cfg.enable_padding)
            crop = np.asarray(aligned.image.convert("RGB"))
            buffer = io.BytesIO()
            Image.fromarray(crop).save(buffer, "PNG", optimize=False)
            aligned_sha = ws.aligned.put(buffer.getvalue(), "png")
            quality = measure(crop, fused.points5, det.score, fused.confidence, aligned.padded_fraction)
            reason = judge(quality, cfg.filters)
            rows.append({
                "face_id": f"{sha[:20]}_{index}", "image_sha256": sha, "face_index": index, "box": list(det.box),
                "landmarks5": fused.points5.ravel().tolist(), "landmarks68": l68.ravel().tolist(),
                "detector": cfg.detector, "detector_version": self.detector.version, "det_score": det.score,
                "align_confidence": fused.confidence, "landmark_sources": json.dumps(fused.sources_json()),
                "quad": np.asarray(aligned.quad).ravel().tolist(), "decision": "rejected" if reason else "kept",
                "reason": reason, "aligned_sha256": aligned_sha, "identity_cluster": None, "config_hash": cfg.hash,
                "transform": np.asarray(aligned.transform).ravel().tolist(), "quality": json.dumps(quality.to_dict()),
                "phash": perceptual_hash(crop),
                "descriptor": None if reason else self.describer.describe(rgb, det.box, l68).tolist(),
                "duplicate_of": None,
            })
        return rows


def align_batch(batch: Batch) -> dict[str, Any]:
    """Process one batch of images and append its faces rows; returns counts by decision and reason."""
    ws = Workspace(batch.workspace, create=False)
    config = AlignConfig.model_validate_json(batch.config_json)
    aligner = Aligner(config)
    rows: list[dict[str, Any]] = []
    progress = Progress(batch.label, "image", ticks, total=len(batch.images), interval=TICK_SECONDS)
    decisions: Counter[str] = Counter()
    try:
        for sha in batch.images:
            try:
                found = aligner.faces(ws, sha)
            except Exception as exc:  # a bug or an odd image must cost one row, not the batch
                log.exception("aligning %s", sha)
                found = [_image_row(sha, config, aligner.detector.version, f"error:{type(exc).__name__}")]
            rows.extend(found)
            decisions.update(r["decision"] for r in found)
            progress.update(1, kept=decisions["kept"], rejected=decisions["rejected"])
    finally:
        progress.close()
    if rows:
        ws.append("faces", pd.DataFrame(rows), batch.run_id)
    counts = Counter(f"{r['decision']}" for r in rows if r["face_index"] != NO_FACE)
    counts.update(f"reason_{r['reason']}" for r in rows if r["reason"])
    return {"counts": dict(counts)}


def deduplicate(faces: pd.DataFrame, config: AlignConfig) -> pd.DataFrame:
    """Rows to append: exact and near duplicates rejected (the first face of a group stays), identities set."""
    kept = faces[faces["decision"] == "kept"].copy()
    if kept.empty:
        return kept
    # The face that stays of a duplicate group is the first in this order: highest resolution, then sharpest.
    quality = kept["quality"].map(json.loads)
    kept["_iod"], kept["_blur"] = quality.map(lambda q: -q["inter_ocular"]), quality.map(lambda q: -q["blur"])
    kept = kept.sort_values(["_iod", "_blur", "face_id"]).drop(columns=["_iod", "_blur"]).reset_index(drop=True)
    updates: dict[str, dict[str, Any]] = {}
    groups = near_duplicate_groups(kept["phash"].tolist(), config.dedup.near_max_distance)
    first_of_group: dict[int, str] = {}
    first_of_pixels: dict[str, str] = {}
    for row, group in zip(kept.to_dict("records"), groups):
        if (original := first_of_pixels.setdefault(row["aligned_sha256"], row["face_id"])) != row["face_id"]:
            updates[row["face_id"]] = {"decision": "rejected", "reason": "duplicate_exact", "duplicate_of": original}
        elif (original := first_of_group.setdefault(group, row["face_id"])) != row["face_id"]:
            updates[row["face_id"]] = {"decision": "rejected", "reason": "duplicate_near", "duplicate_of": original}
    unique = kept[~kept["face_id"].isin(updates)]
    labels = identity_clusters([np.asarray(d) for d in unique["descriptor"]], config.dedup.identity_threshold)
    for face_id, label in zip(unique["face_id"], labels):
        updates[face_id] = {"identity_cluster": int(label)}
    rows = []
    for row in kept.to_dict("records"):
        change = updates[row["face_id"]]
        if any(pd.isna(row[k]) or row[k] != v for k, v in change.items()):  # the changed fields are scalars
            rows.append({**row, **change})
    return pd.DataFrame(rows, columns=[c for c in faces.columns if c != "run_id"])


def run(config: AlignConfig, workspace: Workspace, inputs: list[Manifest] | tuple = (),
        map_batches: MapBatches[Batch] | None = None) -> Manifest:
    with stage_run(workspace, STAGE, config, inputs) as run_ctx:
        images = sorted(set(workspace.table("images", columns=["sha256"])["sha256"]))
        done = set(workspace.table("faces", columns=["image_sha256", "config_hash"])
                   .query("config_hash == @config.hash")["image_sha256"])
        todo = [sha for sha in images if sha not in done]
        common = {"workspace": str(workspace.root), "config_json": config.model_dump_json(), "run_id": run_ctx.run_id}
        size = config.images_per_task if map_batches is not None else max(1, len(todo))
        starts = range(0, len(todo), size)
        batches = [Batch(**common, index=i, images=todo[s:s + size], batches=len(starts)) for i, s in enumerate(starts)]
        results = (map_batches or map_in_process)(align_batch, batches)
        counts: Counter[str] = Counter()
        for result in results:
            counts.update(result["counts"])
        updates = deduplicate(effective_faces(workspace, config.hash), config)
        if not updates.empty:
            workspace.append("faces", updates, run_ctx.run_id)
        final = effective_faces(workspace, config.hash)
        faces_only = final[final["face_index"] != NO_FACE]
        run_ctx.manifest.tables["faces"] = TableOutput(table="faces", rows=len(final), digest=table_digest(final, STATE_COLUMNS))
        run_ctx.manifest.counts.update({
            "images": len(images), "images_skipped_done": len(images) - len(todo), "tasks": len(batches),
            "faces": len(faces_only), "kept": int((faces_only["decision"] == "kept").sum()),
            "identities": int(faces_only["identity_cluster"].nunique()),
            **{f"reason_{k}": int(v) for k, v in final["reason"].value_counts().items()},
        })
        c = run_ctx.manifest.counts
        ticks.info("align: finished %d images (%d done before) in %d task(s); %d faces, %d kept after dedup, "
                   "%d identities", len(todo), c["images_skipped_done"], c["tasks"], c["faces"], c["kept"],
                   c["identities"])
    return run_ctx.manifest
