"""What the search learned, for a cross-validated run's report (``bench run --cv K``):
every outer fold's search and the final model's, from their trials.csv and result.json."""

from __future__ import annotations

from bench.report import sections
from bench.report.cv_sections import FINAL, cv_metric, design, label
from bench.report.formatting import DASH, Table, display_name, head_description, lr, num, to_int
from bench.report.load import RunData


def search_section(data: RunData) -> dict:
    import pandas as pd

    objective, metric = data.objective, cv_metric(data)
    frames, per_backbone, failed = [], [], []
    for b in data.backbones:
        t = b.trials
        if t is not None and len(t):
            t = t.assign(backbone=b.name)
            if "status" not in t:
                t["status"] = "completed"
            done = t[t["status"].astype(str) == "completed"]
            if objective in done:
                frames.append(done[done[objective].notna()])
            for _, tr in t[t["status"].astype(str) != "completed"].iterrows():
                message = tr.get("message")
                failed.append([b.name, str(tr.get("search", DASH)), str(tr["trial"]), str(tr["status"]),
                               str(message) if isinstance(message, str) and message else "(no message recorded)"])
        rows = []
        for f in b.folds:
            hp = {k[3:]: v for k, v in f.items() if k.startswith("hp_")}
            ok = f.get("status") == "ok"
            rows.append([f"repeat {f['repeat'] + 1}, fold {f['fold'] + 1}", str(f.get("best_trial") or DASH),
                         num(f.get("val_objective")) if ok else "failed", num(f.get(f"test_{metric}")),
                         str(to_int(hp.get("unfreeze"))) if to_int(hp.get("unfreeze")) is not None else DASH,
                         head_description(hp) if ok else DASH, lr(hp.get("learning_rate"))])
        final = None
        if b.ok and b.trials is not None and {"search", "status", objective} <= set(b.trials.columns):
            mine = b.trials[(b.trials["search"] == FINAL) & (b.trials["status"].astype(str) == "completed")]
            if len(mine):
                final = {"table": sections.top_trials(mine, objective, data.minimise, b.row.get("best_trial")),
                         "total": len(mine), "scope": ", final model's search on all cross-validated images"}
        if rows or final:
            per_backbone.append({"backbone": display_name(b), "folds": Table(
                ["outer fold", "kept trial", f"inner {sections._objective_label(objective)} (optimistic)",
                 f"held-out fold {label(metric)}", "blocks fine-tuned", "head", "learning rate"],
                rows, [False, True, True, True, True, False, True]) if rows else None, "final": final})
    for b in data.failed:
        failed.append([b.name, DASH, DASH, "backbone failed", str(b.row.get("message") or "(no message recorded)")])
    d = design(data)
    return {
        "trials": pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
        "per_backbone": per_backbone,
        "failed": Table(["backbone", "search", "trial", "status", "message"], failed) if failed else None,
        "n_trials": int(sum(len(b.trials) for b in data.backbones if b.trials is not None)),
        "text": (f"Each backbone was searched {d['folds']} times, once inside each outer fold on its inner "
                 "train/validation split; the recommended backbone once more on all cross-validated images for the "
                 f"final model. The objective is {sections._objective_label(objective)} on the inner validation "
                 "split: it picks trials, and being the best of many tries it is optimistic; the held-out fold's "
                 "score beside it is the honest one."),
    }
