"""The report of an evaluation: `metrics.json`, `report.md` (images beside it) and a self-contained `report.html`.

Both documents are rendered from the metrics dict alone (plus the image files in the report folder), so they say
the same thing. The HTML embeds every image as a base64 `data:` URI and carries its own CSS: it opens anywhere,
mailed or archived, without the folder. Neither holds a run id or a time, so an evaluation repeated on the same
inputs writes the same bytes.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inference.evaluation.plots import METHOD_NAMES
from inference.evaluation.scoring import METRICS

TABLE_METRICS = ("success", "dlib_distance", "arcface_cosine", "l1_gt", "psnr_gt", "ssim_gt", "background_l1")
DEMO_NOTE = ("The demo generator is tiny: its faces are blobs. These numbers test the pipeline end to end, not the "
             "method; the full profile (256 px, the official truncation) is the paper-scale recipe.")
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;
text-align:right}th:first-child,td:first-child{text-align:left}thead{background:#f3f3f3}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.5em 1em}img{max-width:100%;image-rendering:pixelated}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}.skip{color:#888;font-style:italic}"""


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if abs(value) < 0.5 * 10.0 ** -digits:
        value = 0.0  # no "-0.0000"
    return f"{value:.{digits}f}"


def cell(entry: Mapping[str, Any] | None) -> str:
    """"mean [lo, hi]" of a CI dict, "skipped" of a Skipped dict."""
    if not entry:
        return "n/a"
    if entry.get("skipped"):
        return "skipped"
    if entry.get("n", 1) == 0:
        return "n/a"
    return f"{_number(entry['mean'])} [{_number(entry['lo'])}, {_number(entry['hi'])}]"


def distribution_cell(entry: Mapping[str, Any]) -> tuple[str, str]:
    if entry.get("skipped"):
        return "skipped", "skipped"
    return _number(entry["fid"], 2), f"{_number(entry['kid']['mean'], 5)} ± {_number(entry['kid']['std'], 5)}"


def headline_rows(attribute: Mapping[str, Any]) -> list[list[str]]:
    """One row per method: the per-sample metrics' mean [CI], then FID and KID."""
    rows = []
    for method, metrics in attribute["methods"].items():
        fid, kid = distribution_cell(attribute["distribution"][method])
        rows.append([METHOD_NAMES.get(method, method)] + [cell(metrics.get(name)) for name in TABLE_METRICS]
                    + [fid, kid])
    return rows


def difference_rows(attribute: Mapping[str, Any]) -> list[list[str]]:
    return [[METRICS[name][0], cell(entry), "higher" if METRICS[name][1] else "lower"]
            for name, entry in attribute["differences"].items() if name in METRICS and METRICS[name][1] is not None]


def skipped_reasons(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Every distinct reason something was skipped, by what."""
    out: dict[str, str] = {}
    for attribute in metrics["attributes"].values():
        for entries in attribute["methods"].values():
            for name, entry in entries.items():
                if entry.get("skipped") and not entry["reason"].startswith("not defined"):
                    out[METRICS.get(name, (name,))[0]] = entry["reason"]
        for entry in attribute["distribution"].values():
            if entry.get("skipped"):
                out["FID / KID"] = entry["reason"]
    return out


UPSTREAM_TITLES = {"classifier": "The classifier's figures", "boundaries": "The boundaries' figures"}


def upstream_text(metrics: Mapping[str, Any], section: str) -> tuple[str, list[str], list[list[str]]]:
    """(a sentence, table headers, rows) of the classifier's or the boundaries' own numbers; ("", [], []) if none."""
    entry = (metrics.get("upstream") or {}).get(section)
    if not entry:
        return "", [], []
    if section == "classifier":
        line = f"train-classifier run {entry['run']}"
        if entry.get("temperature") is not None:
            line += (f": calibration temperature {_number(entry['temperature'], 3)}, ECE {_number(entry['ece_before'], 3)}"
                     f" before, {_number(entry['ece_after'], 3)} after, on {entry.get('val_samples')} val faces "
                     "with query labels.")
        rows = [[a, _number(v.get("precision"), 3), _number(v.get("recall"), 3), _number(v.get("auc"), 3),
                 str(v.get("positives"))] for a, v in (entry.get("val") or {}).items()]
        return line, ["attribute", "val precision", "val recall", "val ROC AUC", "positives"], rows
    line = f"fit-boundaries run {entry['run']}" + ("" if entry.get("in_lineage") else
                                                   " (the workspace's current run: not in the synthesis's lineage)")
    rows = [[a, _number(v, 4)] for a, v in (entry.get("val_accuracy") or {}).items()]
    return line + ".", ["attribute", "boundary SVM val accuracy"], rows


HEADERS = (["method"] + [METRICS[name][0].split(" (")[0] for name in TABLE_METRICS] + ["FID", "KID"])


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + ["| " + " | ".join(r) + " |"
                                                                              for r in rows]


def _intro(metrics: Mapping[str, Any]) -> list[str]:
    s = metrics["synthesis"]
    lines = [(f"Synthesis {s['run']} ({s['source']}, {s['image_size']} px, truncation psi {s['truncation']}); "
             f"classifier `{metrics['classifier']['path']}` (success at calibrated p >= "
             f"{_number(metrics['classifier']['threshold'], 2)}, {metrics['classifier']['threshold_source']}); "
             f"reference faces: {metrics['reference']}. Means with {int(metrics['bootstrap']['confidence'] * 100)}% "
             f"bootstrap intervals ({metrics['bootstrap']['resamples']} resamples).")]
    return lines


def render_markdown(metrics: Mapping[str, Any], figures: Mapping[str, list[tuple[str, str]]]) -> str:
    """`figures`: section -> [(caption, file name in the report folder)]."""
    lines = ["# SD-GAN evaluation", ""]
    if metrics["synthesis"]["demo_generator"]:
        lines += [f"> {DEMO_NOTE}", ""]
    if metrics["synthesis"]["minmax"]:
        lines += [("> The images were saved with the official per-image min-max normalisation, which distorts "
                  "every metric below."), ""]
    lines += _intro(metrics) + [""]
    for name, attribute in metrics["attributes"].items():
        lines += [f"## {name} ({attribute['n']} samples)", ""]
        lines += _md_table(HEADERS, headline_rows(attribute)) + [""]
        if attribute["differences"]:
            lines += ["SD-GAN minus InterfaceGAN, paired over the same samples:", ""]
            lines += _md_table(["metric", "difference [CI]", "better when"], difference_rows(attribute)) + [""]
        lines += [f"- {note}" for note in attribute["notes"]] + ([""] if attribute["notes"] else [])
        for caption, file in figures.get(name, []):
            lines += [f"![{caption}]({file})", ""]
    reasons = skipped_reasons(metrics)
    if reasons:
        lines += ["## Not computed", ""] + [f"- {what}: {why}" for what, why in reasons.items()] + [""]
    for section, title in UPSTREAM_TITLES.items():
        line, headers, rows = upstream_text(metrics, section)
        if line or figures.get(section):
            lines += [f"## {title}", ""] + ([line, ""] if line else [])
            lines += (_md_table(headers, rows) + [""]) if rows else []
            lines += [text for caption, file in figures.get(section, []) for text in (f"![{caption}]({file})", "")]
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    kind = "gif" if path.suffix.lower() == ".gif" else "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _code(escaped: str) -> str:
    """Markdown's `code` spans of an already escaped line as <code> elements."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], css_class: str = "metrics") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td{' class=skip' if c == 'skipped' else ''}>{html.escape(c)}</td>"
                                     for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(metrics: Mapping[str, Any], figures: Mapping[str, list[tuple[str, str]]], folder: Path) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>SD-GAN evaluation</title>", f"<style>{CSS}</style></head><body>", "<h1>SD-GAN evaluation</h1>"]
    if metrics["synthesis"]["demo_generator"]:
        parts.append(f'<p class="note">{html.escape(DEMO_NOTE)}</p>')
    if metrics["synthesis"]["minmax"]:
        parts.append('<p class="note">The images were saved with the official per-image min-max normalisation, '
                     "which distorts every metric below.</p>")
    parts += [f"<p>{_code(html.escape(line))}</p>" for line in _intro(metrics)]

    def figure(caption: str, file: str) -> str:
        from PIL import Image

        with Image.open(folder / file) as image:
            width = image.width
        scale = f' width="{min(width * 3, 960)}"' if width < 320 else ""  # small grids (the demo's 32 px faces)
        return (f'<figure><img src="{_data_uri(folder / file)}" alt="{html.escape(caption)}"{scale}>'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    for name, attribute in metrics["attributes"].items():
        parts.append(f'<h2 id="{html.escape(name)}">{html.escape(name)} ({attribute["n"]} samples)</h2>')
        parts.append(_html_table(HEADERS, headline_rows(attribute)))
        if attribute["differences"]:
            parts.append("<p>SD-GAN minus InterfaceGAN, paired over the same samples:</p>")
            parts.append(_html_table(["metric", "difference [CI]", "better when"], difference_rows(attribute),
                                     "differences"))
        parts += [f"<p>{html.escape(note)}</p>" for note in attribute["notes"]]
        parts += [figure(caption, file) for caption, file in figures.get(name, [])]
    reasons = skipped_reasons(metrics)
    if reasons:
        parts.append("<h2>Not computed</h2><ul>" + "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>"
                                                           for k, v in reasons.items()) + "</ul>")
    for section, title in UPSTREAM_TITLES.items():
        line, headers, rows = upstream_text(metrics, section)
        if line or figures.get(section):
            parts.append(f"<h2>{title}</h2>")
            parts += [f"<p>{html.escape(line)}</p>"] if line else []
            parts += [_html_table(headers, rows, "upstream")] if rows else []
            parts += [figure(caption, file) for caption, file in figures.get(section, [])]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


__all__ = ["METHOD_NAMES", "cell", "render_html", "render_markdown"]
