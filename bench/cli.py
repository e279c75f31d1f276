"""The ``bench`` command line. Thin: each command calls one library function."""

from __future__ import annotations

import functools
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tabulate import tabulate

from bench.errors import BenchError, disk_full_message, is_disk_full

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported lazily

app = typer.Typer(
    help="Compare pretrained image backbones, heads and fine-tuning depth on small image datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _user_errors(func):
    """Turn a BenchError into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except BenchError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=exc.exit_code) from None
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            typer.echo(f"Error: {disk_full_message(exc)}", err=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted; completed work is kept in the run folder.", err=True)
            raise typer.Exit(code=130) from None

    return wrapper


def _quiet_tensorflow() -> None:
    """Import TensorFlow and initialise its devices with C++ start-up chatter hidden.

    TensorFlow prints CUDA-probing lines on stderr before its log level applies; they
    alarm users on CPU machines. Python-level errors still surface as exceptions.
    """
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
            tf.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )


def _scan_with_progress(fn, *args, **kwargs):
    with _progress() as progress:
        task = progress.add_task("scanning images", total=None)
        return fn(*args, progress=lambda done, total: progress.update(task, completed=done, total=total), **kwargs)


@app.command("backbones")
@_user_errors
def backbones_cmd(
    pattern: Annotated[str, typer.Argument(help="Wildcard filter, e.g. 'resnet*'.")] = "*",
) -> None:
    """List the backbone registry."""
    import backbones

    rows = []
    for name in backbones.list_backbones(pattern):
        rec = backbones.get(name)
        rows.append([rec.name, rec.family, rec.default_size, rec.min_size, rec.preprocessing, rec.feature_width, len(rec.blocks)])
    if not rows:
        raise BenchError(f"no backbone matches {pattern!r}; run `bench backbones` to list all")
    typer.echo(tabulate(rows, headers=["name", "family", "default px", "min px", "preprocessing", "features", "blocks"]))


@app.command("demo-data")
@_user_errors
def demo_data_cmd(
    dest: Annotated[Path, typer.Argument(help="Folder to create (must not exist or be empty).")],
    n: Annotated[int, typer.Option("--n", help="Images per class.")] = 40,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Write the synthetic MRI-like two-class demo dataset (not real patient data)."""
    from bench.demo import make_demo_data

    path = make_demo_data(dest, n=n, size=size, seed=seed)
    typer.echo(f"wrote {2 * n} synthetic images ({n} per class, {size}px, seed {seed}) to {path}")


def format_scan(index, split) -> str:
    """The human summary printed by ``bench scan``."""
    from bench.duplicates import exact_duplicate_sets

    counts = index.counts()
    lines = [f"data: {index.root}" + ("  (SYNTHETIC demo data)" if index.synthetic else "")]
    n_files = len(index.records) + sum(1 for s in index.skipped if s.reason != "class folder holds no readable images")
    lines.append(f"{n_files} files, {len(index.records)} readable images, {len(index.classes)} classes")
    lines.append(tabulate([[c, counts[c]] for c in index.classes], headers=["class", "images"]))
    if index.skipped:
        lines.append(f"\nskipped {len(index.skipped)}:")
        lines.extend(f"  {s.path}: {s.reason}" for s in index.skipped)
    exact = exact_duplicate_sets(index.records)
    lines.append(f"\nexact duplicates (identical bytes): {len(exact)} groups, {sum(map(len, exact))} files")
    lines.extend("  " + ", ".join(paths) for paths in exact)
    near = [g for g in split.groups if g["kind"] == "near"]
    lines.append(
        f"near-duplicate groups (re-saved/resized copies, exact copies included): {len(near)} groups, "
        f"{sum(len(g['files']) for g in near)} files"
    )
    lines.extend(f"  {g['group']} [{g['split']}]: " + ", ".join(g["files"]) for g in near)
    lines.append(f"split groups: {len(split.groups)} multi-file groups, each kept whole in one split")
    if split.conflicts:
        lines.append(f"\nlabel conflicts (excluded from every split): {len(split.conflicts)}")
        lines.extend(f"  {c['group']}: labels {', '.join(c['labels'])}: {', '.join(c['files'])}" for c in split.conflicts)
    else:
        lines.append("\nlabel conflicts: none")
    sizes = split.sizes()
    rows = [[s, *(sizes[s][c] for c in index.classes), sum(sizes[s].values())] for s in sizes]
    lines.append(f"\nsplit (seed {split.seed}, val {split.val_size:g}, test {split.test_size:g}):")
    lines.append(tabulate(rows, headers=["split", *index.classes, "total"]))
    split_of = {}
    crossing = set()
    for f in split.files:
        if split_of.setdefault(f["group"], f["split"]) != f["split"]:
            crossing.add(f["group"])
    lines.append(
        "no duplicate group crosses splits" if not crossing else f"WARNING: groups crossing splits: {sorted(crossing)}"
    )
    return "\n".join(lines)


@app.command("scan")
@_user_errors
def scan_cmd(
    data: Annotated[Path, typer.Argument(help="Folder with one sub-folder per class.")],
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    val_size: Annotated[float, typer.Option(help="Validation fraction.")] = 0.15,
    test_size: Annotated[float, typer.Option(help="Test fraction.")] = 0.15,
) -> None:
    """Scan a data folder: classes, counts, skipped files, duplicates, conflicts, the split."""
    from bench.scan import scan
    from bench.split import check_sizes, make_split

    check_sizes(val_size, test_size)
    index = _scan_with_progress(scan, data)
    split = make_split(index, val_size, test_size, seed)
    typer.echo(format_scan(index, split))


@app.command("report")
@_user_errors
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder, e.g. results/<run>.")],
    reports: Annotated[Path, typer.Option(help="Folder for reports.")] = Path("reports"),
) -> None:
    """Write report.md and report.html for a run folder (no training, no prediction)."""
    from bench.report import build_report

    md, html = build_report(run_dir, reports)
    typer.echo(f"wrote {md}")
    typer.echo(f"wrote {html}")


@app.command("export")
@_user_errors
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `bench run`.")],
    backbone: Annotated[Optional[str], typer.Option(help="Backbone to export; default: the recommended one (rank 1).")] = None,
    to: Annotated[Optional[Path], typer.Option("--to", help="Output folder; default: RUN_DIR/export/<backbone>.")] = None,
    format_: Annotated[str, typer.Option("--format", help="Comma-separated formats: keras, savedmodel, tflite.")] = "keras",
    check: Annotated[bool, typer.Option("--check/--no-check", help="Reload the export in a fresh process and compare it with the run's test predictions.")] = True,
) -> None:
    """Export a trained backbone: a raw-image model, labels.json, model_card.md, manifest.json."""
    _quiet_tensorflow()
    from bench.export import export_run

    result = export_run(run_dir, backbone=backbone, to=to, formats=format_, check=check,
                        log=lambda msg: typer.echo(msg, err=True))
    typer.echo(str(result.path))


@app.command("predict")
@_user_errors
def predict_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Folder written by `bench export`.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also save the predictions to this CSV file.")] = None,
    gradcam: Annotated[Optional[Path], typer.Option("--gradcam", help="Folder for Grad-CAM overlay PNGs, one per image.")] = None,
) -> None:
    """Label images: one tab-separated line per image (file, label, probability of that label)."""
    _quiet_tensorflow()
    from bench.predict import predict_paths

    result = predict_paths(model_dir, paths, csv=csv, gradcam_dir=gradcam, log=lambda msg: typer.echo(msg, err=True))
    for line in result.lines():
        typer.echo(line)
    if result.skipped:
        typer.echo(f"predicted {len(result.rows)} image(s); skipped {len(result.skipped)} (listed above)", err=True)


@app.command("serve")
@_user_errors
def serve_cmd(
    path: Annotated[Path, typer.Argument(help="Export folder (bench export) or run folder (bench run).")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 makes the app reachable from other machines.")] = "localhost",
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open a browser tab.")] = False,
) -> None:
    """Start a Streamlit app: upload images, see label, probability and Grad-CAM (pip install 'bench[serve]')."""
    from bench.serve import serve

    raise typer.Exit(code=serve(path, port=port, address=address, open_browser=open_browser))


class Tuner(str, Enum):
    bayesian = "bayesian"
    random = "random"
    hyperband = "hyperband"


class Objective(str, Enum):
    val_auc = "val_auc"
    val_f1 = "val_f1"
    val_accuracy = "val_accuracy"
    val_loss = "val_loss"


class MixedPrecision(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


#: ``bench run`` parameter name -> RunConfig field, where they differ.
_RUN_FIELDS = {"backbones_": "backbones"}


def _explicit_options(ctx: typer.Context) -> dict:
    """RunConfig fields the user set on the command line (or by environment), with values."""
    given = {}
    for param, value in ctx.params.items():
        source = ctx.get_parameter_source(param)
        # by name: typer may bring its own copy of click's ParameterSource enum
        if getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT"):
            given[_RUN_FIELDS.get(param, param)] = value.value if isinstance(value, Enum) else value
    return given


@app.command("run")
@_user_errors
def run_cmd(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Option(help="Folder with one sub-folder per class; default: the synthetic demo data.")] = None,
    backbones_: Annotated[str, typer.Option("--backbones", help="Comma-separated backbone names or wildcards.")] = "xception,mobilenet_v2",
    weights: Annotated[str, typer.Option(help="'imagenet', 'none' (random init), or a weights file / folder.")] = "imagenet",
    seed: Annotated[int, typer.Option(help="Seed for the split and the search.")] = 0,
    val_size: Annotated[float, typer.Option(help="Validation fraction.")] = 0.15,
    test_size: Annotated[float, typer.Option(help="Test fraction.")] = 0.15,
    image_size: Annotated[Optional[int], typer.Option(help="Input size in px; default: each backbone's own.")] = None,
    tuner: Annotated[Tuner, typer.Option(help="KerasTuner search algorithm.")] = Tuner.bayesian,
    max_trials: Annotated[int, typer.Option(help="Trials per backbone (hyperband sets its own count).")] = 10,
    epochs: Annotated[int, typer.Option(help="Epochs per trial (both phases together when fine-tuning).")] = 10,
    objective: Annotated[Objective, typer.Option(help="Validation metric the search maximises (val_loss: minimises).")] = Objective.val_auc,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Train on cached augmented views too.")] = False,
    aug_views: Annotated[int, typer.Option(help="Augmented views per training image with --augment.")] = 4,
    max_unfreeze: Annotated[int, typer.Option(help="Largest number of top backbone blocks the search may fine-tune.")] = 2,
    baseline: Annotated[Optional[bool], typer.Option("--baseline/--no-baseline", help="Also train the original notebook's recipe (default: when xception is included).")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="TensorFlow op determinism: same seed, same machine -> identical results (can be slower).")] = False,
    mixed_precision: Annotated[MixedPrecision, typer.Option(help="float16 compute: 'auto' on GPUs only, 'on', 'off'.")] = MixedPrecision.auto,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run --name: completed trials and backbones are kept.")] = False,
    export: Annotated[bool, typer.Option("--export/--no-export", help="Export the recommended model and its Grad-CAM grid at the end.")] = True,
    out: Annotated[Path, typer.Option(help="Folder for run folders.")] = Path("results"),
    reports: Annotated[Path, typer.Option(help="Folder for reports.")] = Path("reports"),
    name: Annotated[Optional[str], typer.Option(help="Run name (folder under --out); default: a timestamp.")] = None,
) -> None:
    """Scan, split and search each backbone; write results and the leaderboard."""
    from bench.distributed import cluster_from_env

    cluster = cluster_from_env()
    _quiet_tensorflow()
    from bench.leaderboard import format_leaderboard
    from bench.run import RunConfig, execute, open_distributed, prepare_run, resume_run

    given = _explicit_options(ctx)
    config = RunConfig(
        data=data, backbones=backbones_, weights=weights, seed=seed, val_size=val_size,
        test_size=test_size, image_size=image_size, out=out, reports=reports, name=name,
        tuner=tuner.value, max_trials=max_trials, epochs=epochs, objective=objective.value,
        batch_size=batch_size, augment=augment, aug_views=aug_views, max_unfreeze=max_unfreeze,
        baseline=baseline, deterministic=deterministic, mixed_precision=mixed_precision.value,
    )
    if resume:
        run = resume_run(out, name, given, cluster=cluster)
        typer.echo(f"resuming run {run.config.name} with its stored configuration and split", err=True)
    elif cluster is not None:
        run = _scan_with_progress(open_distributed, config, given, cluster)
        typer.echo(f"{cluster.role} of run {run.config.name}", err=True)
    else:
        run = _scan_with_progress(prepare_run, config)
    sizes = run.split.sizes()
    typer.echo(
        f"run {run.config.name}: {len(run.index.records)} images, {len(run.index.classes)} classes, "
        + ", ".join(f"{s} {sum(sizes[s].values())}" for s in sizes)
        + (" (SYNTHETIC demo data)" if run.index.synthetic else ""),
        err=True,
    )
    if run.config.weights == "none":
        typer.echo("weights: none (random initialisation): this is not transfer learning", err=True)
    table = execute(run, log=lambda msg: typer.echo(msg, err=True), cluster=cluster)
    if table is None:  # a distributed worker: the chief ranks, exports and reports
        typer.echo(f"{cluster.role}: no trials left in run {run.config.name}; the chief writes the leaderboard and report",
                   err=True)
        return
    exported = None
    if export:
        from bench.export import export_winner

        exported = export_winner(run.path, log=lambda msg: typer.echo(msg, err=True))
    from bench.report import build_report

    md, html = build_report(run.path, run.config.reports)
    typer.echo(format_leaderboard(table))
    typer.echo("")
    for fname in ("leaderboard.csv", "leaderboard.json", "split.json", "run.json"):
        typer.echo(f"wrote {run.path / fname}")
    for backbone in table["backbone"]:
        for fname in ("trials.csv", "best_model.keras", "test_predictions.csv"):
            if (run.path / backbone / fname).exists():
                typer.echo(f"wrote {run.path / backbone / fname}")
    if exported is not None:
        typer.echo(f"wrote {exported.path}")
    typer.echo(f"wrote {md}")
    typer.echo(f"wrote {html}")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="bench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
