"""After training: validation figures, temperature calibration, the label check and the report files.

All figures are on real faces with their query (weak) labels, so they measure agreement with the crawl's
labels, not ground truth; the label check lists where the two part ways. Nothing here changes a label.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from data_catalog.loader import to_float_images
from training.classifier.data import FaceSet, multi_hot
from training.classifier.model import ATTRIBUTES, LABEL_NAMES
from training.classifier.scorer import AttributeScorer
from training.common.images import save_grid

__all__ = ["VERDICTS", "build_report", "ece", "fit_temperature", "label_check", "score_faces", "verdicts"]

VERDICTS = ("agrees", "disagrees", "uncertain")


def score_faces(scorer: AttributeScorer, faces: FaceSet, batch: int = 128) -> torch.Tensor:
    """[N, A] logits of every face of a split (CPU)."""
    out = [scorer.logits(to_float_images(faces.images[i:i + batch])) for i in range(0, len(faces), batch)]
    return torch.cat(out) if out else torch.zeros(0, len(ATTRIBUTES))


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T > 0 minimising the BCE NLL of sigmoid(logits / T): golden-section search on log T in [-3, 3]."""
    if logits.numel() == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return float(F.binary_cross_entropy_with_logits(logits / math.exp(log_t), targets))

    lo, hi = -3.0, 3.0
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return round(math.exp((lo + hi) / 2), 6)


def ece(probabilities: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> float | None:
    """Expected calibration error over every (face, attribute) binary prediction, `bins` equal-width bins."""
    p, y = probabilities.flatten().double(), targets.flatten().double()
    if p.numel() == 0:
        return None
    index = torch.clamp((p * bins).long(), max=bins - 1)
    total = 0.0
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            total += float(chosen.sum()) / p.numel() * abs(float(p[chosen].mean() - y[chosen].mean()))
    return round(total, 6)


def predicted_labels(probabilities: torch.Tensor) -> torch.Tensor:
    """Single label per face for the confusion table: the most probable attribute if >= 0.5, else none (0)."""
    if probabilities.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    best, index = probabilities.max(dim=1)
    return torch.where(best >= 0.5, index + 1, torch.zeros_like(index))


def attribute_figures(probabilities: torch.Tensor, targets: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Precision, recall, ROC AUC (None when val lacks a class) and support per attribute at p >= 0.5."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    figures = {}
    for i, attribute in enumerate(ATTRIBUTES):
        y, p = targets[:, i].numpy().astype(int), probabilities[:, i].numpy()
        pred = (p >= 0.5).astype(int)
        both = 0 < y.sum() < len(y)
        figures[attribute] = {
            "precision": round(float(precision_score(y, pred, zero_division=0)), 4),
            "recall": round(float(recall_score(y, pred, zero_division=0)), 4) if y.sum() else None,
            "auc": round(float(roc_auc_score(y, p)), 4) if both else None,
            "positives": int(y.sum()), "negatives": int(len(y) - y.sum())}
    return figures


def confusion(query: torch.Tensor, predicted: torch.Tensor) -> dict[str, dict[str, int]]:
    """{query label: {predicted label: count}} over none + the attributes."""
    table = {q: dict.fromkeys(LABEL_NAMES, 0) for q in LABEL_NAMES}
    for q, p in zip(query.tolist(), predicted.tolist()):
        table[LABEL_NAMES[q]][LABEL_NAMES[p]] += 1
    return table


def verdicts(probabilities: torch.Tensor, labels: torch.Tensor, threshold: float) -> list[str]:
    """Per face: "agrees" when the classifier is confident the query label is right, "disagrees" when it is
    confident it is wrong (the labelled attribute absent, or for "none" some attribute present), else
    "uncertain". Confident = calibrated probability >= threshold (or <= 1 - threshold for absence)."""
    out = []
    for p, label in zip(probabilities.tolist(), labels.tolist()):
        if label == 0:
            top = max(p)
            out.append("disagrees" if top >= threshold else "agrees" if top <= 1 - threshold else "uncertain")
        else:
            own = p[label - 1]
            out.append("agrees" if own >= threshold else "disagrees" if own <= 1 - threshold else "uncertain")
    return out


def label_check(scorer: AttributeScorer, splits: dict[str, FaceSet], dataset_version: str, threshold: float,
                rows: str = "all") -> tuple[pd.DataFrame, Counter[str], list[dict[str, Any]]]:
    """Score every face of every split: (label_checks rows, verdict counts, the disagreements for the report)."""
    records, counts, disagreements = [], Counter({v: 0 for v in VERDICTS}), []
    for split, faces in splits.items():
        probs = scorer.probabilities(to_float_images(faces.images)) if len(faces) else torch.zeros(0, 3)
        for key, label, p, verdict in zip(faces.keys, faces.labels.tolist(), probs.tolist(),
                                          verdicts(probs, faces.labels, threshold)):
            counts[verdict] += 1
            row = {"dataset_version": dataset_version, "key": key, "split": split, "query_label": LABEL_NAMES[label],
                   "scores": [round(float(x), 6) for x in p], "verdict": verdict, "threshold": float(threshold)}
            if verdict == "disagrees":
                disagreements.append(row)
            if rows == "all" or verdict == "disagrees":
                records.append(row)
    return pd.DataFrame(records), counts, disagreements


def _grid(val: FaceSet, probs: torch.Tensor, targets: torch.Tensor, count: int, path: Path) -> dict[str, list[str]]:
    """Top row(s): the most confident correct faces; then the most confused (highest BCE vs the query label)."""
    loss = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), targets, reduction="none").sum(1)
    correct = (predicted_labels(probs) == val.labels)
    confidence = (probs - 0.5).abs().min(dim=1).values
    confident = [i for i in torch.argsort(confidence, descending=True, stable=True).tolist() if correct[i]][:count]
    confused = torch.argsort(loss, descending=True, stable=True).tolist()[:count]
    chosen = confident + confused
    save_grid(to_float_images(val.images[chosen]), path, columns=max(len(confident), len(confused), 1))
    return {"confident": [val.keys[i] for i in confident], "confused": [val.keys[i] for i in confused]}


def build_report(scorer: AttributeScorer, val: FaceSet, *, calibrate: bool, bins: int, grid_faces: int,
                 folder: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Validation figures and calibration; sets the scorer's temperature; writes grid-val.png when val has faces."""
    report: dict[str, Any] = {"attributes": list(ATTRIBUTES), **extra, "val_samples": len(val),
                              "val_labels": val.label_counts()}
    if not len(val):
        report.update(val_empty=True, temperature=1.0, figures=None, confusion=None, ece_before=None, ece_after=None,
                      note="the val split holds no samples: no validation figures and no calibration "
                           "(temperature 1.0); build a dataset with a val split to get them")
        return report
    logits, targets = score_faces(scorer, val), multi_hot(val.labels)
    temperature = fit_temperature(logits, targets) if calibrate else 1.0
    raw, calibrated = torch.sigmoid(logits), torch.sigmoid(logits / temperature)
    scorer.temperature = temperature
    report.update(val_empty=False, temperature=temperature, figures=attribute_figures(calibrated, targets),
                  confusion=confusion(val.labels, predicted_labels(calibrated)),
                  accuracy=round(float((predicted_labels(calibrated) == val.labels).float().mean()), 4),
                  ece_before=ece(raw, targets, bins), ece_after=ece(calibrated, targets, bins), ece_bins=bins)
    report["grid"] = _grid(val, calibrated, targets, grid_faces, folder / "grid-val.png")
    return report


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def report_markdown(report: dict[str, Any]) -> str:
    """report.md: the figures a reader checks first, then the label check summary."""
    lines = ["# Attribute classifier report", "",
             f"Dataset `{report['dataset_version']}`; trained on {report['train_samples']} real faces "
             f"({report['real_seen']} real and {report['composite_seen']} composite samples shown, "
             f"{report['kimg']:.3f} kimg); validated on {report['val_samples']} real faces with query labels.", ""]
    if report["val_empty"]:
        lines += [f"**No validation figures:** {report['note']}.", ""]
    else:
        lines += ["| attribute | precision | recall | ROC AUC | positives |", "|---|---|---|---|---|"]
        for attribute, f in report["figures"].items():
            lines.append(f"| {attribute} | {_fmt(f['precision'])} | {_fmt(f['recall'])} | {_fmt(f['auc'])} | "
                         f"{f['positives']} |")
        lines += ["", f"Accuracy (one label: top attribute if p >= 0.5, else none): {_fmt(report['accuracy'])}", "",
                  f"Calibration: temperature {report['temperature']:.3f}; ECE ({report['ece_bins']} bins) "
                  f"{_fmt(report['ece_before'])} before, {_fmt(report['ece_after'])} after.", "",
                  "Confusion (rows: query label, columns: predicted):", "",
                  "| query \\ predicted | " + " | ".join(LABEL_NAMES) + " |", "|---" * (len(LABEL_NAMES) + 1) + "|"]
        for query, row in report["confusion"].items():
            lines.append(f"| {query} | " + " | ".join(str(row[p]) for p in LABEL_NAMES) + " |")
        lines += ["", "`grid-val.png`: top row the most confident correct val faces, bottom row the most confused."]
    check = report.get("label_check")
    if check:
        lines += ["", "## Label check", "", label_check_markdown(check, heading=False)]
    return "\n".join(lines) + "\n"


def label_check_markdown(check: dict[str, Any], heading: bool = True) -> str:
    """label-check.md: verdict counts and the faces whose query label the classifier strongly disputes."""
    lines = [f"# Label check of dataset {check['dataset_version']}", ""] if heading else []
    counts = check["counts"]
    lines += [f"Every train and val face scored; threshold {check['threshold']} on calibrated probabilities. "
              f"Verdicts: {counts['agrees']} agree, {counts['disagrees']} disagree, {counts['uncertain']} uncertain. "
              "Labels are never changed; rows are in the catalog table `label_checks`.", ""]
    if check["disagreements"]:
        lines += ["| key | split | query label | " + " | ".join(ATTRIBUTES) + " |", "|---" * (3 + len(ATTRIBUTES)) + "|"]
        for row in check["disagreements"][:50]:
            lines.append(f"| {row['key']} | {row['split']} | {row['query_label']} | "
                         + " | ".join(f"{s:.2f}" for s in row["scores"]) + " |")
        if len(check["disagreements"]) > 50:
            lines.append(f"\n... and {len(check['disagreements']) - 50} more (see the catalog).")
    return "\n".join(lines) + "\n"


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
