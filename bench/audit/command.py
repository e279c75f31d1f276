"""``bench audit DATA --claim METRIC=VALUE``: what the command does (:func:`audit`, callable
without the CLI) and its typer function (:func:`audit_cmd`, registered by :mod:`bench.cli`)."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from bench.audit.claim import parse_claim
from bench.audit.runner import DEFAULT_CV, OWN_OPTIONS, Audit, open_audit, run_protocols, start_audit
from bench.cli_options import explicit_options, typer_parameters

log = logging.getLogger("bench")


@dataclass
class AuditOutcome:
    audit: Audit
    findings: dict  # audit.json's findings (bench.audit.verdict)
    report: object  # bench.report.build.Report of the audit report
    ran: list[str]


def audit(data: Path, claim: str, options: dict, given: dict | None = None, resume: bool = False,
          progress=None) -> AuditOutcome:
    """Run (or resume) the honest and the naive protocol on ``data``, judge ``claim``
    (``METRIC=VALUE``) and write audit.json and the audit report. ``options``: every
    ``bench run`` option (as given or by default); ``given``: those given explicitly,
    which ``resume`` refuses to change."""
    from bench.audit.verdict import write_verdict
    from bench.report.audit_report import build_audit_report

    judged = parse_claim(claim)  # before any work
    options = {**options, "data": Path(data)}
    opened, configs = open_audit(options, dict(given or {}), resume)
    index = None
    if not resume:
        from bench.data.dicom import reading_window
        from bench.data.scan import scan

        with reading_window(configs["honest"].window):
            index = scan(configs["honest"].data, progress=progress)
        for config in configs.values():
            config.data = index.root
        start_audit(opened, configs, index)
    ran = run_protocols(opened, configs, index, progress)
    found = write_verdict(opened, judged)
    return AuditOutcome(opened, found, build_audit_report(opened.path, opened.reports), ran)


def audit_cmd(ctx: typer.Context, data: Annotated[Path, typer.Argument(
        help="Folder with one sub-folder per class.", show_default=False)], *, claim: Annotated[str, typer.Option(
            "--claim", help="The reported number to check, METRIC=VALUE: accuracy=0.96, roc_auc=0.91, f1=0.9 "
                            "(any metric the leaderboard reports with an interval; 96% also reads as 0.96).",
            show_default=False)], resume: bool = False, **options) -> None:
    """Check a reported metric: the honest protocol (nested CV, copies grouped, floor
    baselines) beside the naive one (one plain split, copies ignored), and a one-page report."""
    from bench.terminal import console, quiet_tensorflow, scan_with_progress

    parse_claim(claim)  # a bad claim costs nothing
    quiet_tensorflow()
    from bench.audit.summary import summary_lines
    from bench.progress import live_display

    given = {k: v for k, v in explicit_options(ctx).items() if k not in ("data", "claim", "resume")}
    values = {k: v.value if isinstance(v, Enum) else v for k, v in options.items()}
    with live_display(console):
        outcome = scan_with_progress(audit, data, claim, values, given, resume)
    for line in summary_lines(outcome):
        typer.echo(line)


_RESUME = inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
    bool, typer.Option("--resume", help="Continue the audit --name: finished protocols are not run again, the one "
                                        "in progress keeps its finished backbones and trials; another --claim is "
                                        "judged against the same runs.")])
_CV = inspect.Parameter("cv", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
    Optional[int], typer.Option("--cv", show_default=str(DEFAULT_CV), help=(
        "Outer folds of the honest protocol's nested, group-aware cross-validation (the naive protocol is one "
        "plain split)."))])
audit_cmd.__signature__ = inspect.Signature([
    *list(inspect.signature(audit_cmd, eval_str=True).parameters.values())[:3], _RESUME,
    *(_CV if p.name == "cv" else p for p in typer_parameters() if p.name not in OWN_OPTIONS)])
