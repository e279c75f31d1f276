"""The floor across a suite: on each dataset, the best floor baseline and whether each
backbone beats it beyond noise.

Each dataset's run already scores its floor baselines (majority, content-logistic, one
linear probe per backbone: :mod:`bench.evaluate.floor`) on the same held-out images as
its backbones. Here the best of them on each dataset (by the estimate that ranks the
backbones there) is compared with every backbone by the same paired tests that dataset's
report uses (McNemar, DeLong; Holm-adjusted over the backbones:
:func:`bench.report.floor_section.versus_best_floor`); the reading is +1 (beats it), 0 (no
difference beyond noise) or -1 (below it). The floor never takes part in the ranks across
datasets: it says whether the winner learned more than a trivial model would.
"""

from __future__ import annotations

from bench.evaluate.floor import p_values_text, reading


def dataset_floor(ds) -> dict:
    """``ds``'s (:class:`bench.evaluate.suite_table.DatasetResult`) best floor baseline,
    its estimate and interval, and each backbone's reading against it."""
    from bench.report.floor_section import versus_best_floor
    from bench.report.load import load_run

    best, tests = versus_best_floor(load_run(ds.run_dir))
    if best is None:
        return {"dataset": ds.name, "metric": ds.metric, "floor": None, "value": None, "ci_low": None, "ci_high": None,
                "readings": {}, "tests": {}}
    est = ds.estimate(best.name)
    return {"dataset": ds.name, "metric": ds.metric, "floor": best.name, "value": est.value, "ci_low": est.low, "ci_high": est.high,
            "readings": {t.a: reading(t) for t in tests}, "tests": {t.a: p_values_text(t) for t in tests}}


def floor_sentence(floors: list[dict], model: str) -> str:
    """In words: on how many datasets ``model`` (the suite's first by mean rank) beats the
    best floor baseline beyond noise, and where no backbone does."""
    scored = [f for f in floors if f["floor"] is not None]
    if not scored:
        return "No dataset has a finished floor baseline, so none says what a trivial model scores."
    beats = [f["dataset"] for f in scored if f["readings"].get(model) == 1]
    below = [f["dataset"] for f in scored if f["readings"].get(model) == -1]
    text = (f"Against each dataset's best floor baseline (a model that never looks at anatomy, or a linear probe "
            f"on frozen features), {model} is better beyond noise on {len(beats)} of {len(scored)} datasets"
            + (f" ({_join(beats)})" if beats and len(beats) < len(scored) else ""))
    if below:
        text += f" and worse on {_join(below)}"
    text += "."
    nobody = [f["dataset"] for f in scored if not any(r == 1 for r in f["readings"].values())]
    if nobody:
        where = "On no dataset does any backbone" if len(nobody) == len(scored) and len(scored) > 1 else \
            f"On {_join(nobody)} no backbone"
        text += (f" {where} beat{'' if where.startswith('On no') else 's'} its floor baseline: there the scores may "
                 "come from what the floor already sees.")
    return text


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
