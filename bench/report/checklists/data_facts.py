"""Facts about the study, the data and its partitions (see :mod:`bench.report.checklists.evidence`)."""

from __future__ import annotations

from bench.report.checklists.facts import Fact, Run, _ci, _n, _plural
from bench.runfolder import COPIES_PNG, DATASET_JSON, FOLDS_JSON, GROUPS_CSV, LEADERBOARD_JSON, RUN_JSON, SPLIT_JSON
from bench.schema import to_float


# --------------------------------------------------------------------------- the study


def task(r: Run) -> Fact | None:
    classes, names = r.data.classes, [b.name for b in r.data.backbones]
    if not classes or not names or not r.has(RUN_JSON):
        return None
    weights = r.config.get("weights", "imagenet")
    return r.fact(f"deep learning: image classification into {len(classes)} classes ({', '.join(classes)}) by "
                  f"{len(names)} candidate image backbone{'s' if len(names) != 1 else ''} ({', '.join(names)}), "
                  f"starting weights {weights}, each with a searched classification head",
                  (RUN_JSON, DATASET_JSON, SPLIT_JSON))


def design(r: Run) -> Fact | None:
    if not r.has(RUN_JSON) or not r.data.backbones:
        return None
    if r.cv:
        how = (f"nested cross-validation ({r.config.get('cv')} outer folds x {r.config.get('repeats') or 1} repeats; "
               "out-of-fold estimates)" + (", and an untouched holdout" if r.data.holdout_n else ""))
    else:
        how = "a single train / validation / test split (test used once, after the choice)"
    return r.fact(f"model development and internal evaluation: {_plural(len(r.data.backbones), 'candidate model')} "
                  f"compared by {how}; one model recommended", (RUN_JSON, SPLIT_JSON, FOLDS_JSON), ("summary",))


def summary(r: Run) -> Fact | None:
    if r.best is None:
        return None
    auc, acc = r.estimate("roc_auc"), r.estimate("accuracy")
    shown = [f"{e.metric.label} {_ci(e)}" for e in (auc, acc) if not e.missing]
    return r.fact(f"recommended: {r.best.name}; {r.held_out} " + (", ".join(shown) or "metrics in the leaderboard"),
                  (LEADERBOARD_JSON,), ("summary", "leaderboard"))


def source(r: Run) -> Fact | None:
    d = r.data.dataset
    if not d.get("root"):
        return None
    n = sum(_n(v) for v in (d.get("counts") or {}).values())
    synthetic = " (bench's synthetic demo images)" if d.get("synthetic") or r.data.run.get("synthetic_data") else ""
    digest = r.data.run.get("data_hash")
    return r.fact(f"one image folder, {d['root']}{synthetic}: {n} readable images"
                  + (f"; content hash {digest[:16]}... identifies the exact files" if digest else ""),
                  (DATASET_JSON, RUN_JSON), ("data",))


def inclusion(r: Run) -> Fact | None:
    d = r.data.dataset
    if not d:
        return None
    skipped, conflicts = len(d.get("skipped") or []), len(r.data.split.get("label_conflicts") or [])
    return r.fact(f"every readable image under a class folder is included; {skipped} file(s) skipped with their "
                  f"reason; {conflicts} label conflict(s) (a copy filed under another class) excluded",
                  (DATASET_JSON, SPLIT_JSON), ("data",))


def quality(r: Run) -> Fact | None:
    d, s = r.data.dataset, r.data.split
    if not d or not s:
        return None
    groups, check = s.get("duplicate_groups") or [], s.get("shortcut_check") or {}
    parts = [f"unreadable files skipped ({len(d.get('skipped') or [])})",
             f"exact duplicates found ({len(d.get('exact_duplicates') or [])} sets)",
             f"{len(groups)} groups of linked copies kept within one partition"]
    if check.get("auc") is not None:
        parts.append(f"a shortcut check of file attributes (AUC {to_float(check['auc']):.2f})")
    return r.fact("quality checks: " + "; ".join(parts), (DATASET_JSON, SPLIT_JSON, GROUPS_CSV, COPIES_PNG), ("data",))


def preprocessing(r: Run) -> Fact | None:
    size, families = r.config.get("image_size"), sorted({str(b.row.get("family")) for b in r.data.ok})
    if not size or not families:
        return None
    augment = (f"augmentation on ({r.config.get('aug_views')} views)" if r.config.get("augment")
               else "no augmentation")
    return r.fact(f"every image alike: decoded to RGB, padded to a centred square, resized to {size} x {size} px, "
                  f"then scaled by each backbone's own preprocessing (families: {', '.join(families)}); {augment}",
                  (RUN_JSON, LEADERBOARD_JSON))


def outcome(r: Run) -> Fact | None:
    counts = r.data.dataset.get("counts") or {}
    if not counts:
        return None
    return r.fact("the label of an image is the name of its class folder: "
                  + ", ".join(f"{c} {_n(n)}" for c, n in counts.items()), (DATASET_JSON,), ("data",))


def inputs(r: Run) -> Fact | None:
    files = [f for f in r.data.dataset.get("files") or [] if f.get("width")]
    size = r.config.get("image_size")
    if not files or not size:
        return None
    formats = sorted({str(f.get("format")) for f in files})
    modes = sorted({str(f.get("mode")) for f in files})
    w, h = [int(f["width"]) for f in files], [int(f.get("height") or 0) for f in files]
    return r.fact(f"the predictors are the pixels of each image at {size} px, no hand-picked or pre-selected "
                  f"features; formats {', '.join(formats)}, modes {', '.join(modes)}, sizes {min(w)}x{min(h)} to "
                  f"{max(w)}x{max(h)} px", (DATASET_JSON, RUN_JSON))


def sizes(r: Run) -> Fact | None:
    parts = r.data.split.get("sizes") or {}
    if not parts:
        return None
    text = "; ".join(f"{name} {sum(_n(v) for v in counts.values())} ("
                     + ", ".join(f"{c} {_n(v)}" for c, v in counts.items()) + ")"
                     for name, counts in parts.items() if sum(_n(v) for v in counts.values()))
    if r.cv and r.data.folds is not None:
        text += f"; cross-validation over {r.config.get('cv')} outer folds (folds.json)"
    return r.fact("images per partition and class: " + text, (SPLIT_JSON, FOLDS_JSON), ("data",))


def precision(r: Run) -> Fact | None:
    e = next((e for e in (r.estimate("roc_auc"), r.estimate("accuracy")) if e.has_interval), None)
    if e is None:
        return None
    return r.fact(f"at this size the 95 % interval of the recommended model's {r.held_out} {e.metric.label} is "
                  f"{e.low:.2f} to {e.high:.2f} (width {e.high - e.low:.2f})", (LEADERBOARD_JSON,), ("summary",))


def missing(r: Run) -> Fact | None:
    d = r.data.dataset
    if not d:
        return None
    return r.fact(f"an image has no missing values; {len(d.get('skipped') or [])} unreadable file(s) are left out "
                  "with their reason, nothing is imputed", (DATASET_JSON,), ("data",))


# --------------------------------------------------------------------------- partitions


def partition(r: Run) -> Fact | None:
    s = r.data.split
    if not s.get("sizes"):
        return None
    unit = ("single images assigned at random (--plain-split: copies and --groups ignored)"
            if r.config.get("plain_split") else "whole groups of copies assigned at random")
    text = (f"{unit}, stratified by class, seed {s.get('seed')}: validation "
            f"{s.get('val_size')}, test {s.get('test_size')} of the images")
    if r.cv:
        text += f"; {r.config.get('cv')} outer folds x {r.config.get('repeats') or 1} repeats of whole groups"
    return r.fact(text, (SPLIT_JSON, FOLDS_JSON, GROUPS_CSV), ("data",))


def disjoint(r: Run) -> Fact | None:
    s = r.data.split
    if not r.has(GROUPS_CSV) or not s.get("files"):
        return None
    grouping = s.get("grouping") or {}
    level = "groups of linked copies (exact, resized or re-encoded, re-processed"
    level += f"; link threshold {grouping['copy_threshold']})" if grouping.get("copy_threshold") is not None else ")"
    user = grouping.get("user_groups")
    if user and user.get("kind", "user group") != "user group":
        level += f" joined with the {user['kind']} groups of the DICOM headers ({user['source']}, --group-by)"
    elif user:
        level += " joined with the groups given by --groups (for example patients)"
    if r.config.get("plain_split"):
        level = "single images only (--plain-split: copies and --groups ignored)"
    audit = s.get("leakage_audit") or []
    crossing = sum(_n(a.get("bench_crossing")) for a in audit)
    pairs = sum(_n(a.get("pairs")) for a in audit)
    return r.fact(f"partitions are disjoint at the level of {level}; leakage audit: {crossing} of {pairs} linked "
                  "pairs cross partitions", (GROUPS_CSV, SPLIT_JSON), ("data",))


def flow(r: Run) -> Fact | None:
    d, s = r.data.dataset, r.data.split
    if not d or not s.get("sizes"):
        return None
    readable = sum(_n(v) for v in (d.get("counts") or {}).values())
    skipped, conflicts = len(d.get("skipped") or []), len(s.get("label_conflicts") or [])
    used = sum(_n(v) for counts in s["sizes"].values() for v in counts.values())
    groups = len({f.get("group") for f in s.get("files") or [] if f.get("group")})
    return r.fact(f"{readable + skipped} files found, {skipped} skipped, {readable} readable images, {conflicts} "
                  f"excluded for label conflicts, {used} used" + (f" in {groups} groups" if groups else ""),
                  (DATASET_JSON, SPLIT_JSON), ("data",))


def same_source(r: Run) -> Fact | None:
    if not r.data.split.get("sizes"):
        return None
    return r.fact(f"internal evaluation: the {r.held_out} images come from the same folder, by the same rule and "
                  "preprocessing as the development images; class shares per partition in split.json",
                  (SPLIT_JSON,), ("data",))
