"""The shard stage: a versioned MEGN dataset (WebDataset shards, samples table, card) from the catalog.

Inputs are the faces the align stage kept (its effective rows for the upstream config hash) and the crawl
provenance of their images (candidates joined with queries). Each face becomes one sample whose label is
the attribute of the queries that found its image (a weak label, `label_source = "query"`); an image found
by queries of different attributes with no majority is rejected as `label_conflict`. The opt-out registry
is applied again here, so an opt-out that arrives after the crawl still drops the image. Faces are split
train/val by identity cluster, so no person is in both.

The dataset version id is the hash of the sample manifest (every key, split, label, aligned pixel hash and
metadata, plus the encoding settings); the same catalog and config give the same id and byte-identical
shards. A version folder is written under a temporary name and renamed when complete, and an existing
complete version is not rewritten. It holds the shards, `stats/` (per-shard counts and hashes), the card as
`README.md` (whose front matter lets `datasets.load_dataset(folder)` read the shards with their class names),
`grid.png`, `config.json` and `version.json`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import Field

from data_catalog.atomic import atomic_write_text
from data_catalog.card import CARD_NAME, CardInputs, card_path, write_card
from data_catalog.config import StageConfig
from data_catalog.effective import effective_faces, latest_candidates
from data_catalog.hashing import canonical_json, sha256_bytes
from data_catalog.manifest import Manifest, TableOutput, table_digest
from data_catalog.optout import OptOutRegistry
from data_catalog.runs import stage_run
from data_catalog.shards import ATTRIBUTE_IDS, ShardInfo, ShardSample, encode_image, read_all_stats, write_shards
from data_catalog.stages import StageOutputs
from data_catalog.workspace import Workspace

STAGE = "shard"
VERSION_FILE = "version.json"  # written last: its presence marks a complete version folder
SPLITS = ("train", "val")
SAMPLE_COLUMNS = ["dataset_version", "split", "shard", "key", "face_id", "attribute_id", "attribute", "label_source"]


class ShardConfig(StageConfig):
    STAGE = "shard"
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: int = Field(default=95, ge=1, le=100)
    max_count: int = Field(default=1000, ge=1)  # samples per shard
    max_bytes: int = Field(default=1 << 30, ge=1 << 16)  # bytes per shard
    min_shards: int = Field(default=1, ge=1)  # per split: at least GPUs x loader workers for DDP training
    val_fraction: float = Field(default=0.1, ge=0, lt=1)  # of identity clusters
    split_seed: int = 0
    attributes: list[Literal["none", "face_mask", "sunglasses", "frame_glasses"]] = list(ATTRIBUTE_IDS)
    optout: str | None = None  # opt-out registry file (the crawl's format)
    examples_per_attribute: int = Field(default=8, ge=0)  # in the card's grid


def version_folder(workspace: Workspace, manifest: Manifest) -> Path | None:
    """The dataset version folder a completed shard run wrote (found by its version.json), or None."""
    path = next((f.path for f in manifest.files.values() if f.path.endswith(f"/{VERSION_FILE}")), None)
    return workspace.resolve(path).parent if path else None


def _stage_inputs(workspace: Workspace, inputs: list[Manifest] | tuple) -> dict[str, Manifest]:
    by_stage = {m.stage: m for m in inputs}
    for stage in ("crawl", "align"):
        if stage not in by_stage:
            current = workspace.current(stage)
            if current is None:
                raise ValueError(f"the shard stage needs a completed {stage} run in {workspace.root}")
            by_stage[stage] = current
    return by_stage


def provenance(workspace: Workspace, candidates: pd.DataFrame, image_sha256: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Per image: every successful search hit that fetched it (engine, query, rank, URL, licence).

    `candidates` are the effective ones (`latest_candidates`)."""
    candidates = candidates[(candidates["status"] == "ok") & candidates["sha256"].isin(image_sha256)]
    queries = workspace.table("queries").drop_duplicates("query_id", keep="last")
    merged = candidates.merge(queries[["query_id", "attribute", "keyword", "language"]], on="query_id", how="left")
    result: dict[str, list[dict[str, Any]]] = {}
    for row in merged.sort_values(["sha256", "engine", "query_id", "rank", "url"], na_position="last").to_dict("records"):
        result.setdefault(row["sha256"], []).append({
            key: (None if pd.isna(row.get(key)) else row[key])
            for key in ("engine", "query_id", "attribute", "keyword", "language", "rank", "url", "page_url", "title",
                        "licence")
        })
    for hits in result.values():
        for hit in hits:
            hit["rank"] = None if hit["rank"] is None else int(hit["rank"])
    return result


def label_of(hits: list[dict[str, Any]]) -> tuple[str | None, str]:
    """(attribute, why): the majority attribute of the queries that found the image."""
    votes = Counter(h["attribute"] for h in hits if h["attribute"])
    if not votes:
        return None, "no_label"
    (top, count), *rest = votes.most_common()
    if rest and rest[0][1] == count:
        return None, "label_conflict"
    return top, "query"


def identity_keys(faces: pd.DataFrame) -> dict[str, str]:
    """face id -> a stable identity key (the smallest face id of its cluster; cluster numbers are not)."""
    keys: dict[str, str] = {}
    clusters = faces.groupby(faces["identity_cluster"].fillna(-1).astype("int64"))
    for cluster, group in clusters:
        ids = sorted(group["face_id"])
        for face_id in ids:
            keys[face_id] = face_id if cluster < 0 else ids[0]
    return keys


def assign_splits(identities: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Identity -> split by a seeded hash; at least one identity in val when asked and possible."""
    score = {i: int(sha256_bytes(f"{seed}:{i}".encode())[:12], 16) / float(1 << 48) for i in identities}
    splits = {i: ("val" if score[i] < val_fraction else "train") for i in identities}
    if val_fraction > 0 and len(identities) > 1 and "val" not in splits.values():
        splits[min(identities, key=lambda i: score[i])] = "val"
    if len(identities) > 1 and "train" not in splits.values():
        splits[max(identities, key=lambda i: score[i])] = "train"
    return splits


def _floats(values: object) -> list[float] | None:
    if values is None or (isinstance(values, float) and np.isnan(values)):
        return None
    return [round(float(v), 3) for v in values]  # type: ignore[union-attr]


_FLOATS = ["float64"]
# The fields of `<key>.json` (sample_metadata) as the card declares them to Hugging Face `datasets`.
METADATA_FEATURES: dict[str, Any] = {
    "face_id": "string", "image_sha256": "string", "face_index": "int64", "aligned_sha256": "string",
    "attribute": "string", "attribute_id": "int64", "label_source": "string", "split": "string", "identity": "string",
    "licence": "string",
    "sources": [{"engine": "string", "query_id": "string", "attribute": "string", "keyword": "string",
                 "language": "string", "rank": "int64", "url": "string", "page_url": "string", "title": "string",
                 "licence": "string"}],
    "detector": "string", "detector_version": "string", "det_score": "float64", "align_confidence": "float64",
    "box": _FLOATS, "landmarks5": _FLOATS, "landmarks68": _FLOATS, "quad": _FLOATS, "transform": _FLOATS,
    "align_config_hash": "string",
}


def sample_metadata(face: dict[str, Any], attribute: str, hits: list[dict[str, Any]], identity: str,
                    split: str) -> dict[str, Any]:
    """What `<key>.json` holds: everything needed to trace the sample back to its query and URL."""
    return {
        "face_id": face["face_id"], "image_sha256": face["image_sha256"], "face_index": int(face["face_index"]),
        "aligned_sha256": face["aligned_sha256"], "attribute": attribute, "attribute_id": ATTRIBUTE_IDS[attribute],
        "label_source": "query", "split": split, "identity": identity,
        "licence": next((h["licence"] for h in hits if h["licence"]), None), "sources": hits,
        "detector": face["detector"], "detector_version": face["detector_version"],
        "det_score": round(float(face["det_score"]), 4),
        "align_confidence": None if pd.isna(face["align_confidence"]) else round(float(face["align_confidence"]), 4),
        "box": _floats(face["box"]), "landmarks5": _floats(face["landmarks5"]), "landmarks68": _floats(face["landmarks68"]),
        "quad": _floats(face["quad"]), "transform": _floats(face["transform"]),
        "align_config_hash": face["config_hash"],
    }


def select_samples(workspace: Workspace, config: ShardConfig, faces: pd.DataFrame, candidates: pd.DataFrame,
                   registry: OptOutRegistry) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Every sample (sorted by key) with its split and metadata, and the rejections by reason.

    `faces` are the align stage's effective rows for its config, `candidates` the effective candidates."""
    faces = faces[faces["decision"] == "kept"].sort_values("face_id").reset_index(drop=True)
    hits_by_image = provenance(workspace, candidates, set(faces["image_sha256"]))
    rejected: Counter[str] = Counter()
    chosen = []
    for face in faces.to_dict("records"):
        hits = hits_by_image.get(face["image_sha256"], [])
        if registry.blocks_sha256(face["image_sha256"]) or any(registry.blocks_url(h["url"]) for h in hits):
            rejected["opt_out"] += 1
            continue
        attribute, why = label_of(hits)
        if attribute is None:
            rejected[why] += 1
            continue
        if attribute not in config.attributes:
            rejected["attribute_excluded"] += 1
            continue
        chosen.append((face, attribute, hits))
    selected = pd.DataFrame([f for f, _, _ in chosen], columns=faces.columns)
    identities = identity_keys(selected)
    splits = assign_splits(sorted(set(identities.values())), config.val_fraction, config.split_seed)
    samples = []
    for face, attribute, hits in chosen:
        identity = identities[face["face_id"]]
        split = splits[identity]
        samples.append({"key": face["face_id"], "face_id": face["face_id"], "split": split, "attribute": attribute,
                        "attribute_id": ATTRIBUTE_IDS[attribute], "aligned_sha256": face["aligned_sha256"],
                        "metadata": sample_metadata(face, attribute, hits, identity, split)})
    return samples, rejected


def dataset_version(samples: list[dict[str, Any]], config: ShardConfig) -> str:
    """The hash of the sample manifest and of what changes the bytes (format, quality, shard sizes)."""
    encoding = config.model_dump(include={"image_format", "jpeg_quality", "max_count", "max_bytes", "min_shards"})
    manifest = [[s["key"], s["split"], s["attribute_id"], s["aligned_sha256"], s["metadata"]] for s in samples]
    return sha256_bytes(canonical_json({"encoding": encoding, "samples": manifest}).encode())[:16]


def _encoded(workspace: Workspace, sample: dict[str, Any], config: ShardConfig) -> bytes:
    data = workspace.aligned.read(sample["aligned_sha256"])
    if config.image_format == "png":
        return data  # the aligned store holds deterministic PNGs already
    with Image.open(io.BytesIO(data)) as image:
        return encode_image(image.convert("RGB"), "jpg", config.jpeg_quality)


def _shard_samples(workspace: Workspace, samples: list[dict[str, Any]], config: ShardConfig) -> Iterator[ShardSample]:
    for sample in samples:
        yield ShardSample(key=sample["key"], image=_encoded(workspace, sample, config), image_ext=config.image_format,
                          metadata=sample["metadata"], label=sample["attribute_id"])


def per_shard(count: int, config: ShardConfig) -> int:
    """Samples per shard: at most max_count, and few enough that every split gets min_shards shards."""
    if count == 0:
        return config.max_count
    return max(1, min(config.max_count, -(-count // config.min_shards)))


def rejection_counts(faces: pd.DataFrame, candidates: pd.DataFrame, shard: Counter[str]) -> dict[str, dict[str, int]]:
    """Stage -> reason -> count for the card: failed fetches, rejected faces, samples dropped here."""
    crawl = candidates[candidates["status"] != "ok"]["reason"].fillna("unknown").value_counts()
    align = faces[faces["decision"] != "kept"]["reason"].fillna("unknown").value_counts()
    return {"crawl": {str(k): int(v) for k, v in crawl.items()}, "align": {str(k): int(v) for k, v in align.items()},
            "shard": dict(shard)}


def _card_inputs(workspace: Workspace, config: ShardConfig, version: str, samples: list[dict[str, Any]],
                 shards: list[ShardInfo], rejections: dict[str, dict[str, int]], upstream: dict[str, Manifest],
                 code_version: str) -> CardInputs:
    rows = []
    resolution = _resolution(workspace, samples)
    examples: dict[str, list[bytes]] = {name: [] for name in ATTRIBUTE_IDS}
    for sample in samples:
        meta = sample["metadata"]
        engines = sorted({h["engine"] for h in meta["sources"] if h["engine"]}) or ["unknown"]
        rows.append({"key": sample["key"], "split": sample["split"], "attribute": sample["attribute"],
                     "attribute_id": sample["attribute_id"], "engine": engines[0], "licence": meta["licence"],
                     "width": resolution, "height": resolution})
        if sample["split"] == "train" and len(examples[sample["attribute"]]) < config.examples_per_attribute:
            examples[sample["attribute"]].append(workspace.aligned.read(sample["aligned_sha256"]))
    plan_hashes = sorted(set(workspace.table("queries", columns=["plan_hash"])["plan_hash"]))
    identities = Counter(split for _, split in {(s["metadata"]["identity"], s["split"]) for s in samples})
    return CardInputs(
        version=version, samples=pd.DataFrame(rows), rejections=rejections, resolution=resolution,
        image_format=config.image_format, plan_hash=",".join(plan_hashes) or None, code_version=code_version,
        created_from={stage: m.run_id for stage, m in sorted(upstream.items())},
        shards=[{"name": s.name, "split": s.split, "count": s.count, "bytes": s.bytes, "sha256": s.sha256} for s in shards],
        config=config.to_dict(), examples=examples, identities=dict(identities), metadata_features=METADATA_FEATURES)


def _resolution(workspace: Workspace, samples: list[dict[str, Any]]) -> int:
    if not samples:
        return 0
    with Image.open(workspace.aligned.path(samples[0]["aligned_sha256"])) as image:
        return int(image.width)


def write_version(workspace: Workspace, config: ShardConfig, version: str, samples: list[dict[str, Any]],
                  rejections: dict[str, dict[str, int]], upstream: dict[str, Manifest], code_version: str) -> Path:
    """Write the version folder under a temporary name and rename it into place when complete."""
    final = workspace.dataset_dir(version)
    if (final / VERSION_FILE).is_file():
        return final
    for stale in final.parent.glob(f".{version}.partial-*"):  # left by a killed run of this version
        shutil.rmtree(stale, ignore_errors=True)
    temp = final.with_name(f".{version}.partial-{os.getpid()}")
    temp.mkdir(parents=True)
    shards: list[ShardInfo] = []
    for split in SPLITS:
        members = [s for s in samples if s["split"] == split]
        if members:
            shards += write_shards(_shard_samples(workspace, members, config), temp, split=split, prefix="megn",
                                   max_count=per_shard(len(members), config), max_bytes=config.max_bytes)
    write_card(temp, _card_inputs(workspace, config, version, samples, shards, rejections, upstream, code_version))
    config.save(temp)
    summary = {"version": version, "samples": len(samples), "splits": dict(Counter(s["split"] for s in samples)),
               "attributes": dict(sorted(Counter(s["attribute"] for s in samples).items())),
               "shards": [s.to_dict() for s in shards]}
    atomic_write_text(temp / VERSION_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(final, ignore_errors=True)  # an incomplete folder of the same version (no version.json)
    os.replace(temp, final)
    return final


def run(config: ShardConfig, workspace: Workspace, inputs: list[Manifest] | tuple = ()) -> Manifest:
    upstream = _stage_inputs(workspace, inputs)
    with stage_run(workspace, STAGE, config, list(upstream.values())) as run_ctx:
        registry = OptOutRegistry.load(config.optout)
        # Each table is read once; the effective-row rules are the ones the crawl and align stages use.
        faces = effective_faces(workspace, upstream["align"].config_hash)
        candidates = latest_candidates(workspace)
        samples, rejected = select_samples(workspace, config, faces, candidates, registry)
        version = dataset_version(samples, config)
        folder = write_version(workspace, config, version, samples, rejection_counts(faces, candidates, rejected),
                               upstream, run_ctx.manifest.code_version)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):  # shards, stats/, README.md, ...
            run_ctx.add_file(path.relative_to(folder).as_posix(), path)
        known = workspace.table("samples")
        if not (known["dataset_version"] == version).any():
            rows = pd.DataFrame([{"dataset_version": version, "split": s["split"], "shard": "", "key": s["key"],
                                  "face_id": s["face_id"], "attribute_id": s["attribute_id"],
                                  "attribute": s["attribute"], "label_source": "query"} for s in samples])
            if not rows.empty:
                workspace.append("samples", _with_shards(rows, folder), run_ctx.run_id)
            known = workspace.table("samples")
        # The version's rows, whichever run wrote them: a rebuild describes the same dataset.
        mine = known[known["dataset_version"] == version]
        run_ctx.manifest.tables["samples"] = TableOutput(table="samples", rows=len(mine),
                                                         digest=table_digest(mine, SAMPLE_COLUMNS))
        counts = Counter(s["split"] for s in samples)
        run_ctx.manifest.counts.update({
            "samples": len(samples), **{f"split_{k}": v for k, v in counts.items()},
            **{f"attribute_{k}": v for k, v in Counter(s["attribute"] for s in samples).items()},
            **{f"rejected_{k}": v for k, v in rejected.items()},
            "shards": sum(1 for p in folder.glob("*.tar")),
        })
    return run_ctx.manifest


def _with_shards(rows: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Fill the shard column from the version's stats files (the writer decides the cut points).

    `folder` is already the final version folder when this runs, so the paths resolve."""
    shards = {split: read_all_stats(folder, split) for split in SPLITS}  # in shard order, so by first key

    def shard_of(key: str, split: str) -> str:
        infos = shards[split]
        info = infos[max(0, bisect_right([i.first_key for i in infos], key) - 1)] if infos else None
        if info is None or not info.first_key <= key <= info.last_key:
            raise ValueError(f"sample {key} is in no {split} shard of {folder}")
        return f"primary/megn/{folder.name}/{info.name}"  # workspace-relative, as every catalog path

    rows["shard"] = [shard_of(k, s) for k, s in zip(rows["key"], rows["split"])]
    return rows


def describe(workspace: Workspace, manifest: Manifest) -> StageOutputs | None:
    """Where a shard run's dataset version is: its id, folder, card and shards (printed and published)."""
    folder = version_folder(workspace, manifest)
    if folder is None:
        return None
    card = card_path(folder)
    return StageOutputs(
        title=f"dataset version {folder.name}",
        items={"version": folder.name, "folder": str(folder), "card": str(card),
               "shards": str(folder / "megn-{train,val}-*.tar"),
               "load": f"datasets.load_dataset({str(folder)!r})" if card.name == CARD_NAME else "webdataset"},
        markdown=str(card),
        artifact_key="megn-dataset-card",
    )
