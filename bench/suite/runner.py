"""Run a suite: each dataset as an ordinary run folder inside the suite folder, in order.

``<out>/<suite>/suite.json`` holds the suite as it started (its datasets, the shared
options, the suite file's text) and which datasets are finished; ``<out>/<suite>/<dataset>/``
is each dataset's run folder, made and resumed exactly as ``bench run`` and
``bench run --resume`` make and resume one. A killed suite resumes where it stopped:
finished datasets are skipped, the dataset in progress resumes its run (finished
backbones skipped, completed trials kept).

One process builds each backbone once for every dataset (the built network is reused
with the weights each run asks for), which is where a suite saves over separate runs.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from bench import __version__
from bench.atomic import read_json, write_json_atomic
from bench.errors import BenchError
from bench.faults import crash_point
from bench.locks import RunLock, file_lock
from bench.runfolder import (SUITE_JSON, SUITE_TOML, RunFiles, RunsFolder, check_run_name, check_writable,
                             default_run_name, is_suite_dir)
from bench.suite.spec import SuiteSpec, changed_options

log = logging.getLogger("bench")
#: Ports a distributed suite leaves to each dataset's searches (the chief serves job i of a
#: dataset on its port + i).
PORT_STRIDE = 1000


@dataclass
class Suite(RunsFolder):
    """A suite folder: one run folder per dataset, ``suite.json`` listing the finished ones."""

    spec: SuiteSpec | None = None
    STATE = SUITE_JSON


def open_suite(spec: SuiteSpec | None, out: Path, name: str | None, reports: Path, resume: bool,
               cluster=None) -> Suite:
    """A new suite folder ``<out>/<name>`` (refused when it exists), or with ``resume`` the
    existing one; a suite file given on resume must not change what the suite computes.

    Distributed (``cluster``): the first process to arrive makes the folder, under a lock;
    every other one (chief or worker) joins it, with the checks of ``--resume``."""
    if cluster is not None and not resume:
        if not name:
            raise BenchError("distributed mode needs --name: the chief and every worker must name the same suite")
        check_run_name(name)
        with file_lock(check_writable(Path(out), "--out") / f".{name}.prepare.lock"):
            if is_suite_dir(Path(out) / name):
                return open_suite(spec, out, name, reports, resume=True)
            return open_suite(spec, out, name, reports, resume=False)
    if resume:
        if not name:
            raise BenchError("--resume needs --name SUITE (the suite folder to continue)")
        path = Path(out) / check_run_name(name)
        if not is_suite_dir(path):
            raise BenchError(f"no suite to resume at {path} ({SUITE_JSON} missing); check --out and --name")
        stored = read_json(path / SUITE_JSON)
        stored_spec = SuiteSpec.from_dict(stored["spec"], stored.get("toml", ""))
        if spec is not None:
            diffs = changed_options(stored_spec, spec)
            if diffs:
                raise BenchError(f"--resume cannot change what suite {name} computes: {'; '.join(diffs)}; drop "
                                 "them to continue it as it started, or start a new suite with another --name")
        check_writable(Path(reports) / name, "--reports")
        return Suite(path, Path(reports) / name, stored_spec)
    if spec is None:
        raise BenchError("pass a suite file (bench suite SUITE.toml), or --demo")
    name = check_run_name(name) if name else default_run_name()
    path = check_writable(Path(out), "--out") / name
    if path.exists() and any(path.iterdir()):
        raise BenchError(f"suite folder {path} already exists; continue it with --resume --name {name}, "
                         "or pass another --name")
    check_writable(path, "--out")
    report_dir = check_writable(Path(reports) / name, "--reports")  # before any work
    write_json_atomic(path / SUITE_JSON, {
        "bench_version": __version__,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.as_dict(), "toml": spec.text, "finished": [],
    })
    if spec.text:
        (path / SUITE_TOML).write_text(spec.text, encoding="utf-8")
    return Suite(path, report_dir, spec)


#: What a run folder holds before its run.json (bench.run.prepare_run writes run.json last).
PREPARE_FILES = ("dataset.json", "split.json", "folds.json", "groups.csv", "copies.png", "content.csv")


def clear_unprepared(files: RunFiles) -> None:
    """A run folder cut short before its run.json (a kill while it was prepared, inside a
    suite or an audit): the files preparing writes are removed so it is prepared again;
    anything else there is refused."""
    if not files.path.is_dir():
        return
    others = [p.name for p in files.path.iterdir() if p.name not in PREPARE_FILES and not p.name.startswith(".")]
    if others:
        raise BenchError(f"{files.path} holds {others[0]} but no run.json; move it away, then resume")
    for name in PREPARE_FILES:
        (files.path / name).unlink(missing_ok=True)


def jobs_per_run(config) -> int:
    """Upper bound of the searches of one dataset's run (its distributed ports)."""
    names = len(config.backbones) + (1 if config.baseline or "xception" in config.backbones else 0)
    return names * ((config.cv or 1) * config.repeats) + 1


def run_suite(suite: Suite, export: bool = True, cluster=None, progress=None) -> list[str]:
    """Run every dataset not finished yet, in the suite's order; returns the datasets run now.

    Each dataset's run gets the same treatment as ``bench run``: scan, split, search,
    leaderboard, the winner's export (``export``) and its report. Distributed: every
    process walks the datasets in the same order; the chief of each dataset's run ranks,
    exports and reports it, and a worker goes on to the next dataset.
    """
    from bench.deploy.export import export_winner
    from bench.report import build_report
    from bench.run import execute, open_distributed, prepare_run, resume_run

    sources: dict = {}  # built backbones, shared by every dataset of this process
    done_now, offset = [], 0
    finished = set(suite.finished())
    lock = RunLock(suite.path, ".suite-lock" if cluster is None else cluster.lock_name + "-suite")
    with lock:
        for i, dataset in enumerate(suite.spec.datasets, start=1):
            config = suite.spec.config_for(dataset, suite.path, suite.reports)
            from bench.run import validate

            validate(config)
            member = None if cluster is None else replace(cluster, port=cluster.port + offset)
            offset += PORT_STRIDE
            if dataset.name in finished:
                log.info(f"suite {suite.name}: dataset {i}/{len(suite.spec.datasets)} {dataset.name}: finished "
                         "earlier, skipped")
                continue
            log.info(f"suite {suite.name}: dataset {i}/{len(suite.spec.datasets)}: {dataset.name} ({dataset.path})")
            if jobs_per_run(config) > PORT_STRIDE and cluster is not None:
                raise BenchError(f"dataset {dataset.name} has more than {PORT_STRIDE} searches; a distributed suite "
                                 "serves at most that many per dataset: lower --cv, --repeats or the backbones")
            run_files = RunFiles(suite.run_dir(dataset.name))
            if member is None and not run_files.run_json.exists():
                clear_unprepared(run_files)
            if member is not None:
                run = open_distributed(config, {}, member, progress)
            elif run_files.run_json.exists():
                run = resume_run(suite.path, dataset.name, {}, cluster=None)
                log.info(f"{dataset.name}: resuming its run with the stored configuration and split")
            else:
                run = prepare_run(config, progress)
            table = execute(run, cluster=member, sources=sources)
            if member is not None and not member.is_chief:
                continue
            if table is not None and export:
                export_winner(run.path, index=run.index)
            if table is not None:
                build_report(run.path, suite.reports)
                if config.mlflow:
                    from bench.mlflow_tracking import log_run

                    log_run(config.mlflow, run.path, suite.reports)
            suite.mark_finished(dataset.name)
            done_now.append(dataset.name)
            crash_point("suite-dataset")
    return done_now
