"""The suite report: ``<reports>/<suite>/suite.md`` and ``suite.html``, from the suite folder alone.

Reads ``suite.json`` (the datasets and shared options as the suite started) and
``verdict.json`` (:mod:`bench.suite.verdict`); each dataset's own report sits beside it in
``<reports>/<suite>/<dataset>/report.html`` and is linked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.atomic import read_json
from bench.errors import BenchError
from bench.report.build import Report, _environment, write_pages
from bench.report.formatting import Table
from bench.runfolder import SUITE_JSON, VERDICT_JSON, check_writable, is_suite_dir



def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _p(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def estimates_table(verdict: dict) -> Table:
    from bench.evaluate.suite_table import verdict_rows

    models = verdict["models"]
    rows = verdict_rows(verdict, " · rank {:g}")
    across = verdict["across"]
    floor = ["best floor baseline"] if verdict.get("floor") else []
    blank = [""] * len(floor)
    rows.append(["ranked first", "", *(f"{c} of {across['n_ranked']}" for c in across["first"]), *blank])
    if across.get("probability_best") is not None:
        rows.append(["probability best", "", *(_num(v) for v in across["probability_best"]), *blank])
    return Table(["dataset", "estimate", *models, *floor], rows, [False, False, *([True] * (len(models) + len(floor)))])


def floor_table(verdict: dict) -> Table | None:
    """Per dataset: its best floor baseline with its estimate, and each backbone's reading
    against it (the paired tests of that dataset's report)."""
    from bench.evaluate.floor import READING_WORDS
    from bench.evaluate.suite_table import floor_text

    floors = verdict.get("floor") or []
    if not floors:
        return None
    models = verdict["models"]
    rows = []
    for f in floors:
        cells = []
        for m in models:
            r = f["readings"].get(m)
            cells.append("-" if r is None else READING_WORDS[r] + (f" ({f['tests'][m]})" if f["tests"].get(m) else ""))
        rows.append([f["dataset"], floor_text(f), *cells])
    return Table(["dataset", "best floor baseline", *models], rows, [False, True, *([False] * len(models))])


def pairs_table(verdict: dict) -> Table:
    rows = []
    for p in verdict["across"]["pairs"]:
        wilcoxon = _p(p["p_holm"]) if not p["wilcoxon_reason"] else p["wilcoxon_reason"]
        bayes = (f"{_num(p['p_a_better'])} / {_num(p['p_rope'])} / {_num(p['p_b_better'])}"
                 if not p["bayes_reason"] else p["bayes_reason"])
        rows.append([f"{p['a']} vs {p['b']}", str(p["n"]), f"{p['wins']} / {p['ties']} / {p['losses']}",
                     _p(p["p_value"]) if not p["wilcoxon_reason"] else "-", wilcoxon, bayes])
    return Table(["pair (A vs B)", "datasets", "A: wins / ties / losses", "Wilcoxon p", "Holm-adjusted p",
                  "P(A better) / P(equivalent) / P(B better)"], rows, [False, True, True, True, True, True])


def datasets_table(verdict: dict, suite: dict, reports_dir: Path) -> Table:
    rows = []
    for ds in verdict["datasets"]:
        link = f"{ds['name']}/report.html"
        have = (reports_dir / ds["name"] / "report.html").is_file()
        rows.append([ds["name"], ", ".join(ds["classes"]), ds["estimate"], ds["path"], link if have else "-"])
    for name in verdict.get("unfinished", []):
        rows.append([name, "-", "not finished", "-", "-"])
    return Table(["dataset", "classes", "estimate compared", "data", "report"], rows)


def _figures(verdict: dict) -> dict:
    """The heatmap, the critical-difference diagram and the Bayesian matrix (None where
    there is nothing to draw)."""
    from bench.report.figures import style
    from bench.report.rendering import as_figure
    from bench.report import suite_figures as F

    across, models = verdict["across"], verdict["models"]
    by = {(r["dataset"], r["backbone"]): r for r in verdict["estimates"]}
    names = [d["name"] for d in verdict["datasets"]]

    def grid(key):
        return np.array([[np.nan if by[(d, m)][key] is None or by[(d, m)]["status"] != "ok" else by[(d, m)][key]
                          for m in models] for d in names], dtype=float)

    out = {}
    with style():
        out["heatmap"] = as_figure(
            "suite-heatmap", F.scores_heatmap(
                names, models, grid("value"), grid("ci_low"), grid("ci_high"),
                [d["estimate"] + ("" if d["maximise"] else ", lower is better") for d in verdict["datasets"]],
                ranks=np.array(across["ranks"], dtype=float)),
            "Every dataset x backbone", "Each cell: the held-out estimate with its 95 % group-bootstrap interval; "
            "the colour is the rank on that dataset (darker is better).")
        nem = across["nemenyi"]
        out["cd"] = as_figure(
            "suite-cd", F.cd_diagram(models, np.array(across["mean_ranks"], dtype=float),
                                     np.array(nem["p_values"], dtype=float), nem["cd"], nem["alpha"])
            if nem["computed"] else None,
            "Critical-difference diagram",
            f"Mean rank of each backbone across {across['n_ranked']} datasets (1 = best); backbones joined by a "
            f"bar are not significantly different by the Nemenyi test at \u03b1 = {nem['alpha']:g}; the CD interval "
            "is the smallest difference of mean ranks that is.")
        matrix = np.array([[[np.nan] * 3 for _ in models] for _ in models], dtype=float)
        for p in across["pairs"]:
            i, j = models.index(p["a"]), models.index(p["b"])
            vals = [np.nan if v is None else v for v in (p["p_a_better"], p["p_rope"], p["p_b_better"])]
            matrix[i, j] = vals
            matrix[j, i] = vals[::-1]
        out["bayes"] = as_figure(
            "suite-bayes", F.bayes_matrix(models, matrix) if not np.isnan(matrix).all() else None,
            "Bayesian signed-rank test, every pair",
            f"Row against column: P(row better), P(practically equivalent: within the ROPE of {verdict['rope']:g}), "
            "P(column better), from the Bayesian signed-rank test over the datasets (Benavoli et al. 2017).")
    return out


def build_suite_report(suite_dir: Path, reports_dir: Path) -> Report:
    """Write ``<reports_dir>/suite.md`` and ``suite.html`` for the suite folder ``suite_dir``
    (``reports_dir`` is the suite's own report folder, which holds each dataset's report)."""
    suite_dir = Path(suite_dir)
    if not is_suite_dir(suite_dir):
        raise BenchError(f"{suite_dir} is not a suite folder (no {SUITE_JSON}); pass a folder written by "
                         "`bench suite`")
    suite = read_json(suite_dir / SUITE_JSON)
    path = suite_dir / VERDICT_JSON
    if not path.is_file():
        raise BenchError(f"{suite_dir} has no {VERDICT_JSON} yet; finish it with `bench suite --resume --name "
                         f"{suite_dir.name}`")
    verdict = read_json(path)
    out = check_writable(Path(reports_dir), "--reports")
    figs = _figures(verdict)
    across = verdict["across"]
    ctx = {
        "name": suite_dir.name, "verdict": verdict, "suite": suite, "across": across, "fig": figs,
        "estimates": estimates_table(verdict), "pairs": pairs_table(verdict), "floor": floor_table(verdict),
        "datasets": datasets_table(verdict, suite, out),
        "num": _num, "p": _p, "shared": sorted(suite["spec"]["shared"].items()),
        "command": " ".join(suite.get("command", [])),
        "regenerate": f"bench report {suite_dir}",
    }
    env = _environment()
    markdown = env.get_template("suite.md.j2").render(**ctx)
    html = env.get_template("suite.html.j2").render(**ctx)
    md_path, html_path = write_pages(out, "suite", markdown, html, [f for f in figs.values() if f is not None],
                                     stale=["fig-suite-heatmap.png", "fig-suite-cd.png", "fig-suite-bayes.png"])
    return Report(md_path, html_path, verdict["sentence"])
