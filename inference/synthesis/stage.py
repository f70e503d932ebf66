"""The synthesize stage: fusion networks + generator + test set -> origins, basis edits and SD-GAN edits.

`run(config, workspace, inputs)` is what the Prefect flow and `sdgan synthesize` call. Every input is resolved
and loaded before anything is written (`sources`); the run is then made in a staging folder
`reporting/syntheses/.partial-<run-id>/` and renamed to `reporting/syntheses/<run-id>/` when complete, so a
failed or killed run leaves no half-written synthesis (the next run removes the stale staging folder). The
layout is `inference.synthesis.layout`'s.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from data_catalog.atomic import atomic_write_text
from data_catalog.hashing import sha256_file
from data_catalog.manifest import Manifest
from data_catalog.progress import Progress
from data_catalog.runs import new_run_id, stage_run
from data_catalog.workspace import Workspace
from inference.synthesis import layout
from inference.synthesis.config import SynthesizeConfig
from inference.synthesis.inputs import PairMaker, file_batches, pair_batches
from inference.synthesis.layout import SynthesisInfo, alpha_name, image_name
from inference.synthesis.render import EditRenderer, offset_norms
from inference.synthesis.sources import Sources, SynthesisInputError, finite_norms, read_test_set, resolve
from inference.synthesis.writer import ImageWriter, as_uint8, grid
from training.common.device import kept_torch_threads

__all__ = ["STAGE", "SynthesisInputError", "SynthesizeConfig", "run"]

STAGE = "synthesize"
PARTIAL_PREFIX = ".partial-"
CHECKSUMS_FILE = "images.sha256"
logger = logging.getLogger("sdgan.synthesize")
ProgressCallback = Callable[[float, str], None]


# ---------------------------------------------------------------------------------------------- loading
def _load_networks(sources: Sources, handle: Any, device: torch.device) -> dict[str, Any]:
    from training.fusion.checkpoint import load_fusion_checkpoint

    networks = {}
    for attribute, path in sources.fusion.items():
        network = load_fusion_checkpoint(path, device="cpu")
        arch = network.arch
        if (arch.w_dim, arch.num_ws) != (handle.style_dim, handle.n_latent):
            raise SynthesisInputError(
                f"fusion checkpoint {path} ({attribute}) predicts n_o of shape ({arch.num_ws}, {arch.w_dim}) but the "
                f"generator {sources.generator} takes W+ of shape ({handle.n_latent}, {handle.style_dim}): they do "
                "not belong together")
        networks[attribute] = network.to(device).eval()
    return networks


def _templates(config: SynthesizeConfig, attributes: Sequence[str]) -> dict[str, Any]:
    from alignment.attributes import make_template
    from training.fusion_pairs.config import BUILTIN_TEMPLATES
    from training.fusion_pairs.templates import png_template

    out = {}
    for attribute in attributes:
        value = config.templates.get(attribute, BUILTIN_TEMPLATES[attribute][0])
        if value in BUILTIN_TEMPLATES[attribute]:
            out[attribute] = make_template(value, 512)
        else:
            out[attribute] = png_template(Path(value).expanduser(), attribute, config.anchors.get(attribute))
    return out


def _maker(config: SynthesizeConfig, sources: Sources, editor: Any, networks: dict[str, Any],
           handle: Any, device: torch.device) -> PairMaker:
    """Source "files": the Unsup3d networks, landmark finder and templates, loaded before any work."""
    from training.fusion.trainer import canonical_size
    from training.fusion_pairs.landmarks import LandmarkFinder
    from training.unsup3d.checkpoint import load_unsup3d

    unsup3d = load_unsup3d(sources.unsup3d, device=device)
    crop = config.canonical_crop
    if crop == "auto":  # as fusion-pairs: our networks learnt on whole aligned faces, the official on the demo crop
        crop = "aligned" if unsup3d.kind == "sdgan" else "demo"
    size = config.canonical_size or canonical_size(next(iter(networks.values())).arch)
    return PairMaker(editor=editor, unsup3d=unsup3d.eval(), finder=LandmarkFinder(config.detector, handle.size),
                     templates=_templates(config, sources.attributes), canonical_size=size, canonical_crop=crop)


# ---------------------------------------------------------------------------------------------- the stage
def run(config: SynthesizeConfig, workspace: Workspace, inputs: Sequence[Manifest] = (), *,
        progress: ProgressCallback | None = None) -> Manifest:
    with kept_torch_threads():
        return _run(config, workspace, inputs, progress)


def _run(config: SynthesizeConfig, workspace: Workspace, inputs: Sequence[Manifest],
         progress: ProgressCallback | None) -> Manifest:
    from training.common.distributed import setup_runtime
    from training.fusion.trainer import Editor
    from training.stylegan2.handle import GeneratorHandle

    device, _ = setup_runtime(config.runtime.device, config.runtime.threads)
    torch.manual_seed(config.runtime.seed)
    sources = resolve(config, workspace, inputs)
    handle = GeneratorHandle.load(sources.generator, device=device)
    networks = _load_networks(sources, handle, device)
    if sources.mean_w is not None:
        mean = torch.from_numpy(sources.mean_w).to(device)
    else:
        mean = handle.mean_w(config.mean_samples, config.mean_seed).float()
    editor = Editor(handle.generator, mean, sources.truncation, sources.noise_mode).to(device)
    maker = None
    if sources.source == "files":
        sources.test_w, sources.test_nb, sources.test_files = read_test_set(config, sources.attributes,
                                                                            handle.style_dim)
        maker = _maker(config, sources, editor, networks, handle, device)

    root = workspace.root / layout.SYNTHESES_DIR
    for stale in root.glob(PARTIAL_PREFIX + "*"):  # a killed run's staging folder
        shutil.rmtree(stale, ignore_errors=True)
    run_id = new_run_id(STAGE)
    staging = root / f"{PARTIAL_PREFIX}{run_id}"
    final = root / run_id
    with stage_run(workspace, STAGE, config, sources.used, run_id=run_id) as run_ctx:
        staging.mkdir(parents=True)
        try:
            started = time.perf_counter()
            made = _synthesize(config, sources, networks, editor, maker, staging, device, progress)
            _write_tables(config, sources, handle, staging, made, mean)
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        for name in (layout.INFO_FILE, layout.INDEX_FILE, layout.STRENGTH_FILE, layout.REPORT_FILE, CHECKSUMS_FILE,
                     "config.json"):
            if (final / name).is_file():
                run_ctx.add_file(name, final / name)
        for attribute in sources.attributes:
            run_ctx.add_file(f"grid_{attribute}", final / attribute / layout.GRID_FILE)
        run_ctx.manifest.counts.update({f"{a}_samples": n for a, n in made["counts"].items()})
        run_ctx.manifest.counts["images"] = len(made["writer"].digests)
        seconds = time.perf_counter() - started
        line = (f"synthesize: {sum(made['counts'].values())} samples ({', '.join(sources.attributes)}) in "
                f"{seconds:.1f} s -> {final}")
        logger.info(line)
        if progress is not None:
            progress(1.0, line)
    return run_ctx.manifest


def _synthesize(config: SynthesizeConfig, sources: Sources, networks: dict[str, Any], editor: Any,
                maker: PairMaker | None, folder: Path, device: torch.device,
                progress: ProgressCallback | None) -> dict[str, Any]:
    """Every attribute's images, index rows and sweep; returns what the tables need."""
    writer = ImageWriter(folder)
    counts = {a: sources.count(a, config.limit) for a in sources.attributes}
    total = sum(counts.values())
    if total == 0:
        raise SynthesisInputError("the test set is empty: nothing to synthesize")
    bar = Progress("synthesize", "sample", logger, total=total)
    rows: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    try:
        for attribute in sources.attributes:
            renderer = EditRenderer(networks[attribute], editor, device)
            if sources.source == "pairs":
                batches = pair_batches(sources.pairs.shards("test"), attribute, config.limit, config.batch_size)
            else:
                batches = file_batches(maker, attribute, sources.test_w, sources.test_nb[attribute], config.limit,
                                       config.batch_size)
            tiles: list[list[np.ndarray]] = []
            index = 0
            for batch in batches:
                rendered = renderer.render(batch)
                images = {"origin": as_uint8(rendered.origin, config.minmax),
                          "interfacegan": as_uint8(rendered.basis, config.minmax),
                          "sdgan": as_uint8(rendered.ours, config.minmax),
                          "template_paste": batch["gt"].permute(0, 2, 3, 1).numpy()}
                regions = batch["region"][:, 0].numpy()
                nb_norms = finite_norms(batch["nb"].numpy())
                no_norms = offset_norms(rendered.offset)
                for j in range(len(batch["key"])):
                    name = image_name(index + j)
                    paths = {method: writer.write(f"{attribute}/{layout.METHOD_FOLDERS[method]}/{name}",
                                                  pixels[j]) for method, pixels in images.items()}
                    paths["region"] = writer.write(f"{attribute}/{layout.REGIONS}/{name}", regions[j])
                    rows.append({"attribute": attribute, "index": index + j, "name": name, "key": batch["key"][j],
                                 "seed": batch["seed"][j], **paths, "nb_norm": nb_norms[j], "no_norm": no_norms[j],
                                 "region_area": round(float(regions[j].astype(np.float64).mean() / 255.0), 6),
                                 "landmark_source": batch["landmark_source"][j]})
                    if len(tiles) < config.grid_rows:
                        tiles.append([images[m][j] for m in ("origin", "interfacegan", "sdgan", "template_paste")])
                sweep_count = max(0, min(config.strength_samples - index, len(batch["key"])))
                if sweep_count and config.strengths:
                    for method, by_alpha in renderer.sweep(rendered, sweep_count, config.strengths).items():
                        for alpha, pixels in by_alpha.items():
                            pixels = as_uint8(pixels, config.minmax)
                            for j in range(sweep_count):
                                path = writer.write(f"{attribute}/{layout.STRENGTH}/{method}/{alpha_name(alpha)}/"
                                                    f"{image_name(index + j)}", pixels[j])
                                sweep_rows.append({"attribute": attribute, "index": index + j, "method": method,
                                                   "alpha": float(alpha), "path": path})
                index += len(batch["key"])
                bar.update(len(batch["key"]), attribute=attribute)
                if progress is not None:
                    progress(min(bar.done / total, 0.99), bar.line())
            if index != counts[attribute]:
                raise SynthesisInputError(f"{attribute}: the test set gave {index} samples, expected "
                                          f"{counts[attribute]} (a test shard is shorter than pairs.json says)")
            writer.write(f"{attribute}/{layout.GRID_FILE}", grid(tiles))
    finally:
        bar.close()
    return {"writer": writer, "rows": rows, "sweep": sweep_rows, "counts": counts}


def _write_tables(config: SynthesizeConfig, sources: Sources, handle: Any, folder: Path, made: dict[str, Any],
                  mean: torch.Tensor) -> None:
    index = pd.DataFrame(made["rows"], columns=list(layout.INDEX_COLUMNS))
    index["seed"] = index["seed"].astype("Int64")
    index.to_parquet(folder / layout.INDEX_FILE, index=False)
    sweep = pd.DataFrame(made["sweep"], columns=list(layout.STRENGTH_COLUMNS))
    sweep.to_parquet(folder / layout.STRENGTH_FILE, index=False)
    atomic_write_text(folder / CHECKSUMS_FILE, made["writer"].checksums())
    info = SynthesisInfo(
        source=sources.source, attributes=list(sources.attributes), counts=made["counts"], image_size=handle.size,
        generator=str(sources.generator), generator_sha256=sha256_file(sources.generator),
        truncation=sources.truncation, noise_mode=sources.noise_mode,
        fusion={a: str(p) for a, p in sources.fusion.items()},
        fusion_sha256={a: sha256_file(p) for a, p in sources.fusion.items()}, minmax=config.minmax,
        strengths=[float(a) for a in config.strengths], strength_samples=config.strength_samples,
        pairs_run=sources.pairs.run_id if sources.pairs is not None else None, test_files=sources.test_files,
        extra={"fusion_run": sources.fusion_run.run_id if sources.fusion_run is not None else None,
               "w_dim": handle.style_dim, "num_ws": handle.n_latent,
               "truncation_mean_sha256": _array_sha(mean),
               "demo_generator": handle.size <= 64})
    atomic_write_text(folder / layout.INFO_FILE, info.to_json())
    config.save(folder)
    atomic_write_text(folder / layout.REPORT_FILE, report_markdown(info, index))


def _array_sha(tensor: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(tensor.detach().cpu().float().numpy()).tobytes()).hexdigest()


def report_markdown(info: SynthesisInfo, index: pd.DataFrame) -> str:
    """What was made, per attribute, with its grid. No run id or timing: reruns keep the same bytes."""
    source = (f"the held-out test pairs of fusion-pairs run {info.pairs_run}" if info.source == "pairs"
              else f"the test files {', '.join(Path(p).name for p in info.test_files.values())}")
    lines = ["# synthesize", "",
             (f"{sum(info.counts.values())} test samples from {source}; generator `{info.generator}` "
             f"({info.image_size} px), truncation psi {info.truncation}, noise {info.noise_mode}."), ""]
    if info.extra.get("demo_generator"):
        lines += ["The demo generator is tiny: its faces are blobs. These images test the pipeline, not the method.",
                  ""]
    if info.minmax:
        lines += [("Saved with the official per-image min-max normalisation (`minmax`): each image is stretched to "
                  "its own extremes, which distorts any metric computed on it."), ""]
    lines += ["| attribute | samples | mean ‖n_b‖ | mean ‖n_o‖ (per W+ row) | mean region area | fusion checkpoint |",
              "|---|---|---|---|---|---|"]
    for attribute in info.attributes:
        part = index[index["attribute"] == attribute]
        lines.append(f"| {attribute} | {len(part)} | {part['nb_norm'].mean():.4f} | {part['no_norm'].mean():.4f} | "
                     f"{part['region_area'].mean():.4f} | `{Path(info.fusion[attribute]).name}` |")
    lines.append("")
    for attribute in info.attributes:
        lines += [f"## {attribute}", "", (f"![origin | basis G(w + n_b) | ours G(w + n_b + n_o) | GT]"
                  f"({attribute}/{layout.GRID_FILE})"), ""]
    return "\n".join(lines)

