"""bench checks itself: how often its cross-validated intervals cover what the model does on new data.

    python benchmarks/validity.py [--draws 20 | --quick] [--pool DIR] [--out validity.json]

From a large pool (by default phantoms at three lesion difficulties, mixed; ``--pool DIR``:
any folder with one sub-folder per class) it draws small stratified datasets (``--n``
images each, seeded per draw), runs ``bench run --cv 5`` on each with three backbones, and
scores every backbone's deployed model (trained on all of the draw) on the whole pool
with ``bench evaluate``, whose overlap check removes the drawn images and their copies:
what is left is data the run never saw, from the same source.

Per draw it records the recommended backbone, its out-of-fold AUC and accuracy with their
95 % intervals, the same model's AUC and accuracy on the pool, whether each interval covers
its pool value, the pool's best backbone, and the regret (pool AUC the pick loses to that
best). It prints a table and the summary (coverage with a Wilson interval on the coverage
itself, how often the pick is the best, mean and max regret, the range of pool AUCs) and
writes everything as JSON (``--out``).

The CV interval is about the procedure trained on 80 % of a draw (each outer fold's
model); the pool value is about the model trained on all of it, the one bench deploys.
Coverage below 90 % says the interval is too narrow for the deployed model, whichever of
the two causes it. Beside that bootstrap interval it scores the interval bench reports for
the deployed model: the mean of the per-fold values with the Nadeau-Bengio corrected
interval (``bench.evaluate.crossval.fold_interval``). ``--rescore FILE`` prints the table
and summary of an earlier ``--out`` file again, scored as this version scores, without
training; ``--record`` writes the coverage into ``bench/evaluate/measured_coverage.json``,
which every cross-validated run's report and model card quote. It prints its figures; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _validity import draw_files, score_draw, summarize, summary_lines, table_lines  # noqa: E402
from bench.errors import BenchError  # noqa: E402

#: Tumour styles of the default pool: (name, min radius, contrast low, contrast high, kind);
#: each part holds ``--pool-n`` images per class, its own seed.
POOL_PARTS = (("large", 0.22, 0.7, 1.0, "solid"), ("medium", 0.18, 0.5, 0.9, "solid"),
              ("small", 0.14, 0.4, 0.8, "solid"))
POOL_SIZE = 64  # px, the phantoms' size
QUICK_DRAWS = 3


def make_pool(dest: Path, per_class: int, seed: int) -> Path:
    """The default pool: each of :data:`POOL_PARTS` rendered as a phantom dataset of its own
    seed, linked into ``dest/<class>/<part>_<file>``, with a synthetic-data marker."""
    from bench.data.demo import MARKER_NAME, PhantomClass, make_phantom_data
    from bench.data.phantom import LesionStyle

    parts = dest.parent / f".{dest.name}-parts"
    for k, (name, radius, low, high, kind) in enumerate(POOL_PARTS):
        classes = [PhantomClass("no_tumor", per_class, None),
                   PhantomClass("tumor", per_class, LesionStyle(radius, low, high, kind))]
        make_phantom_data(parts / name, classes, POOL_SIZE, seed * 100 + k, {"generator": "benchmarks/validity.py"})
        for c in classes:
            (dest / c.name).mkdir(parents=True, exist_ok=True)
            for f in sorted((parts / name / c.name).iterdir()):
                link(f, dest / c.name / f"{name}_{f.name}")
    info = {"synthetic": True, "generator": "benchmarks/validity.py", "parts": [p[0] for p in POOL_PARTS],
            "per_class": per_class, "size": POOL_SIZE, "seed": seed}
    (dest / MARKER_NAME).write_text(json.dumps(info) + "\n", encoding="utf-8")
    return dest


def link(source: Path, target: Path) -> None:
    """A hard link of ``source`` at ``target``; a copy where the two sit on different file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def scan_pool(pool: Path, n: int):
    """The pool's scan with copy features (every evaluation reuses it, its copy links
    computed once) and its readable images by class (paths relative to it); one-line
    errors when it cannot give a draw of ``n`` and leave at least as many images to score on."""
    from bench.data.scan import scan

    if not pool.is_dir():
        raise BenchError(f"--pool {pool} is not a folder; pass a folder with one sub-folder per class")
    index = scan(pool, copies=True)
    by_class: dict[str, list[str]] = {}
    for r in index.records:
        by_class.setdefault(r.label, []).append(r.path)
    if len(by_class) < 2:
        raise BenchError(f"--pool {pool} holds {len(by_class)} class folder(s) with images; it needs two or more")
    if len(index.records) < 2 * n:
        raise BenchError(f"--pool {pool} holds {len(index.records)} images; draws of --n {n} need at least {2 * n} "
                         "(as many again to score on): lower --n or add images")
    return index, by_class


def deploy_every_backbone(run, sources: dict) -> None:
    """Give every backbone of a finished ``--cv`` run the model bench deploys for the
    recommended one (searched once more on all cross-validated images: ``NestedCV.deploy``),
    so that each can be scored on the pool; the leaderboard keeps its ranks."""
    from bench.designs import NestedCV
    from bench.evaluate.leaderboard import write_leaderboard
    from bench.runfolder import read_run
    from bench.search.runtime import FrozenPass, run_settings

    frozen_pass = FrozenPass.for_config(run.config)
    design, rows = NestedCV(run, frozen_pass), read_run(run.path).leaderboard
    with run_settings(frozen_pass, run.config.deterministic, run.config.search.seed):
        for row in rows:
            if row.get("status") == "ok" and row.get("rank") not in (None, 1):
                design.deploy(row, sources, len(rows))
    write_leaderboard(rows, run.path)


def run_draw(i: int, pool: Path, pool_index, by_class: dict, work: Path, args, sources: dict) -> dict:
    """Draw ``i``: its dataset, its ``--cv 5`` run, and every backbone scored on the pool."""
    from bench.config import RunConfig, SearchConfig
    from bench.deploy.external import EvaluateOptions, evaluate_external
    from bench.run import execute, prepare_run
    from bench.runfolder import read_run

    rng = np.random.default_rng([args.seed, i])
    data = work / f"draw-{i:02d}"
    for label, files in draw_files(by_class, args.n, rng).items():
        (data / label).mkdir(parents=True, exist_ok=True)
        for f in files:
            link(pool / f, data / label / "_".join(Path(f).parts[1:]))
    search = SearchConfig(seed=args.seed * 1000 + i, max_trials=args.max_trials, epochs=args.epochs, max_unfreeze=0,
                          tensorboard=False)
    config = RunConfig(data=data, backbones=args.backbones, weights="none", cv=args.cv, image_size=args.image_size,
                       baseline=False, floor=False, out=work / "runs", reports=work / "reports", name=data.name,
                       search=search)
    t0 = time.perf_counter()
    run = prepare_run(config)
    execute(run, sources=sources)
    run_seconds = time.perf_counter() - t0
    deploy_every_backbone(run, sources)
    deploy_seconds = time.perf_counter() - t0 - run_seconds
    ranked = read_run(run.path).ranked()
    if not ranked:
        raise BenchError(f"draw {i}: no backbone finished; see {run.path}/leaderboard.json")
    pick = ranked[0]
    pool_values, evaluated = {}, {}
    for row in ranked:
        name = row["backbone"]
        ev = evaluate_external(run.path, pool, work / "evaluations" / data.name / name,
                               EvaluateOptions(backbone=name, seed=i, command="benchmarks/validity.py"),
                               index=pool_index)
        pool_values[name] = ev["results"]["plain"]["metrics"]
        evaluated[name] = {"n": ev["evaluated"]["n"], "overlap": len(ev["overlap"]["rows"])}
    m = pool_values[pick["backbone"]]
    draw = {
        "draw": i, "n_images": len(run.index.records), "picked": pick["backbone"], "cv_k": args.cv,
        "cv_auc": pick["cv_roc_auc"], "cv_auc_low": pick["cv_roc_auc_ci_low"], "cv_auc_high": pick["cv_roc_auc_ci_high"],
        "cv_acc": pick["cv_accuracy"], "cv_acc_low": pick["cv_accuracy_ci_low"],
        "cv_acc_high": pick["cv_accuracy_ci_high"],
        "pool_auc": m["roc_auc"], "pool_auc_low": m.get("roc_auc_ci_low"), "pool_auc_high": m.get("roc_auc_ci_high"),
        "pool_acc": m["accuracy"], "pool_acc_low": m.get("accuracy_ci_low"), "pool_acc_high": m.get("accuracy_ci_high"),
        "pool_aucs": {b: v["roc_auc"] for b, v in pool_values.items()},
        "pool_accs": {b: v["accuracy"] for b, v in pool_values.items()},
        "cv_aucs": {r["backbone"]: r["cv_roc_auc"] for r in ranked},
        "cv_auc_folds": {r["backbone"]: r.get("cv_roc_auc_folds") for r in ranked},
        "cv_acc_folds": {r["backbone"]: r.get("cv_accuracy_folds") for r in ranked},
        "evaluated": evaluated, "run_seconds": round(run_seconds, 1), "deploy_seconds": round(deploy_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    shutil.rmtree(data, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(run.path, ignore_errors=True)
        shutil.rmtree(work / "evaluations" / data.name, ignore_errors=True)
    return score_draw(draw)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=20, help="datasets drawn from the pool (default 20)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DRAWS} draws: the pipeline end to end")
    parser.add_argument("--n", type=int, default=250, help="images per draw (stratified; default 250)")
    parser.add_argument("--pool", type=Path, help="folder with one sub-folder per class (default: phantoms at "
                                                  f"{len(POOL_PARTS)} lesion difficulties)")
    parser.add_argument("--pool-n", type=int, default=150, help="default pool: images per class per difficulty")
    parser.add_argument("--backbones", default="mobilenet_v2,densenet121,vgg16")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the draws and the summary here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep run folders and evaluations (printed path)")
    parser.add_argument("--verbose", action="store_true", help="bench's own log lines too")
    parser.add_argument("--rescore", type=Path, help="print an earlier --out file's draws and summary again")
    parser.add_argument("--record", action="store_true",
                        help="write the coverage into bench's measured_coverage.json, which run reports quote")
    args = parser.parse_args(argv)
    if args.quick:
        args.draws = QUICK_DRAWS
    if args.draws < 1 or args.n < 20:
        parser.error("--draws must be at least 1 and --n at least 20")
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    return args


def report(draws: list[dict]) -> dict:
    """Print the table and the summary of scored draws; returns the summary."""
    summary = summarize(draws)
    print()
    print("\n".join(table_lines(draws)))
    print()
    print("\n".join(summary_lines(summary)))
    return summary


def rescore(path: Path, record: bool = False) -> int:
    """The table and summary of an earlier ``--out`` file, every draw scored again."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        draws = [score_draw({"cv_k": saved["settings"]["cv"], **d}) for d in saved["draws"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot read {path} as a validity.py --out file ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    print(f"{path}: {saved.get('command', '')}")
    summary = report(draws)
    if record:
        write_record(saved.get("command", ""), saved["settings"], summary, saved.get("date"))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rescore:
        return rescore(args.rescore, args.record)
    from bench.terminal import quiet_tensorflow

    quiet_tensorflow()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("bench").setLevel(logging.INFO if args.verbose else logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="bench-validity-"))
    os.environ.setdefault("BENCH_CACHE", str(work / "cache"))
    start = time.perf_counter()
    try:
        pool = args.pool.resolve() if args.pool else make_pool(work / "pool", args.pool_n, args.seed)
        pool_index, by_class = scan_pool(pool, args.n)
        size = sum(map(len, by_class.values()))
        print(f"pool: {pool if args.pool else 'phantoms, ' + ', '.join(p[0] for p in POOL_PARTS) + ' lesions'}: "
              f"{size} images ({', '.join(f'{c} {len(f)}' for c, f in sorted(by_class.items()))})")
        print(f"per draw: {args.n} images, bench run --cv {args.cv} --backbones {','.join(args.backbones)} "
              f"--weights none --image-size {args.image_size} --max-trials {args.max_trials} --epochs {args.epochs} "
              f"--max-unfreeze 0 --no-floor --no-baseline; every backbone scored on the pool by bench evaluate "
              f"(the draw's images and their copies excluded)", flush=True)
        draws, sources = [], {}
        for i in range(args.draws):
            draws.append(run_draw(i, pool, pool_index, by_class, work, args, sources))
            d = draws[-1]
            print(f"draw {i}: {d['picked']} picked, CV AUC {d['cv_auc']:.3f}, pool AUC {d['pool_auc']:.3f} "
                  f"(n={d['evaluated'][d['picked']]['n']}), {d['seconds']:.0f} s", flush=True)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = report(draws)
    wall = time.perf_counter() - start
    print(f"{len(draws)} draws in {wall:.0f} s" + (f"; run folders and evaluations kept in {work}" if args.keep else ""))
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(["python", "benchmarks/validity.py", *sys.argv[1:]]),
                                        "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                     for k, v in vars(args).items()},
                                        "draws": draws, "summary": summary, "seconds": round(wall, 1),
                                        "date": time.strftime("%Y-%m-%d")},
                                       indent=1, default=float) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    if args.record:
        write_record(" ".join(["python", "benchmarks/validity.py", *sys.argv[1:]]),
                     {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, summary)
    return 0


def write_record(command: str, settings: dict, summary: dict, date: str | None = None) -> None:
    """bench's ``measured_coverage.json`` (:mod:`bench.evaluate.coverage`): what was drawn,
    the command, and how often each interval covered the deployed model's pool value."""
    import datetime

    from bench.atomic import write_text_atomic
    from bench.evaluate.coverage import RECORD

    pool = settings.get("pool") or f"a pool of {settings.get('pool_n', 0) * 2 * len(POOL_PARTS)} phantom images at {len(POOL_PARTS)} difficulties"
    record = {
        "what": f"{summary['draws']} draws of {settings['n']} images from {pool}, --cv {settings['cv']}, "
                f"{', '.join(settings['backbones'])} at {settings['image_size']} px, weights none",
        "command": " ".join(re.sub(r"--(record|out \S+|rescore \S+)", "", command).split()),
        "date": date or datetime.date.today().isoformat(),
        "coverage": {"bootstrap_auc": summary["auc"], "bootstrap_accuracy": summary["accuracy"],
                     "fold_auc": summary["auc_corrected"], "fold_accuracy": summary["accuracy_corrected"]},
        "half_width": summary["half_width"],
        "pool_minus_cv_mean": {"auc": summary["auc_gap_mean"], "accuracy": summary["accuracy_gap_mean"]},
    }
    write_text_atomic(RECORD, json.dumps(record, indent=1) + "\n")
    print(f"wrote {RECORD}")


if __name__ == "__main__":
    sys.exit(main())
