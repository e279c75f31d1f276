"""The ``bench`` command line. Thin: each command calls one library function."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from tabulate import tabulate

from bench.cli_options import explicit_options, suite_flags, typer_parameters, with_options
from bench.config import DEFAULT_COPY_THRESHOLD
from bench.errors import BenchError, disk_full_message, is_disk_full
from bench.stopping import Stopped, exit_at_once, stop_on_signals
from bench.terminal import console
from bench.terminal import quiet_tensorflow as _quiet_tensorflow
from bench.terminal import scan_with_progress as _scan_with_progress

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported lazily

app = typer.Typer(
    help="Compare pretrained image backbones, heads and fine-tuning depth on small image datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("bench.cli")


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (test runners swap it between commands)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_Formatter())

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"{record.levelname}: {text}" if record.levelno >= logging.WARNING else text


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    """bench's messages (logger ``bench``) on stderr: INFO and above; warnings and errors
    only with ``--quiet``; DEBUG with ``--verbose``. Called once per command."""
    if quiet and verbose:
        raise BenchError("--quiet and --verbose contradict each other; pass one of them")
    logger = logging.getLogger("bench")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(_StderrHandler())
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


_QUIET = inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
    bool, typer.Option("--quiet", "-q", help="Show warnings and errors only.")])
_VERBOSE = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
    bool, typer.Option("--verbose", "-v", help="Show debug messages too.")])


def command(name: str):
    """Register a ``bench`` command: adds ``--quiet``/``--verbose``, configures logging, and
    turns a BenchError into one line on stderr and exit code 2 (no traceback)."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, quiet: bool = False, verbose: bool = False, **kwargs):
            try:
                configure_logging(quiet, verbose)
                with stop_on_signals():
                    return func(*args, **kwargs)
            except BenchError as exc:
                typer.echo(f"Error: {exc}", err=True)
                raise typer.Exit(code=exc.exit_code) from None
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                typer.echo(f"Error: {disk_full_message(exc)}", err=True)
                raise typer.Exit(code=2) from None
            except (KeyboardInterrupt, Stopped) as exc:  # Ctrl-C, SIGTERM, SIGHUP: every finally block has run
                said = f"Stopped by {exc.name}" if isinstance(exc, Stopped) else "Interrupted"
                typer.echo(f"{said}; completed work is kept in the run folder.", err=True)
                raise typer.Exit(code=getattr(exc, "exit_code", 130)) from None

        signature = inspect.signature(func, eval_str=True)
        wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), _QUIET, _VERBOSE])
        wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
        return app.command(name)(wrapper)

    return decorate


@command("backbones")
def backbones_cmd(
    pattern: Annotated[str, typer.Argument(help="Wildcard filter, e.g. 'resnet*'.")] = "*",
) -> None:
    """List the backbone registry."""
    import backbones

    rows = []
    for name in backbones.list_backbones(pattern):
        rec = backbones.get(name)
        rows.append([rec.name, rec.family, rec.default_size, rec.min_size, rec.preprocessing, rec.feature_width,
                     len(rec.blocks), rec.gmacs])
    if not rows:
        raise BenchError(f"no backbone matches {pattern!r}; run `bench backbones` to list all")
    typer.echo(tabulate(rows, headers=["name", "family", "default px", "min px", "preprocessing", "features", "blocks",
                                       "GMACs/image"]))


@command("demo-data")
def demo_data_cmd(
    dest: Annotated[Path, typer.Argument(help="Folder to create (must not exist or be empty).")],
    n: Annotated[int, typer.Option("--n", help="Images per class.")] = 200,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Write the synthetic MRI-like two-class demo dataset (not real patient data)."""
    from bench.data.demo import make_demo_data

    path = make_demo_data(dest, n=n, size=size, seed=seed)
    typer.echo(f"wrote {2 * n} synthetic images ({n} per class, {size}px, seed {seed}) to {path}")


def scan_cmd(data: Annotated[Path, typer.Argument(help="Folder with one sub-folder per class.")], *,
             seed: int, val_size: float, test_size: float | None, copy_threshold: float, groups: Path | None,
             group_by: str, window: str,
             out: Annotated[Optional[Path], typer.Option(
                 "--out", help="Also write groups.csv (every image's group and split) and the contact sheet "
                               "copies.png into this folder: new, empty, or one an earlier scan wrote. "
                               "Without it, the scan writes nothing.")] = None,
             force: Annotated[bool, typer.Option(
                 "--force", help="Write into --out even though it holds files bench did not write "
                                 "(groups.csv and copies.png there are replaced; inputs never are).")] = False) -> None:
    """Scan a data folder: classes, counts, skipped files, copies and groups, conflicts, the split, a leakage audit."""
    import time

    from bench.config import DEFAULT_TEST_SIZE, RunConfig, check_bounds, parse_window
    from bench.data.dicom import reading_window
    from bench.data.group_files import GROUP_FILES, grouping_for, write_group_files
    from bench.data.scan import scan
    from bench.data.split import check_sizes, make_split
    from bench.outputs import claim_folder

    test_size = DEFAULT_TEST_SIZE if test_size is None else test_size
    check_sizes(val_size, test_size)
    group_by = group_by.value if isinstance(group_by, Enum) else group_by
    check_bounds(RunConfig(copy_threshold=copy_threshold, group_by=group_by))
    window = parse_window(window)
    folder = None
    if out is not None:  # before the scan, which can take minutes
        folder = claim_folder(out, "scan", "--out", names=GROUP_FILES, inputs=[groups], data=data, force=force)
    t0 = time.perf_counter()
    with reading_window(window):
        index = _scan_with_progress(scan, data)
        seconds = time.perf_counter() - t0
        grouping = grouping_for(index, copy_threshold, groups, group_by)
        split = make_split(index, val_size, test_size, seed, grouping=grouping)  # bad data fails here: an error is the only line
        from bench.data.content import ContentTable
        from bench.evaluate.shortcuts import check_split

        split.shortcut = check_split(index, split, ContentTable.compute(index.root, split.files))
    log.info(f"scanned {len(index.records) + len(index.skipped)} files in {seconds:.1f}s, "
             f"grouped in {time.perf_counter() - t0 - seconds:.1f}s")
    from bench.report.scan_summary import format_scan

    typer.echo(format_scan(index, split, grouping))
    if folder is None:
        typer.echo("wrote nothing (add --out DIR for groups.csv and the contact sheet copies.png)")
        return
    with reading_window(window):
        csv_path, sheet = write_group_files(grouping, split.part_of_groups(), index.root, folder.path)
    folder.record([csv_path, sheet])
    typer.echo(f"wrote {csv_path} (every image with its group and split)")
    if sheet is not None:
        typer.echo(f"wrote {sheet} (contact sheet: example links of each kind, to check by eye)")


def report_cmd(run_dir: Annotated[Path, typer.Argument(help="Run folder, e.g. results/<run>, or suite folder.")], *,
               reports: Path) -> None:
    """Write report.md and report.html for a run folder, suite.md and suite.html for a
    suite folder, audit.md and audit.html for an audit folder (no training, no prediction)."""
    from bench.report import build_report
    from bench.report.audit_report import build_audit_report
    from bench.report.suite_report import build_suite_report
    from bench.runfolder import is_audit_dir, is_suite_dir

    own = reports / run_dir.resolve().name
    md, html = (build_suite_report(run_dir, own) if is_suite_dir(run_dir) else build_audit_report(run_dir, own)
                if is_audit_dir(run_dir) else build_report(run_dir, reports))
    typer.echo(f"wrote {md}")
    typer.echo(f"wrote {html}")


@command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `bench run`.")],
    backbone: Annotated[Optional[str], typer.Option(help="Backbone to export; default: the recommended one (rank 1).")] = None,
    to: Annotated[Optional[Path], typer.Option("--to", help="Output folder; default: RUN_DIR/export/<backbone>.")] = None,
    format_: Annotated[str, typer.Option("--format", help="Comma-separated formats: keras, savedmodel, tflite.")] = "keras",
    check: Annotated[bool, typer.Option("--check/--no-check", help="Reload the export in a fresh process and compare it with the run's test predictions.")] = True,
) -> None:
    """Export a trained backbone: a raw-image model, labels.json, model_card.md, manifest.json."""
    _quiet_tensorflow()
    from bench.deploy.export import export_run

    result = export_run(run_dir, backbone=backbone, to=to, formats=format_, check=check)
    typer.echo(str(result.path))


@command("predict")
def predict_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Folder written by `bench export`.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also save the predictions to this CSV file.")] = None,
    gradcam: Annotated[Optional[Path], typer.Option("--gradcam", help="Folder for Grad-CAM overlay PNGs, one per image.")] = None,
    operating_point: Annotated[Optional[str], typer.Option(
        "--operating-point", help="Binary models: decide with the threshold chosen on validation for 'youden' "
                                  "(the default), 'sensitivity' or 'specificity' (see labels.json).")] = None,
    tta: Annotated[str, typer.Option("--tta", help="Test-time augmentation: 'flip' averages each image's "
                                                    "probabilities with its left-right mirror image's.")] = "none",
) -> None:
    """Label images: one tab-separated line per image (file, label, probability of that label)."""
    _quiet_tensorflow()
    from bench.deploy.predict import predict_paths

    result = predict_paths(model_dir, paths, csv=csv, gradcam_dir=gradcam, operating_point=operating_point, tta=tta)
    for line in result.lines():
        typer.echo(line)
    if result.skipped:
        typer.echo(f"predicted {len(result.rows)} image(s); skipped {len(result.skipped)} (listed above)", err=True)


@command("evaluate")
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="Export folder (bench export) or run folder (its recommended backbone).")],
    data: Annotated[Path, typer.Argument(help="External labelled folder: one sub-folder per class, named as the model's classes.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for evaluation.json, predictions.csv and the report.", show_default="evaluations/<DATA folder name>")] = None,
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="With a run folder: evaluate this backbone instead of the recommended one.")] = None,
    keep_overlap: Annotated[bool, typer.Option("--keep-overlap", help="Keep images that are copies of the run's own images (excluded by default).")] = False,
    tta: Annotated[str, typer.Option("--tta", help="'flip': also report the probabilities averaged with each image's left-right mirror image.")] = "none",
    operating_point: Annotated[Optional[str], typer.Option("--operating-point", help="Binary models: decide at 'youden' (default), 'sensitivity' or 'specificity'.")] = None,
    copy_threshold: Annotated[float, typer.Option("--copy-threshold", help="How alike an image must be to a run image to count as its copy (as bench scan).")] = DEFAULT_COPY_THRESHOLD,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap intervals.")] = 0,
) -> None:
    """Evaluate a model on external labelled data: metrics with CIs, calibration, operating points, overlap check."""
    _quiet_tensorflow()
    from bench.config import RunConfig, check_bounds
    from bench.deploy.external import EvaluateOptions, evaluate_external, summary_lines

    check_bounds(RunConfig(copy_threshold=copy_threshold))
    out = out if out is not None else Path("evaluations") / Path(data).resolve().name
    options = EvaluateOptions(backbone=backbone, keep_overlap=keep_overlap, tta=tta, operating_point=operating_point,
                              copy_threshold=copy_threshold, seed=seed, command=" ".join(["bench", *sys.argv[1:]]))
    evaluation = evaluate_external(model, data, out, options)
    for line in summary_lines(evaluation):
        typer.echo(line)
    typer.echo(f"wrote {out / 'evaluation.json'}, {out / 'predictions.csv'}, {out / 'evaluation.html'}")


@command("leaderboard")
def leaderboard_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Run folders, or folders of run folders (e.g. results/).")],
    sort: Annotated[str, typer.Option("--sort", help="Sort by: roc_auc, accuracy, balanced_accuracy, f1, recall, specificity, brier (lowest first), objective_value, run or backbone.")] = "roc_auc",
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also write the table as CSV (every column, CIs included).")] = None,
    md: Annotated[Optional[Path], typer.Option("--md", help="Also write the table as Markdown.")] = None,
) -> None:
    """One table of every backbone of every run: settings, objective and metrics with CIs; runs on other data flagged."""
    from bench.evaluate.runs_table import cross_run_table, format_table, write_table_files

    table = cross_run_table(paths, sort)
    typer.echo(format_table(table))
    for path in write_table_files(table, csv, md):
        typer.echo(f"wrote {path}")


@command("serve")
def serve_cmd(
    path: Annotated[Path, typer.Argument(help="Export folder (bench export) or run folder (bench run).")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 makes the app reachable from other machines.")] = "localhost",
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open a browser tab.")] = False,
) -> None:
    """Start a Streamlit app: upload images, see label, probability and Grad-CAM (pip install 'bench[serve]')."""
    from bench.deploy.serve import serve

    raise typer.Exit(code=serve(path, port=port, address=address, open_browser=open_browser))


def run_cmd(ctx: typer.Context, resume: bool = False, export: bool = True, **options) -> None:
    """Scan, split and search each backbone; write results and the leaderboard."""
    from bench.search.distributed import cluster_from_env

    cluster = cluster_from_env()
    from bench.config import RunConfig

    given = explicit_options(ctx)
    config = RunConfig.from_dict({k: v.value if isinstance(v, Enum) else v for k, v in options.items()})
    if config.mlflow:  # before any work: a server that is down costs nothing
        from bench.mlflow_tracking import check_server

        check_server(config.mlflow)
    if resume:
        _quiet_tensorflow()
        from bench.run import resume_run

        run = resume_run(config.out, config.name, given, cluster=cluster)
        log.info(f"resuming run {run.config.name} with its stored configuration and split")
    elif cluster is not None:
        _quiet_tensorflow()
        from bench.run import open_distributed

        run = _scan_with_progress(open_distributed, config, given, cluster)
        log.info(f"{cluster.role} of run {run.config.name}")
    else:  # the scan, copies and split while TensorFlow loads
        from bench.preparation import prepare_beside_tensorflow

        run = prepare_beside_tensorflow(config)
    from bench.evaluate.leaderboard import format_leaderboard
    from bench.run import execute

    sizes = run.split.sizes()
    log.info(
        f"run {run.config.name}: {len(run.index.records)} images, {len(run.index.classes)} classes, "
        + ", ".join(f"{s} {sum(sizes[s].values())}" for s in sizes)
        + (" (SYNTHETIC demo data)" if run.index.synthetic else "")
    )
    if run.config.weights == "none":
        log.info("weights: none (random initialisation): this is not transfer learning")
    from bench.progress import live_display

    with live_display(console):
        table = execute(run, cluster=cluster, release=export)  # only the export needs the backbones' memory
    if table is None:  # a distributed worker: the chief ranks, exports and reports
        log.info(f"{cluster.role}: no trials left in run {run.config.name}; the chief writes the leaderboard and report")
        return
    exported = None
    if export:
        from bench.deploy.export import export_winner

        exported = export_winner(run.path, index=run.index)  # its scan: the files are not read again
    from bench.report import build_report

    report = build_report(run.path, run.config.reports)
    if config.mlflow:
        from bench.mlflow_tracking import log_run

        log_run(config.mlflow, run.path, run.config.reports)
    typer.echo(format_leaderboard(table))
    typer.echo(f"\n{report.verdict}\n")
    files = run.files
    for path in (files.leaderboard_csv, files.leaderboard_json, files.split_json, files.run_json):
        typer.echo(f"wrote {path}")
    for search in map(files.backbone, table["backbone"]):
        for path in (search.trials_csv, search.best_model, search.test_predictions_csv):
            if path.exists():
                typer.echo(f"wrote {path}")
    if exported is not None:
        typer.echo(f"wrote {exported.path}")
    typer.echo(f"wrote {report.markdown}")
    typer.echo(f"wrote {report.html}")


_CTX = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
_RESUME = inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
    bool, typer.Option("--resume", help="Continue the run --name: completed trials and backbones are kept.")])
_EXPORT = inspect.Parameter("export", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=Annotated[
    bool, typer.Option("--export/--no-export", help="Export the recommended model and its Grad-CAM grid at the end.")])
run_cmd.__signature__ = inspect.Signature([_CTX, *typer_parameters(), _RESUME, _EXPORT])
command("run")(run_cmd)


def suite_cmd(ctx: typer.Context, suite_file: Annotated[Optional[Path], typer.Argument(
        help="Suite file (TOML): \\[run] options shared by every dataset, and \\[\\[datasets]] with name and path.",
        show_default=False)] = None, *, demo: bool = False, resume: bool = False, rope: float = 0.01,
        export: bool = True, **options) -> None:
    """Run every dataset of a suite (one run folder each), then rank the backbones across datasets."""
    from bench.search.distributed import cluster_from_env

    cluster = cluster_from_env()
    _quiet_tensorflow()
    from bench.progress import live_display
    from bench.suite.command import suite

    explicit = explicit_options(ctx)
    given = {k: v for k, v in explicit.items() if k not in ("suite_file", "demo", "resume", "rope", "export")}
    export = export and (not demo or "export" in explicit)  # the demo exports only when asked
    with live_display(console):
        outcome = _scan_with_progress(suite, suite_file, demo=demo, resume=resume, rope=rope, export=export,
                                      out=options["out"], reports=options["reports"], name=options["name"],
                                      overrides=given, cluster=cluster)
    if outcome.verdict is None:
        log.info(f"{cluster.role}: no trials left in suite {outcome.suite.name}; the chief writes the verdict")
        return
    from bench.suite.verdict import format_suite_table

    typer.echo(format_suite_table(outcome.verdict))
    typer.echo("\n" + "\n\n".join(filter(None, [outcome.verdict["sentence"], outcome.verdict.get("floor_sentence")])) + "\n")
    typer.echo(f"wrote {outcome.suite.path}")
    typer.echo(f"wrote {outcome.report.markdown}")
    typer.echo(f"wrote {outcome.report.html}")


suite_cmd.__signature__ = inspect.Signature([
    *list(inspect.signature(suite_cmd, eval_str=True).parameters.values())[:2], *suite_flags(),
    *(p for p in typer_parameters() if p.name not in ("data", "groups"))])
command("suite")(suite_cmd)
from bench.audit.command import audit_cmd  # noqa: E402 (the command's body lives in bench.audit)

command("audit")(audit_cmd)
with_options(scan_cmd, ("seed", "val_size", "test_size", "copy_threshold", "groups", "group_by", "window"))
command("scan")(scan_cmd)
with_options(report_cmd, ("reports",))
command("report")(report_cmd)


def main() -> None:
    """The console entry point: the command, then :func:`exit_at_once`."""
    try:
        app(prog_name="bench")
    except SystemExit as exc:
        exit_at_once(exc.code)
    exit_at_once(0)



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
