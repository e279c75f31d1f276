"""Run an audit: the honest and the naive protocol, each an ordinary run folder inside the
audit folder, from one scan of the data.

``<out>/<audit>/audit.json`` holds the audit as it started (the command, the honest
protocol's options, the data) and which protocols are finished, then the claim, the
estimates and the verdict (:mod:`bench.audit.verdict`); ``<out>/<audit>/honest/`` and
``naive/`` are run folders made and resumed as ``bench run`` and ``bench run --resume``
make and resume one, so ``bench report``, ``bench export`` and ``bench leaderboard`` read
them as any run. A killed audit resumes where it stopped: a finished protocol is not run
again, the protocol in progress resumes its run (finished backbones and trials kept).

* **honest**: ``bench run``'s options as given, with ``--cv 5`` unless ``--cv`` is given:
  nested, group-aware cross-validation (copies and ``--groups`` kept on one side of every
  split), the floor baselines scored on the same folds.
* **naive**: the same options on one plain stratified random split (``--plain-split``: the
  split of the scan's leakage audit, copies ignored) with the honest run's test fraction,
  or :data:`bench.config.DEFAULT_TEST_SIZE` when the honest run holds out none.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench import __version__
from bench.atomic import write_json_atomic
from bench.config import RunConfig
from bench.errors import BenchError
from bench.faults import crash_point
from bench.locks import RunLock
from bench.runfolder import AUDIT_JSON, RunFiles, RunsFolder, check_run_name, check_writable, default_run_name

log = logging.getLogger("bench")
PROTOCOLS = ("honest", "naive")
#: Outer folds of the honest protocol when ``--cv`` is not given.
DEFAULT_CV = 5
#: Options ``bench audit`` sets itself (the data is its argument; the split is the protocol's).
OWN_OPTIONS = ("data", "plain_split")


def protocol_configs(options: dict) -> dict[str, RunConfig]:
    """The two protocols' run configurations, validated, from ``bench run``'s options
    (``options``: every field, as given or by default; ``cv`` unset means 5 folds)."""
    from bench.run import validate

    honest = RunConfig.from_dict({**options, "cv": options.get("cv") or DEFAULT_CV, "plain_split": False})
    validate(honest)
    naive = RunConfig.from_dict({**honest.to_dict(), "cv": None, "repeats": 1, "plain_split": True,
                                 "test_size": honest.test_size or None})
    validate(naive)
    return {"honest": honest, "naive": naive}


@dataclass
class Audit(RunsFolder):
    """An audit folder: the honest and the naive protocol's run folders, ``audit.json``
    listing the finished ones."""

    STATE = AUDIT_JSON

    def configs(self) -> dict[str, RunConfig]:
        """Each protocol's configuration, as the audit started, placed inside the audit folder."""
        configs = protocol_configs(self.state()["options"])
        for protocol, config in configs.items():
            config.out, config.name, config.reports = self.path, protocol, self.reports
        return configs


def open_audit(options: dict, given: dict, resume: bool) -> tuple[Audit, dict[str, RunConfig]]:
    """A new audit folder ``<out>/<name>`` (refused when it exists; nothing written yet:
    :func:`start_audit` writes it), or with ``resume`` the existing one, whose options the
    ones ``given`` now must not change. Every check runs before any work."""
    from bench.run import check_options, check_outputs, check_weights

    out, reports, name = Path(options["out"]), Path(options["reports"]), options.get("name")
    if resume:
        if not name:
            raise BenchError("--resume needs --name AUDIT (the audit folder to continue)")
        path = out / check_run_name(name)
        if not (path / AUDIT_JSON).is_file():
            raise BenchError(f"no audit to resume at {path} ({AUDIT_JSON} missing); check --out and --name")
        audit = Audit(path, Path(reports) / name)
        configs = audit.configs()
        check_options(configs["honest"], {k: v for k, v in given.items() if k not in OWN_OPTIONS}, name)
        for config in configs.values():  # DATA may be another mount of the same data (checked by content)
            config.data = Path(options["data"])
        check_writable(audit.reports, "--reports")
        return audit, configs
    name = check_run_name(name) if name else default_run_name().replace("run-", "audit-")
    audit = Audit(out / name, reports / name)
    if audit.path.exists() and any(audit.path.iterdir()):
        raise BenchError(f"audit folder {audit.path} already exists; continue it with --resume --name {name}, "
                         "or pass another --name")
    configs = protocol_configs(options)
    for protocol, config in configs.items():
        config.out, config.name, config.reports = audit.path, protocol, audit.reports
    check_outputs(RunConfig(out=out, reports=reports))
    check_weights(configs["honest"])
    if configs["honest"].mlflow:  # before any work: a server that is down costs nothing
        from bench.mlflow_tracking import check_server

        check_server(configs["honest"].mlflow)
    return audit, configs


def start_audit(audit: Audit, configs: dict[str, RunConfig], index) -> None:
    """Write the audit folder and its ``audit.json`` from the scan ``index`` (after the
    scan: bad data writes nothing)."""
    check_writable(audit.path, "--out")
    check_writable(audit.reports, "--reports")
    options = {k: v for k, v in configs["honest"].to_dict().items() if k not in ("out", "reports", "name")}
    write_json_atomic(audit.state_file, {
        "bench_version": __version__,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": str(index.root), "data_hash": index.content_hash(), "options": {**options, "data": str(index.root)},
        "finished": [],
    })


def same_data(audit: Audit, index) -> None:
    """Refuse data whose content differs from the data the audit started with."""
    if index.content_hash() != audit.state().get("data_hash"):
        raise BenchError(f"the data in {index.root} differs from the data audit {audit.name} started with (files "
                         "added, removed or edited); restore it, or start a new audit without --resume")


def run_protocols(audit: Audit, configs: dict[str, RunConfig], index=None, progress=None) -> list[str]:
    """Run every protocol not finished yet (honest, then naive), each with what ``bench run``
    does but the export: prepare (from ``index``, the one scan) or resume, search,
    leaderboard, report. Returns the protocols run now."""
    from bench.report import build_report
    from bench.run import execute, prepare_run, resume_run
    from bench.suite.runner import clear_unprepared

    sources: dict = {}  # built backbones, shared by both protocols
    done_now = []
    with RunLock(audit.path, ".audit-lock"):
        finished = set(audit.finished())
        for i, protocol in enumerate(PROTOCOLS, start=1):
            if protocol in finished:
                log.info(f"audit {audit.name}: protocol {i}/{len(PROTOCOLS)} {protocol}: finished earlier, skipped")
                continue
            config = configs[protocol]
            log.info(f"audit {audit.name}: protocol {i}/{len(PROTOCOLS)}: {protocol} ({describe(config)})")
            files = RunFiles(audit.run_dir(protocol))
            if files.run_json.exists():
                given = {"data": config.data} if config.data else {}
                run = resume_run(audit.path, protocol, {**given, "reports": audit.reports})
                log.info(f"{protocol}: resuming its run with the stored configuration and split")
            else:
                clear_unprepared(files)
                if index is None:  # resumed before this protocol was prepared
                    from bench.data.dicom import reading_window
                    from bench.data.scan import scan

                    with reading_window(config.window):
                        index = scan(config.data, progress=progress)
                    same_data(audit, index)
                run = prepare_run(config, progress, index=index)
            table = execute(run, sources=sources)
            if table is not None:
                build_report(run.path, audit.reports)
                if config.mlflow:
                    from bench.mlflow_tracking import log_run

                    log_run(config.mlflow, run.path, audit.reports)
            audit.mark_finished(protocol)
            done_now.append(protocol)
            crash_point("audit-protocol")
    return done_now


def describe(config: RunConfig) -> str:
    """How a protocol splits, in words."""
    if config.plain_split:
        return (f"one plain stratified random split, copies ignored, {100 * config.test_size:g} % test")
    repeats = f" x {config.repeats} repeats" if config.repeats > 1 else ""
    holdout = f", {100 * config.test_size:g} % held out" if config.test_size else ""
    return f"nested {config.cv}-fold cross-validation{repeats}, copies grouped{holdout}"
