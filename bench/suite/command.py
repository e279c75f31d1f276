"""What ``bench suite`` does, callable without the CLI: read or make the suite, run each
dataset, then the verdict across datasets and the suite report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.suite.runner import Suite, open_suite, run_suite
from bench.suite.spec import ROPE_BOUNDS, SuiteSpec, build_spec, parse_suite

log = logging.getLogger("bench")
#: --rope when not given: differences of the objective up to this size count as none.
DEFAULT_ROPE = 0.01


@dataclass
class SuiteOutcome:
    suite: Suite
    verdict: dict | None = None  # verdict.json's content; None for a distributed worker
    report: object = None  # bench.report.build.Report of the suite report
    ran: list[str] | None = None


def check_rope(rope: float) -> float:
    low, high = ROPE_BOUNDS
    if not (low <= rope <= high):  # also refuses nan
        raise BenchError(f"--rope must be between {low:g} and {high:g} (a difference of the objective counted as "
                         f"none), got {rope}")
    return float(rope)


def demo_spec(overrides: dict) -> SuiteSpec:
    """The demo suite (:mod:`bench.suite.demo`), its datasets generated on first use."""
    import sys

    from bench.suite.demo import demo_datasets, demo_toml

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    text = demo_toml(demo_datasets())
    raw = tomllib.loads(text)
    return build_spec(raw["run"], raw["datasets"], Path("."), overrides, text)


def suite(suite_file: Path | None, *, demo: bool = False, resume: bool = False, rope: float = DEFAULT_ROPE,
          export: bool = True, out: Path = Path("results"), reports: Path = Path("reports"), name: str | None = None,
          overrides: dict | None = None, cluster=None, progress=None) -> SuiteOutcome:
    """Run (or resume) a suite and write its verdict and report."""
    check_rope(rope)
    overrides = dict(overrides or {})
    if demo and suite_file is not None:
        raise BenchError("pass a suite file or --demo, not both")
    if demo and resume:
        spec = None  # the stored suite
    elif demo:
        spec = demo_spec(overrides)
    elif suite_file is not None:
        spec = parse_suite(suite_file, overrides)
    else:
        spec = None
    if spec is not None and spec.shared.get("mlflow"):  # before any work: a server that is down costs nothing
        from bench.mlflow_tracking import check_server

        check_server(spec.shared["mlflow"])
    opened = open_suite(spec, out, name, reports, resume, cluster)
    ran = run_suite(opened, export=export, cluster=cluster, progress=progress)
    if cluster is not None and not cluster.is_chief:
        return SuiteOutcome(opened, ran=ran)
    from bench.report.suite_report import build_suite_report
    from bench.suite.verdict import write_verdict

    verdict = write_verdict(opened, rope)
    report = build_suite_report(opened.path, opened.reports)
    return SuiteOutcome(opened, verdict, report, ran)
