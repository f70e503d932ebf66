"""The `sdgan` command line. Prefect is imported only by the commands that run flows."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from data_catalog.atomic import TEMP_PREFIX
from data_catalog.config import ConfigError, load_config
from data_catalog.tables import TABLE_SCHEMAS
from data_catalog.workspace import Workspace, WorkspaceError

console = Console()
DEFAULT_DEMO_WORKSPACE = "workspace/demo"


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, help="workspace folder (created on first use)")
    parser.add_argument("--profile", default="demo", help="config profile: configs/<profile>/<stage>.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
                        help="override one config value (repeatable); the stage prefix may be omitted for one-stage flows")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="rerun STAGE even if its cache is valid (repeatable; 'all' for every stage)")
    parser.add_argument("--task-runner", default="thread", choices=["thread", "process", "dask", "ray"],
                        help="where stages that fan out (crawl: one task per query) run their tasks")
    parser.add_argument("--workers", type=int, default=4, help="parallel tasks for --task-runner")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdgan", description="SD-GAN reproduction pipeline (MEGN build and training).")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole DAG on the embedded demo defaults (offline, CPU)")
    demo.add_argument("--workspace", default=DEFAULT_DEMO_WORKSPACE)
    demo.add_argument("--force", action="append", default=[], metavar="STAGE")

    run = sub.add_parser("run", help="run a flow in this process (Prefect's embedded server unless PREFECT_API_URL is set)")
    run.add_argument("flow", help="flow name, e.g. reproduce or catalog-verify")
    _add_run_options(run)

    serve = sub.add_parser("serve", help="serve every deployment of prefect.yaml from this process")
    serve.add_argument("--file", default=None, help="deployments file (default: the project's prefect.yaml)")
    serve.add_argument("--only", action="append", default=[], metavar="FLOW[/DEPLOYMENT]")
    serve.add_argument("--limit", type=int, default=None, help="maximum concurrent flow runs")

    crawl = sub.add_parser("crawl", help="run the crawl stage (search engines or a URL list -> blobs + catalog)")
    _add_run_options(crawl)
    crawl.add_argument("--source", dest="sources", action="append", default=[],
                       choices=["google", "naver", "google-api", "naver-api", "urls"], help="repeatable; default: the profile's")
    crawl.add_argument("--plan", help="query plan YAML (default: the profile's)")
    crawl.add_argument("--urls", help="URL list (txt, csv or parquet with a url column) for --source urls")
    crawl.add_argument("--endpoint", help="base URL of the (single) search --source, e.g. a loopback emulator")
    crawl.add_argument("--max-per-query", type=int)
    crawl.add_argument("--retry-failed", action="store_true", help="fetch again only the URLs whose last attempt failed")

    align = sub.add_parser("align", help="run the align stage (detect, FFHQ-align, filter, deduplicate faces)")
    _add_run_options(align)
    align.add_argument("--detector", choices=["retinaface", "dlib-hog", "dlib-cnn", "scrfd"])
    align.add_argument("--output-size", type=int)

    emulator = sub.add_parser("emulator", help="serve a folder of images as Google/Naver search results on 127.0.0.1")
    emulator.add_argument("--corpus", help="image folder (default: build the demo corpus into workspace/corpus/demo)")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--faults", default="", help="comma-separated fault modes, or 'all'")

    export = sub.add_parser("export", help="export a dataset version for other tools (stylegan2-ada zip, image folder)")
    export.add_argument("--workspace", required=True)
    export.add_argument("--version", help="dataset version id (default: the only one)")
    export.add_argument("--format", choices=["stylegan-zip", "folder"], default="stylegan-zip")
    export.add_argument("--split", action="append", default=None, choices=["train", "val"],
                        help="splits to export (repeatable; default: train)")
    export.add_argument("--out", required=True, help="zip file (stylegan-zip) or folder")

    train = sub.add_parser("train-stylegan2",
                           help="train (or resume) StyleGAN2 on a dataset version in this process (no Prefect; "
                                "torchrun-ready)",
                           description="Runs the train-stylegan2 stage directly. For several GPUs: torchrun "
                                       "--nproc_per_node N -m flows.cli train-stylegan2 ... (rank 0 writes the "
                                       "run folder and the catalog). For a cached, orchestrated run use "
                                       "`sdgan run train-stylegan2`.")
    train.add_argument("--workspace", required=True, help="workspace holding the dataset version")
    train.add_argument("--dataset", help="dataset version id (default: the version of the current shard run)")
    train.add_argument("--profile", default="demo", help="config profile: configs/<profile>/train-stylegan2.yaml")
    train.add_argument("--resume", metavar="RUN",
                       help="continue a run: run id, run folder or checkpoint (.pt); a .pt outside a run folder "
                            "starts a new run folder from its weights")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config value (repeatable), e.g. schedule.total_kimg=100 or "
                            "runtime.device=cpu")

    generate = sub.add_parser("generate",
                              help="images from a StyleGAN2 checkpoint by seed: a grid and/or one PNG per seed")
    generate.add_argument("--checkpoint", required=True, metavar="PATH",
                          help="a .pt checkpoint (ours or any rosinality-layout file) or a run folder (its newest)")
    generate.add_argument("--seeds", default="0-15", help="seeds, e.g. 0-15 or 1,5,9 (default: 0-15)")
    generate.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                          help="truncation psi in (0, 1]; 1 = none, 0.5-0.7 gives typical faces (default: 1)")
    generate.add_argument("--out", help="grid PNG, one tile per seed in seed order (default: grid.png, "
                                        "or none when only --outdir is given)")
    generate.add_argument("--outdir", help="write one PNG per seed here (seed0000.png, ...)")
    generate.add_argument("--noise-mode", choices=["const", "random"], default="const",
                          help="const: the generator's stored noise maps; random: fresh noise drawn from each seed")
    generate.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    generate.add_argument("--columns", type=int, help="grid width in tiles (default: about square)")
    generate.add_argument("--network", dest="key", choices=["g_ema", "g"], default="g_ema",
                          help="which generator of the checkpoint (default: g_ema)")

    sub.add_parser("stages", help="list the stages of the DAG and whether each is built")

    config = sub.add_parser("config", help="show the resolved config of a stage")
    config.add_argument("stage")
    config.add_argument("--profile", default="demo")
    config.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    catalog = sub.add_parser("catalog", help="inspect and check a workspace's catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    ls = catalog_sub.add_parser("ls", help="tables with row counts, dataset versions, recent runs")
    show = catalog_sub.add_parser("show", help="show one run's manifest")
    show.add_argument("run_id")
    verify = catalog_sub.add_parser("verify", help="re-hash blobs, check references and orphans; non-zero exit on problems")
    verify.add_argument("--no-rehash", action="store_true", help="check existence only")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    gc = catalog_sub.add_parser("gc", help="delete temporary files left by interrupted writes")
    gc.add_argument("--dry-run", action="store_true")
    for p in (ls, show, verify, gc):
        p.add_argument("--workspace", required=True)
    return parser


# catalog ------------------------------------------------------------------------------------------
def _open(path: str) -> Workspace:
    return Workspace(path, create=False)


def cmd_catalog_ls(args: argparse.Namespace) -> int:
    ws = _open(args.workspace)
    table = Table(title=f"catalog of {ws.root}")
    for column in ("table", "rows", "batches", "runs"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name in TABLE_SCHEMAS:
        files = ws.tables.files(name)
        table.add_row(name, str(ws.tables.count(name)), str(len(files)), str(len(ws.tables.run_ids(name))))
    console.print(table)
    versions = ws.dataset_versions()
    console.print(f"dataset versions: {', '.join(versions) if versions else '(none)'}")
    runs = ws.table("runs", columns=["run_id", "stage", "status", "finished_at", "duration_s"])
    if not runs.empty:
        recent = Table(title="recent runs")
        for column in ("run_id", "stage", "status", "finished", "seconds"):
            recent.add_column(column)
        for row in runs.sort_values("finished_at").tail(10).to_dict("records"):
            recent.add_row(row["run_id"], row["stage"], row["status"], f"{row['finished_at']:%Y-%m-%d %H:%M:%S}", f"{row['duration_s']:.1f}")
        console.print(recent)
    return 0


def cmd_catalog_show(args: argparse.Namespace) -> int:
    ws = _open(args.workspace)
    manifest = ws.manifest(args.run_id)
    print(manifest.to_json())
    return 0


def cmd_catalog_verify(args: argparse.Namespace) -> int:
    from data_catalog.verify import verify_workspace

    report = verify_workspace(_open(args.workspace), rehash=not args.no_rehash)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        for problem in report.problems:
            console.print(f"[red]{problem.kind}[/red] {problem.subject}: {problem.detail}", highlight=False)
        for warning in report.warnings:
            console.print(f"[yellow]warning {warning.kind}[/yellow] {warning.subject}: {warning.detail}", highlight=False)
        checked = ", ".join(f"{k}={v}" for k, v in report.checked.items())
        verdict = "[green]OK[/green]" if report.ok else f"[red]{len(report.problems)} problem(s)[/red]"
        console.print(f"{verdict} ({checked})", highlight=False)
    return 0 if report.ok else 1


def cmd_catalog_gc(args: argparse.Namespace) -> int:
    ws = _open(args.workspace)
    stale = [p for p in ws.root.rglob(f"{TEMP_PREFIX}*") if p.is_file()]
    for path in stale:
        print(("would delete " if args.dry_run else "deleting ") + str(path))
        if not args.dry_run:
            path.unlink(missing_ok=True)
    print(f"{len(stale)} temporary file(s)")
    return 0


# flows ---------------------------------------------------------------------------------------------
def _print_outcomes(outcomes: list[dict]) -> None:
    table = Table(title="stages")
    for column in ("stage", "status", "run", "detail"):
        table.add_column(column, overflow="fold")
    colours = {"ran": "green", "cached": "cyan", "failed": "red", "blocked": "yellow", "not built yet": "dim"}
    for o in outcomes:
        colour = colours.get(o["status"], "white")
        table.add_row(o["stage"], f"[{colour}]{o['status']}[/{colour}]", o["run_id"] or "", o["detail"])
    console.print(table)


def _flow_options(args: argparse.Namespace) -> dict:
    """The options every flow takes, from the CLI's common run options."""
    return {"workspace": str(Path(args.workspace).resolve()), "profile": args.profile, "overrides": args.overrides,
            "force": args.force, "task_runner": args.task_runner, "workers": args.workers}


def _print_result(result: list[dict] | dict) -> None:
    """Flows return their stage outcomes, and dataset flows also where the dataset version is."""
    _print_outcomes(result["stages"] if isinstance(result, dict) else result)
    if isinstance(result, dict) and result.get("dataset"):
        _print_dataset(result["dataset"])
    if isinstance(result, dict) and result.get("model"):
        _print_model(result["model"])


def _print_dataset(dataset: dict[str, str]) -> None:
    console.print(f"dataset version {dataset['version']}")
    console.print(f"  card:   {dataset['card']}")
    console.print(f"  shards: {dataset['shards']}")


def cmd_run(args: argparse.Namespace) -> int:
    from flows.registry import load_flow

    _print_result(load_flow(args.flow)(**_flow_options(args)))
    return 0


def cmd_crawl(args: argparse.Namespace) -> int:
    from flows.crawl import crawl_flow

    _print_outcomes(crawl_flow(**_flow_options(args), sources=args.sources or None, plan=args.plan, urls=args.urls,
                               endpoint=args.endpoint, max_per_query=args.max_per_query,
                               retry_failed=args.retry_failed))
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from flows.align import align_flow

    _print_outcomes(align_flow(**_flow_options(args), detector=args.detector, output_size=args.output_size))
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    from alignment.demo_corpus import build_demo_corpus
    from crawling.emulator import main as emulator_main

    corpus = args.corpus or str(build_demo_corpus(Path("workspace") / "corpus" / "demo"))
    argv = ["--corpus", corpus, "--port", str(args.port)] + (["--faults", args.faults] if args.faults else [])
    return emulator_main(argv)


def cmd_demo(args: argparse.Namespace) -> int:
    args.flow, args.profile, args.overrides, args.task_runner, args.workers = "reproduce", "demo", [], "thread", 4
    code = cmd_run(args)
    workspace = Path(args.workspace).resolve()
    from flows.build_megn import dataset_location

    if (dataset := dataset_location(workspace)) is not None:
        _print_dataset(dataset)
    from flows.train_stylegan2 import model_location

    if (model := model_location(workspace)) is not None:
        _print_model(model)
    console.print(f"workspace: {workspace}")
    console.print(f"inspect it with: sdgan catalog ls --workspace {args.workspace}")
    return code


def cmd_export(args: argparse.Namespace) -> int:
    from data_catalog.export import export_folder, export_stylegan_zip
    from data_catalog.loader import list_shards

    ws = _open(args.workspace)
    versions = ws.dataset_versions()
    version = args.version or (versions[-1] if len(versions) == 1 else None)
    if version is None or version not in versions:
        raise ValueError(f"choose a dataset version with --version; this workspace has: {', '.join(versions) or 'none'}")
    folder = ws.dataset_dir(version)
    shards = [p for split in (args.split or ["train"]) for p in list_shards(folder, split)]
    out = (export_stylegan_zip if args.format == "stylegan-zip" else export_folder)(shards, args.out)
    console.print(f"exported {len(shards)} shard(s) of {version} to {out}")
    return 0


def _leave_process_group() -> None:
    """Under torchrun the stage joined a process group; leave it cleanly before the process exits."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cmd_train_stylegan2(args: argparse.Namespace) -> int:
    from flows.pipeline import split_overrides
    from flows.train_stylegan2 import STAGE, model_location, train_overrides
    from training.stylegan2.config import TrainStyleGAN2Config
    from training.stylegan2.stage import run

    # `--set train-stylegan2.key=value` works too, as with `sdgan run train-stylegan2`
    overrides = split_overrides([STAGE], args.overrides)[STAGE] + train_overrides(args.dataset, args.resume)
    config = load_config(TrainStyleGAN2Config, args.profile, overrides)
    ws = _open(args.workspace)
    try:
        manifest = run(config, ws)
    finally:
        _leave_process_group()
    if manifest is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    model = model_location(ws.root, manifest)
    if model is None:
        raise ValueError(f"run {manifest.run_id} finished without a checkpoint")
    _print_model(model)
    return 0


def _print_model(model: dict) -> None:
    """Where a train-stylegan2 run left its model (`flows.train_stylegan2.model_location`)."""
    console.print(f"[green]StyleGAN2 model[/green] of run {model['run_id']}: {model['kimg']:.3f} kimg",
                  highlight=False)
    console.print(f"  run folder: {model['folder']}", soft_wrap=True, highlight=False)
    console.print(f"  checkpoint: {model['checkpoint']}", soft_wrap=True, highlight=False)
    if model["grid"]:
        console.print(f"  grid:       {model['grid']}", soft_wrap=True, highlight=False)
    console.print(f"samples: sdgan generate --checkpoint {model['checkpoint']} --seeds 0-15 --truncation 0.7 "
                  f"--out grid.png", soft_wrap=True, highlight=False)


def cmd_generate(args: argparse.Namespace) -> int:
    from inference.generate import generate_grid

    out = args.out if args.out or args.outdir else "grid.png"
    path = generate_grid(args.checkpoint, args.seeds, args.truncation, out=out, noise_mode=args.noise_mode,
                         key=args.key, device=args.device, columns=args.columns, outdir=args.outdir)
    if out is not None:
        console.print(f"wrote grid {path}", soft_wrap=True, highlight=False)
    if args.outdir:
        console.print(f"wrote one PNG per seed to {args.outdir}", soft_wrap=True, highlight=False)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import DEFAULT_FILE, serve

    serve(args.file or DEFAULT_FILE, only=args.only or None, limit=args.limit)
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from flows.stages import STAGES

    table = Table(title="stages")
    for column in ("stage", "built", "upstream", "summary"):
        table.add_column(column)
    for spec in STAGES.values():
        table.add_row(spec.name, "yes" if spec.built else "not yet", ", ".join(spec.upstream), spec.summary)
    console.print(table)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from flows.stages import get

    config_cls, _ = get(args.stage).load()
    config = load_config(config_cls, args.profile, args.overrides)
    print(json.dumps({"stage": args.stage, "config_hash": config.hash, "config": config.to_dict()}, indent=2))
    return 0


COMMANDS = {
    "demo": cmd_demo,
    "run": cmd_run,
    "serve": cmd_serve,
    "crawl": cmd_crawl,
    "align": cmd_align,
    "emulator": cmd_emulator,
    "export": cmd_export,
    "train-stylegan2": cmd_train_stylegan2,
    "generate": cmd_generate,
    "stages": cmd_stages,
    "config": cmd_config,
}
CATALOG_COMMANDS = {"ls": cmd_catalog_ls, "show": cmd_catalog_show, "verify": cmd_catalog_verify, "gc": cmd_catalog_gc}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = CATALOG_COMMANDS[args.catalog_command] if args.command == "catalog" else COMMANDS[args.command]
    try:
        return handler(args)
    except (ConfigError, WorkspaceError, KeyError, NotImplementedError, ValueError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"sdgan: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
