"""The `sdgan` command line. Prefect is imported only by the commands that run flows."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from data_catalog.atomic import TEMP_PREFIX
from data_catalog.config import ConfigError, load_config
from data_catalog.lock import WorkspaceBusy
from data_catalog.stages import STAGES, StageSpec
from data_catalog.stages import get as get_stage
from data_catalog.tables import TABLE_SCHEMAS
from data_catalog.workspace import Workspace, WorkspaceError
from flows.preflight import PipelineError, check_flow, check_prefect_api

console = Console()
DEFAULT_DEMO_WORKSPACE = "workspace/demo"
DEBUG_ENV = "SDGAN_DEBUG"
RECENT_RUNS = 10
# Errors whose message is meant for the user; anything else is reported with its type (a bug, or the system's).
USER_ERRORS = (ConfigError, WorkspaceError, WorkspaceBusy, KeyError, NotImplementedError, ValueError, OSError,
               PipelineError)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


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
    _add_wait_option(parser)


def _add_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", dest="lock_wait", default=None, metavar="SECONDS",
                        help="when another run is using the workspace, queue behind it for up to SECONDS "
                             "('forever' to wait without limit; default: $SDGAN_LOCK_WAIT, else stop at once)")


def _add_stage_options(parser: argparse.ArgumentParser, spec: StageSpec) -> None:
    """The shortcuts a stage declares (data_catalog.stages) as flags of `sdgan <stage>`."""
    for option in spec.options:
        kwargs: dict = {"dest": option.name, "help": option.help}
        if option.type is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["default"] = [] if option.repeatable else None
            kwargs["action"] = "append" if option.repeatable else "store"
            kwargs["type"] = int if "int" in str(option.type) else str
            kwargs["choices"] = list(option.choices) if option.choices else None
        parser.add_argument(option.cli_flag, **kwargs)


def _add_stage_commands(sub: argparse._SubParsersAction) -> None:
    """`sdgan crawl`, `sdgan align`, `sdgan train-stylegan2`, ...: one per stage that declares a CLI."""
    for spec in STAGES.values():
        if spec.cli == "flow":
            parser = sub.add_parser(spec.name, help=spec.cli_help or spec.summary)
            _add_run_options(parser)
        elif spec.cli == "direct":
            parser = sub.add_parser(
                spec.name, help=spec.cli_help or spec.summary,
                description=f"Runs the {spec.name} stage in this process, without Prefect. For several GPUs: "
                            f"torchrun --nproc_per_node N -m flows.cli {spec.name} ... (rank 0 writes the run "
                            f"folder and the catalog). For a cached, orchestrated run use `sdgan run {spec.name}`.")
            parser.add_argument("--workspace", required=True, help="workspace holding the dataset version")
            parser.add_argument("--profile", default="demo", help=f"config profile: configs/<profile>/{spec.name}.yaml")
            parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                                help="override one config value (repeatable), e.g. schedule.total_kimg=100")
            _add_wait_option(parser)
        else:
            continue
        _add_stage_options(parser, spec)
        parser.set_defaults(stage=spec.name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdgan", description="SD-GAN reproduction pipeline (MEGN build and training).")
    parser.add_argument("--debug", action="store_true", default=_env_flag(DEBUG_ENV),
                        help=f"print the traceback of an error (also: {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole DAG on the embedded demo defaults (offline, CPU)")
    demo.add_argument("--workspace", default=DEFAULT_DEMO_WORKSPACE)
    demo.add_argument("--force", action="append", default=[], metavar="STAGE")
    _add_wait_option(demo)

    run = sub.add_parser("run", help="run a flow in this process (Prefect's embedded server unless PREFECT_API_URL is set)")
    run.add_argument("flow", help="flow name, e.g. reproduce or catalog-verify")
    _add_run_options(run)

    serve = sub.add_parser("serve", help="serve every deployment of prefect.yaml from this process")
    serve.add_argument("--file", default=None, help="deployments file (default: the project's prefect.yaml)")
    serve.add_argument("--only", action="append", default=[], metavar="FLOW[/DEPLOYMENT]")
    serve.add_argument("--limit", type=int, default=None, help="maximum concurrent flow runs")

    _add_stage_commands(sub)

    emulator = sub.add_parser("emulator", help="serve a folder of images as Google/Naver search results on 127.0.0.1")
    emulator.add_argument("--corpus", help="image folder (default: build the demo corpus into workspace/corpus/demo)")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--faults", default="", help="comma-separated fault modes, or 'all'")

    export = sub.add_parser("export", help="export a dataset version for other tools (stylegan2-ada zip, image folder)")
    export.add_argument("--workspace", required=True)
    export.add_argument("--version", help="dataset version id (default: the only one)")
    export.add_argument("--format", choices=["stylegan-zip", "folder"], default="stylegan-zip")
    export.add_argument("--split", action="append", default=None, choices=["train", "val"],
                        help="splits to export (repeatable; default: train for stylegan-zip, every split for folder, "
                             "which writes one folder per split)")
    export.add_argument("--out", required=True, help="zip file (stylegan-zip) or folder")

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

    deployments = sub.add_parser("deployments", help="print prefect.yaml as the stage declarations define it")
    deployments.add_argument("--write", action="store_true", help="rewrite the project's prefect.yaml")
    deployments.add_argument("--check", action="store_true", help="exit 1 when prefect.yaml is out of date")

    config = sub.add_parser("config", help="show the resolved config of a stage")
    config.add_argument("stage")
    config.add_argument("--profile", default="demo")
    config.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    catalog = sub.add_parser("catalog", help="inspect and check a workspace's catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    ls = catalog_sub.add_parser("ls", help="tables with row counts, dataset versions, recent runs")
    show = catalog_sub.add_parser("show", help="show one run's manifest")
    show.add_argument("run_id", help="a run id, or any prefix that only one run id starts with")
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
    unreadable: dict[Path, str] = {}  # truncated or corrupt part files: named after the listing, which goes on
    for name in TABLE_SCHEMAS:
        files = ws.tables.files(name)
        rows = ws.tables.count(name, on_unreadable=unreadable.__setitem__)
        table.add_row(name, str(rows), str(len(files)), str(len(ws.tables.run_ids(name))))
    console.print(table)
    versions = ws.dataset_versions()
    console.print(f"dataset versions: {', '.join(versions) if versions else '(none)'}")
    runs = ws.tables.read("runs", columns=["run_id", "status", "finished_at", "duration_s"],
                          on_unreadable=unreadable.__setitem__)
    if not runs.empty:
        # Plain lines, not a table: a run id is what a user copies, so it is never cut or folded to fit.
        recent = runs.sort_values("finished_at", kind="stable").tail(RECENT_RUNS).to_dict("records")
        width = max(len(row["run_id"]) for row in recent)
        console.print("recent runs (newest last; `sdgan catalog show` takes a run id or a unique prefix):",
                      highlight=False, soft_wrap=True)
        for row in recent:
            console.print(f"  {row['run_id']:<{width}}  {row['status']:<9}  {row['finished_at']:%Y-%m-%d %H:%M:%S}"
                          f"  {row['duration_s']:8.1f} s", highlight=False, soft_wrap=True)
    for path, reason in unreadable.items():
        console.print(f"[red]unreadable part[/red] {path}: {reason} (its rows are not counted above)",
                      highlight=False, soft_wrap=True)
    return 1 if unreadable else 0


def resolve_run_id(ws: Workspace, text: str) -> str:
    """A run id from itself or a unique prefix of it (runs of the `runs` table, completed or failed)."""
    run_ids = sorted(set(ws.table("runs", columns=["run_id"])["run_id"]))
    if text in run_ids:
        return text
    matches = [r for r in run_ids if r.startswith(text)] if text else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise KeyError(f"no run {text!r} in {ws.root} (`sdgan catalog ls` lists the recent ones)")
    shown = ", ".join(matches[:RECENT_RUNS]) + (f", ... ({len(matches)} in all)" if len(matches) > RECENT_RUNS else "")
    raise KeyError(f"{text!r} is ambiguous: {len(matches)} runs start with it: {shown}")


def cmd_catalog_show(args: argparse.Namespace) -> int:
    ws = _open(args.workspace)
    manifest = ws.manifest(resolve_run_id(ws, args.run_id))
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
    from data_catalog.lock import workspace_lock

    ws = _open(args.workspace)
    # a running stage's temporary files are not stale: only collect while no run holds the workspace
    with workspace_lock(ws.root):
        stale = [p for p in ws.root.rglob(f"{TEMP_PREFIX}*") if p.is_file()]
        for path in stale:
            print(("would delete " if args.dry_run else "deleting ") + str(path))
            if not args.dry_run:
                path.unlink(missing_ok=True)
    print(f"{len(stale)} temporary file(s)")
    return 0


# flows ---------------------------------------------------------------------------------------------
def _print_outcomes(outcomes: list[dict]) -> None:
    """One line per stage: name, status, run id (whole, never cut: it is what `catalog show` takes), counts."""
    colours = {"ran": "green", "cached": "cyan", "failed": "red", "blocked": "yellow", "not built yet": "dim"}
    widths = [max((len(o[key] or "") for o in outcomes), default=0) for key in ("stage", "status", "run_id")]
    console.print("[bold]stages[/bold]")
    for o in outcomes:
        colour = colours.get(o["status"], "white")
        status = f"[{colour}]{o['status']}[/{colour}]" + " " * (widths[1] - len(o["status"]))
        run_id = (o["run_id"] or "").ljust(widths[2])
        console.print(f"  {o['stage']:<{widths[0]}}  {status}  {run_id}  {escape(o['detail'])}".rstrip(),
                      highlight=False, soft_wrap=True)


def _print_outputs(outputs: dict[str, dict]) -> None:
    """What each stage's current run left (declared by the stage's `describe`), in DAG order."""
    for described in outputs.values():
        console.print(f"[green]{described['title']}[/green]", highlight=False, soft_wrap=True)
        width = max((len(label) for label in described["items"]), default=0) + 1
        for label, value in described["items"].items():
            console.print(f"  {label + ':':<{width}} {value}", soft_wrap=True, highlight=False)


def _flow_options(args: argparse.Namespace) -> dict:
    """The options every flow takes, from the CLI's common run options."""
    return {"workspace": str(Path(args.workspace).resolve()), "profile": args.profile, "overrides": args.overrides,
            "force": args.force, "task_runner": args.task_runner, "workers": args.workers,
            "lock_wait": args.lock_wait}


def _run_flow(name: str, **options: object) -> dict:
    from flows import embedded_server
    from flows.registry import load_flow

    check_flow(name, **options)  # configs, credentials, workspace, server: before Prefect starts a server
    embedded_server.install()  # the embedded Prefect server dies with this process, even under kill -9
    result = load_flow(name)(**options)
    _print_outcomes(result["stages"])
    _print_outputs(result.get("outputs") or {})
    return result


def cmd_run(args: argparse.Namespace) -> int:
    _run_flow(args.flow, **_flow_options(args))
    return 0


def cmd_stage_flow(args: argparse.Namespace) -> int:
    """`sdgan crawl|align ...`: the stage's flow with its declared shortcuts."""
    spec = get_stage(args.stage)
    _run_flow(spec.name, **_flow_options(args), **{o.name: getattr(args, o.name) for o in spec.options})
    return 0


def _log_to_terminal() -> None:
    """Tick lines of stages run without Prefect (`sdgan.*` loggers) go to stderr."""
    import logging

    logger = logging.getLogger("sdgan")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _leave_process_group() -> None:
    """Under torchrun the stage joined a process group; leave it cleanly before the process exits."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cmd_stage_direct(args: argparse.Namespace) -> int:
    """`sdgan train-stylegan2 ...`: the stage function in this process (what torchrun runs on every rank)."""
    import contextlib
    import os

    from data_catalog.lock import FROM_ENV, parse_wait, workspace_lock
    from flows.pipeline import split_overrides

    spec = get_stage(args.stage)
    config_cls, run = spec.load()
    shortcuts, _ = spec.shortcut_overrides({o.name: getattr(args, o.name) for o in spec.options})
    # `--set <stage>.key=value` works too, as with `sdgan run <stage>`
    config = load_config(config_cls, args.profile, split_overrides([spec.name], args.overrides)[spec.name] + shortcuts)
    # a stage that needs no upstream run here (all given as paths) may start a workspace; others need theirs
    ws = Workspace(args.workspace, create=not spec.required_upstream(config.to_dict()))
    _log_to_terminal()
    # Under torchrun only rank 0 writes the catalog: it alone holds the workspace.
    wait = FROM_ENV if args.lock_wait is None else parse_wait(args.lock_wait)
    lock = workspace_lock(ws.root, wait=wait) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    try:
        with lock:
            inputs = [m for u in spec.required_upstream(config.to_dict()) if (m := ws.current(u)) is not None]
            manifest = run(config, ws, inputs)
    finally:
        _leave_process_group()
    if manifest is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    outputs = spec.outputs(ws, manifest)
    if spec.describe and outputs is None:
        raise ValueError(f"run {manifest.run_id} finished without its outputs")
    _print_outputs({spec.name: outputs.to_json()} if outputs else {})
    return 0


def _check_port_free(port: int) -> None:
    import socket

    if port == 0:
        return
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise OSError(f"port {port} on 127.0.0.1 is not free ({exc.strerror}); choose another with --port "
                          "(0: any free port)") from None


def cmd_emulator(args: argparse.Namespace) -> int:
    from crawling.emulator import main as emulator_main
    from crawling.emulator import parse_faults

    parse_faults(args.faults)  # a wrong mode or a taken port fails before the demo corpus is built (~10 s)
    _check_port_free(args.port)
    if args.corpus is None:
        from alignment.demo_corpus import build_demo_corpus

        corpus = str(build_demo_corpus(Path("workspace") / "corpus" / "demo"))
    elif Path(args.corpus).is_dir():
        corpus = args.corpus
    else:
        raise FileNotFoundError(f"--corpus {args.corpus}: not a folder")
    argv = ["--corpus", corpus, "--port", str(args.port)] + (["--faults", args.faults] if args.faults else [])
    return emulator_main(argv)


def cmd_demo(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace).resolve()
    _run_flow("reproduce", workspace=str(workspace), profile="demo", overrides=[], force=args.force,
              task_runner="thread", workers=4, lock_wait=args.lock_wait)
    console.print(f"workspace: {workspace}")
    ws = Workspace(workspace, create=False)
    evaluated = ws.current("evaluate")
    report = next((evaluated.files[name] for name in ("report.html", "report.md")
                   if evaluated is not None and name in evaluated.files), None)
    if report is not None:
        console.print(f"report: {ws.resolve(report.path)}", soft_wrap=True)
    console.print(f"inspect it with: sdgan catalog ls --workspace {args.workspace}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from data_catalog.export import export_folder, export_stylegan_zip
    from data_catalog.loader import list_shards

    ws = _open(args.workspace)
    versions = ws.dataset_versions()
    version = args.version or (versions[-1] if len(versions) == 1 else None)
    if version is None or version not in versions:
        raise ValueError(f"choose a dataset version with --version; this workspace has: {', '.join(versions) or 'none'}")
    folder = ws.dataset_dir(version)
    if args.format == "stylegan-zip":  # one unsplit training set, as dataset_tool.py makes
        shards = [p for split in (args.split or ["train"]) for p in list_shards(folder, split)]
        out = export_stylegan_zip(shards, args.out)
    else:  # <out>/<split>/<attribute>/<key>.<ext>: every split of the version unless --split narrows it
        splits = args.split or [s for s in ("train", "val") if any(folder.glob(f"megn-{s}-*.tar"))]
        by_split = {split: list_shards(folder, split) for split in splits}
        shards = [p for paths in by_split.values() for p in paths]
        out = export_folder(by_split, args.out)
    console.print(f"exported {len(shards)} shard(s) of {version} to {out}", soft_wrap=True, highlight=False)
    return 0


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

    # Deployments served on a temporary server could be run by nobody: serving needs a real one.
    if check_prefect_api() is None:
        raise ValueError("sdgan serve needs a running Prefect server: `prefect server start`, then "
                         "export PREFECT_API_URL=http://127.0.0.1:4200/api in this shell and in the one that runs "
                         "`prefect deployment run`")

    serve(args.file or DEFAULT_FILE, only=args.only or None, limit=args.limit)
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    table = Table(title="stages")
    for column in ("stage", "built", "upstream", "command", "summary"):
        table.add_column(column)
    for spec in STAGES.values():
        command = f"sdgan {spec.name}" if spec.cli else (f"sdgan run {spec.name}" if spec.built else "")
        table.add_row(spec.name, "yes" if spec.built else "not yet", ", ".join(spec.upstream), command, spec.summary)
    console.print(table)
    return 0


def cmd_deployments(args: argparse.Namespace) -> int:
    from flows.deployments import DEFAULT_FILE, render_prefect_yaml

    text = render_prefect_yaml()
    if args.check:
        current = DEFAULT_FILE.read_text(encoding="utf-8") if DEFAULT_FILE.is_file() else ""
        if current != text:
            print(f"{DEFAULT_FILE} is out of date with the stage declarations; run: sdgan deployments --write",
                  file=sys.stderr)
            return 1
        print(f"{DEFAULT_FILE} is up to date")
    elif args.write:
        DEFAULT_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {DEFAULT_FILE}")
    else:
        print(text, end="")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config_cls, _ = get_stage(args.stage).load()
    config = load_config(config_cls, args.profile, args.overrides)
    print(json.dumps({"stage": args.stage, "config_hash": config.hash, "config": config.to_dict()}, indent=2))
    return 0


COMMANDS = {
    "demo": cmd_demo,
    "run": cmd_run,
    "serve": cmd_serve,
    "emulator": cmd_emulator,
    "export": cmd_export,
    "generate": cmd_generate,
    "stages": cmd_stages,
    "deployments": cmd_deployments,
    "config": cmd_config,
}
CATALOG_COMMANDS = {"ls": cmd_catalog_ls, "show": cmd_catalog_show, "verify": cmd_catalog_verify, "gc": cmd_catalog_gc}


def _handler(args: argparse.Namespace):
    if args.command == "catalog":
        return CATALOG_COMMANDS[args.catalog_command]
    if args.command in COMMANDS:
        return COMMANDS[args.command]
    return cmd_stage_direct if get_stage(args.command).cli == "direct" else cmd_stage_flow


def one_line(message: object) -> str:
    """A multi-line message (a config error lists each problem on its own line) as one line."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {'; '.join(lines[1:])}"
    return "; ".join(lines)


def error_line(exc: BaseException) -> str:
    """`sdgan: error: ...` for any exception: the message alone for user errors, with its type otherwise."""
    if isinstance(exc, KeyboardInterrupt):
        return "sdgan: error: interrupted"
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        message = f"{exc.strerror}: {exc.filename}"  # not "[Errno 2] No such file or directory: 'x'"
    text = one_line(message) or type(exc).__name__
    if not isinstance(exc, USER_ERRORS):
        text = f"{type(exc).__name__}: {text} (--debug or {DEBUG_ENV}=1 shows the traceback)"
    return f"sdgan: error: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Every failure ends in one `sdgan: error: ...` line on stderr (2 for usage and user errors, else 1)."""
    args = build_parser().parse_args(argv)
    try:
        return _handler(args)(args)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 (the CLI's one place that reports errors)
        if args.debug:
            traceback.print_exc()
        print(error_line(exc), file=sys.stderr, flush=True)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        return 2 if isinstance(exc, USER_ERRORS) else 1


if __name__ == "__main__":
    sys.exit(main())
