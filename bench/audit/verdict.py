"""The audit's findings, from its two run folders alone: each protocol's estimate of the
claimed metric with its 95 % interval and the model it is about, each protocol's best
floor baseline, how many naive test images have a copy in the naive train split, and the
verdict on the claim. :func:`write_verdict` adds them to ``audit.json``; the audit report
(:mod:`bench.report.audit_report`) and the command's last lines read them from there.
"""

from __future__ import annotations

from datetime import datetime, timezone

from bench.atomic import write_json_atomic
from bench.audit.claim import ABOVE, BELOW, INSIDE, UNKNOWN, Claim, judge, oriented_best, verdict_sentence
from bench.audit.runner import Audit, describe
from bench.config import OBJECTIVE_LABELS, RunConfig
from bench.data.audit import copies_across
from bench.evaluate.crossval import CV_METRIC
from bench.runfolder import RunFiles
from bench.schema import BACKBONE_KIND, FLOOR_KIND, Estimate, Source, label, metric


def _rows(audit: Audit, protocol: str) -> list[dict]:
    files = RunFiles(audit.run_dir(protocol))
    return files.read_leaderboard() if files.has_leaderboard else []


def _entry(row: dict | None, claim: Claim, source: Source) -> dict:
    """A row's estimate of the claimed metric: value, interval, the text ``0.87 [0.82, 0.91]``."""
    estimate = Estimate.read(row or {}, claim.metric, source)
    return {"model": None if row is None else row["backbone"], "value": None if estimate.missing else estimate.value,
            "ci_low": estimate.low if estimate.has_interval else None,
            "ci_high": estimate.high if estimate.has_interval else None, "text": estimate.text(3, 2)}


def estimate_of(entry: dict, claim: Claim, source: Source) -> Estimate:
    """An entry of :func:`_entry` back as an :class:`~bench.schema.Estimate`."""
    from bench.schema import to_float

    return Estimate(metric(claim.metric), source, to_float(entry.get("value")), to_float(entry.get("ci_low")),
                    to_float(entry.get("ci_high")))


def _winner(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r.get("rank") == 1), None)


def protocol_entry(rows: list[dict], claim: Claim, config: RunConfig, source: Source) -> dict:
    """One protocol: how it splits, its first-ranked backbone's estimate and what it is
    about, and its best floor baseline by the claimed metric."""
    winner = _winner(rows)
    backbones = [r for r in rows if r.get("kind", BACKBONE_KIND) != FLOOR_KIND]
    floors = [r for r in rows if r.get("kind") == FLOOR_KIND and r.get("status") == "ok"]
    objective = config.search.objective

    def ranked(how: str) -> str:
        return f", ranked first of {len(backbones)} backbones by {how}" if len(backbones) > 1 else ", the only backbone"

    entry = {"protocol": describe(config), **_entry(winner, claim, source)}
    if winner is None:
        entry["about"] = f"no backbone finished ({len(backbones)} tried); see its leaderboard.csv"
    elif source is Source.OUT_OF_FOLD:
        entry["n"] = winner.get("cv_images")
        entry["about"] = (f"{winner['backbone']}{ranked(f'the cross-validated {label(CV_METRIC[objective])}')}: its out-of-fold "
                          f"predictions of {winner.get('cv_images')} images, each made by the model that its outer "
                          "fold searched and chose without that image, so the estimate is of the procedure (search, "
                          "choose, train) rather than of one trained model; interval: bootstrap over duplicate groups"
                          + ("; the backbone was picked on this same estimate, which favours it slightly"
                             if len(backbones) > 1 else ""))
    else:
        entry["n"] = winner.get("test_n")
        entry["about"] = (f"{winner['backbone']}{ranked(OBJECTIVE_LABELS[objective])}: the one model trained on "
                          f"the plain split's train images, scored once on its {winner.get('test_n')} test images; "
                          "interval: bootstrap over the duplicate groups of those test images")
    best = oriented_best(floors, claim.metric, source)
    entry["baseline"] = None if best is None else {**_entry(best, claim, source), "about": best.get("floor_model")}
    if entry["baseline"] and entry["ci_low"] is not None:  # where the baseline lies against the model's interval
        baseline = Claim(claim.metric, entry["baseline"]["value"])
        versus = judge(baseline, estimate_of(entry, claim, source))
        better = ABOVE if metric(claim.metric).higher_is_better else BELOW
        entry["baseline"].update(versus_model=versus, beats_model=versus == better)
    return entry


def copies_entry(split: dict) -> dict:
    """How the naive split treats copies (its split.json): test images with a copy in train
    (and in val), and the linked pairs it puts on different sides."""
    files = split.get("files") or []
    return {"test_images": sum(1 for f in files if f["split"] == "test"),
            "with_copy_in_train": copies_across(files, "test", "train"),
            "with_copy_in_val": copies_across(files, "test", "val"),
            "pairs_crossing": sum(int(a.get("bench_crossing") or 0) for a in split.get("leakage_audit") or []),
            "pairs": sum(int(a.get("pairs") or 0) for a in split.get("leakage_audit") or [])}


def honest_crossing(audit: Audit) -> int | None:
    """Held-out images of the honest run's outer folds (all repeats) with a copy in their
    fold's train split: 0 when every group stays whole; None without folds.json."""
    from bench.data.folds import read_folds

    files = RunFiles(audit.run_dir("honest"))
    if not files.folds_json.is_file():
        return None
    plan = read_folds(files.folds_json)
    return sum(copies_across(plan.split(r, f).files, "test", "train") for r in range(plan.repeats)
               for f in range(plan.k))


def findings(audit: Audit, claim: Claim) -> dict:
    """Everything the verdict says, as audit.json stores it."""
    configs = audit.configs()
    honest = protocol_entry(_rows(audit, "honest"), claim, configs["honest"], Source.OUT_OF_FOLD)
    naive = protocol_entry(_rows(audit, "naive"), claim, configs["naive"], Source.TEST)
    split = RunFiles(audit.run_dir("naive")).read_split() or {}
    copies = {**copies_entry(split), "honest_with_copy_in_train": honest_crossing(audit)}
    honest_estimate = estimate_of(honest, claim, Source.OUT_OF_FOLD)
    verdict = judge(claim, honest_estimate)
    reason = honest["about"] if honest["model"] is None else f"{honest['model']} has no {claim.metric} interval"
    sentence = verdict_sentence(claim, verdict, honest_estimate, estimate_of(naive, claim, Source.TEST),
                                honest["protocol"], copies, reason)
    return {"claim": claim.as_dict(), "verdict": verdict, "inside": None if verdict == UNKNOWN else verdict == INSIDE,
            "honest": honest, "naive": naive, "copies": copies, "sentence": sentence,
            "judged": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_verdict(audit: Audit, claim: Claim) -> dict:
    """Judge ``claim`` against the audit's runs; add the findings to ``audit.json`` and return them."""
    found = findings(audit, claim)
    write_json_atomic(audit.state_file, {**audit.state(), **found})
    return found
