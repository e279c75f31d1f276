"""The audit report: ``<reports>/<audit>/audit.md`` and ``audit.html``, one page, from the
audit folder's ``audit.json`` alone (:mod:`bench.audit.verdict` wrote its findings); each
protocol's own report sits beside it in ``<reports>/<audit>/<protocol>/report.html`` and is
linked."""

from __future__ import annotations

import math
from pathlib import Path

from bench.atomic import read_json
from bench.errors import BenchError
from bench.report.build import Report, _environment, write_pages
from bench.report.formatting import Table
from bench.runfolder import AUDIT_JSON, check_writable, is_audit_dir

PROTOCOLS = ("honest", "naive")
COLOURS = {"honest": "#0969da", "naive": "#cf222e", "floor": "#6e7781"}


def protocol_rows(found: dict) -> list[list[str]]:
    """One row per protocol: how it splits, its model, the estimate, the images it rests
    on, test images with a copy in train, its best floor baseline."""
    copies = found["copies"]
    rows = []
    for protocol in ("honest", "naive"):
        entry = found[protocol]
        baseline = entry.get("baseline")
        crossing = (f"{copies['with_copy_in_train']} of {copies['test_images']}" if protocol == "naive"
                    else "-" if copies.get("honest_with_copy_in_train") is None
                    else f"{copies['honest_with_copy_in_train']} (all folds)")
        rows.append([protocol, entry["protocol"], entry["model"] or "-", entry["text"],
                     "-" if entry.get("n") is None else str(entry["n"]), crossing,
                     "-" if baseline is None else f"{baseline['model']} {baseline['text']}"])
    return rows


def protocols_table(found: dict) -> Table:

    return Table(["protocol", "split", "model", f"{found['claim']['label']} [95 % CI]", "images",
                  "test images with a copy in train", "best floor baseline"], protocol_rows(found),
                 [False, False, False, True, True, True, False])


def _points(found: dict) -> list[tuple[str, str, dict]]:
    """(label, colour key, entry) of every estimate the figure draws, top to bottom."""
    points = []
    for protocol in PROTOCOLS:
        entry = found[protocol]
        if entry.get("value") is not None:
            points.append((f"{protocol}: {entry['model']}", protocol, entry))
        baseline = entry.get("baseline")
        if baseline and baseline.get("value") is not None:
            points.append((f"{protocol} floor: {baseline['model']}", "floor", baseline))
    return points


def intervals_figure(found: dict):
    """Each protocol's estimate and best floor baseline with their 95 % intervals, and the
    claimed value as a vertical line; None with nothing to draw."""
    from bench.report.figures import new_figure

    points = _points(found)
    if not points:
        return None
    claim = found["claim"]
    fig, (ax,) = new_figure(7.4, 0.9 + 0.42 * len(points))
    ys = list(range(len(points)))[::-1]
    values = [claim["value"]]
    for y, (label, colour, entry) in zip(ys, points):
        v, lo, hi = entry["value"], entry.get("ci_low"), entry.get("ci_high")
        values += [x for x in (v, lo, hi) if x is not None]
        err = [[v - lo if lo is not None else 0], [hi - v if hi is not None else 0]]
        ax.errorbar(v, y, xerr=err, fmt="o", color=COLOURS[colour], elinewidth=2.2, capsize=4, markersize=7)
        ax.annotate(f"{v:.3f}", (v, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=8.5,
                    color="#444444")
    low, high = min(values), max(values)
    pad = max(0.03, 0.08 * (high - low))
    ax.set_xlim(max(-0.02, low - pad), min(1.02, high + pad))
    ax.axvline(claim["value"], color="#1f2328", lw=1.4, ls="--")
    right = claim["value"] > sum(ax.get_xlim()) / 2  # the label on the side with room
    ax.annotate(f"claim {claim['text']}", (claim["value"], len(points) - 0.45), xytext=(-5 if right else 5, 0),
                textcoords="offset points", fontsize=9, va="center", ha="right" if right else "left",
                color="#1f2328")
    ax.set_ylim(-0.6, len(points) - 0.2)
    ax.set_yticks(ys, [label for label, _, _ in points])
    ax.set_xlabel(f"{claim['label']}, bars: 95 % bootstrap interval")
    return fig


def _figure(found: dict):
    from bench.report.figures import style
    from bench.report.rendering import as_figure

    with style():
        return as_figure(
            "audit-intervals", intervals_figure(found), "The claim against both protocols",
            "Points: each protocol's estimate of the claimed metric for its first-ranked backbone, and its best floor "
            "baseline (a model that never looks at anatomy, or a linear probe); bars: 95 % bootstrap intervals. "
            "Dashed line: the claimed value.")


def build_audit_report(audit_dir: Path, reports_dir: Path) -> Report:
    """Write ``<reports_dir>/audit.md`` and ``audit.html`` for the audit folder ``audit_dir``
    (``reports_dir``: the audit's own report folder, which holds each protocol's report)."""
    audit_dir = Path(audit_dir)
    if not is_audit_dir(audit_dir):
        raise BenchError(f"{audit_dir} is not an audit folder (no {AUDIT_JSON}); pass a folder written by "
                         "`bench audit`")
    found = read_json(audit_dir / AUDIT_JSON)
    if "sentence" not in found:
        raise BenchError(f"{audit_dir} has no verdict yet; finish it with `bench audit DATA --claim METRIC=VALUE "
                         f"--resume --name {audit_dir.name}`")
    out = check_writable(Path(reports_dir), "--reports")
    fig = _figure(found)
    links = [(p, f"{p}/report.html") for p in PROTOCOLS if (out / p / "report.html").is_file()]
    ctx = {
        "name": audit_dir.name, "found": found, "claim": found["claim"], "copies": found["copies"],
        "honest": found["honest"], "naive": found["naive"], "fig": fig, "protocols": protocols_table(found),
        "links": links, "command": " ".join(found.get("command", [])), "regenerate": f"bench report {audit_dir}",
        "outside": found["verdict"] in ("above", "below"), "pct": _pct,
    }
    env = _environment()
    markdown = env.get_template("audit.md.j2").render(**ctx)
    html = env.get_template("audit.html.j2").render(**ctx)
    md_path, html_path = write_pages(out, "audit", markdown, html, [fig] if fig else [],
                                     stale=["fig-audit-intervals.png"])
    return Report(md_path, html_path, found["sentence"])


def _pct(part, whole) -> str:
    if not whole or part is None or (isinstance(part, float) and math.isnan(part)):
        return "-"
    return f"{100 * part / whole:.0f} %"
