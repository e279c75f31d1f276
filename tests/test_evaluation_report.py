"""The evaluation report (``bench evaluate``'s evaluation.md and evaluation.html), built
from synthetic evaluation dicts whose results come from the real metric functions."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from bench.evaluate.calibration import calibration_summary
from bench.evaluate.metrics import evaluate
from bench.evaluate.operating_points import decision_curve, evaluate_operating_points
from bench.schema import Source, metric_with_ci
from bench.report.evaluation_report import (
    SECTIONS,
    overlap_table,
    write_evaluation_report,
)

RESAMPLES = 200


def _as_json(value):
    """What evaluation.json would give back (numpy arrays become lists, tuples lists)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist()))


def _probabilities(rng, y, k, signal=1.6):
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += signal
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def _results(y, proba, classes, groups, threshold, points):
    prevalence = np.bincount(y, minlength=len(classes)) / len(y)
    out = {"metrics": evaluate(y, proba, classes, threshold=threshold, n_resamples=RESAMPLES, groups=groups,
                               prevalence=prevalence),
           "calibration": calibration_summary(y, proba, prevalence=prevalence, groups=groups, n_resamples=RESAMPLES),
           "operating_points": None, "decision_curve": None}
    if len(classes) == 2:
        out["operating_points"] = evaluate_operating_points(y, proba[:, 1], points, groups=groups,
                                                            n_resamples=RESAMPLES)
        out["decision_curve"] = decision_curve(y, proba[:, 1], groups=groups, n_resamples=RESAMPLES)
    return _as_json(out)


def make_evaluation(classes, n=54, tta=True, checked=True, overlap_rows=2, seed=0):
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = rng.integers(0, k, n)
    files = [f"{classes[c]}/img_{i:03d}.png" for i, c in enumerate(y)]
    groups = [f"g{i // 2 if i < 6 else i}" for i in range(n)]  # the first six images in pairs of copies
    binary = k == 2
    threshold = 0.63 if binary else None
    points = {"youden": 0.63, "sensitivity": 0.3, "specificity": 0.8}
    variants = {"plain": _probabilities(rng, y, k)}
    if tta:
        variants["tta"] = _probabilities(rng, y, k)
    frame = {"file": files, "label": [classes[c] for c in y]}
    results = {}
    for key, proba in variants.items():
        prefix = "" if key == "plain" else "tta_"
        results[key] = _results(y, proba, classes, groups, threshold, points)
        decided = (proba[:, 1] >= threshold).astype(int) if binary else proba.argmax(1)
        frame.update({f"{prefix}prob_{c}": proba[:, j] for j, c in enumerate(classes)})
        frame[f"{prefix}prediction"] = [classes[j] for j in decided]
        frame[f"{prefix}correct"] = decided == y
    frame["overlap"] = [""] * n
    rows = [{"file": f"{classes[-1]}/copy_{i}.png", "label": classes[-1], "kind": "mirrored/rotated",
             "layout": 0.93 - 0.01 * i, "details": 40 + i, "reference": f"{classes[-1]}/Y{i}.jpg",
             "reference_split": ("train", "test")[i % 2], "reference_label": classes[-1]} for i in range(overlap_rows)]
    counts = {c: int((y == j).sum()) for j, c in enumerate(classes)}
    evaluation = {
        "format": 1, "created": "2026-11-30T12:00:00+00:00", "command": "bench evaluate results/run1 external/",
        "model": {"source": "/data/export/mobilenet_v2", "backbone": "mobilenet_v2", "classes": list(classes),
                  "positive_class": classes[1] if binary else None, "temperature": 1.6 if binary else None,
                  "image_size": 96, "run_name": "run1" if binary else None,
                  "operating_point": "youden" if binary else None, "threshold": threshold},
        "data": {"root": "/data/external", "n_files": n + overlap_rows + 2, "n_images": n + overlap_rows,
                 "class_counts": {c: counts[c] + (overlap_rows if c == classes[-1] else 0) for c in classes},
                 "skipped": [{"path": "x.txt", "reason": "not an image"}, {"path": "y.png", "reason": "truncated"}],
                 "n_groups": len(set(groups)) + overlap_rows},
        "overlap": ({"checked": True, "reference": "/data/export/mobilenet_v2/reference.npz (253 images)",
                     "threshold": 0.7, "kept": False, "rows": rows, "reason": None} if checked else
                    {"checked": False, "reference": None, "threshold": 0.7, "kept": False, "rows": [],
                     "reason": "the export carries no reference of its run's images"}),
        "evaluated": {"n": n, "class_counts": counts},
        "results": results,
        "tta": "flip" if tta else "none",
        "warnings": ["no images of class maybe in /data/external: its recall and AUC are undefined"],
    }
    return evaluation, pd.DataFrame(frame)


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    out = tmp_path_factory.mktemp("binary")
    evaluation, frame = make_evaluation(["no", "yes"])
    md, html = write_evaluation_report(out, evaluation, frame)
    return evaluation, md, html


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    out = tmp_path_factory.mktemp("three")
    (out / "fig-decision-curve.png").write_bytes(b"stale")  # left by an earlier binary evaluation here
    evaluation, frame = make_evaluation(["glioma", "meningioma", "none"], n=45, tta=False, checked=False, seed=1)
    md, html = write_evaluation_report(out, evaluation, frame)
    return evaluation, md, html


def _html_text(page: str) -> str:
    """The page's text with tags dropped and entities undone (for comparing sentences)."""
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.mark.parametrize("which", ["binary", "three"])
def test_both_files_sections_in_order_and_self_contained(which, request):
    _, md, html = request.getfixturevalue(which)
    assert md.name == "evaluation.md" and html == md.with_name("evaluation.html")
    text, page = md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")
    assert re.findall(r"^## \d\. (.+)$", text, flags=re.MULTILINE) == list(SECTIONS)
    positions = [page.index(f"</span>{s}</h2>") for s in SECTIONS]
    assert positions == sorted(positions)
    sources = re.findall(r'<img src="([^"]+)"', page)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sources and len(sources) == len(links)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert not re.search(r"""(?:href|src)=["'](?!data:|#)""", page)  # nothing outside the file
    for link in links:  # figures beside the Markdown, named like the run report's
        assert link.startswith("fig-") and "/" not in link
        assert (md.parent / link).read_bytes().startswith(b"\x89PNG")
    assert {p.name for p in md.parent.glob("*.png")} == set(links)


def test_title_summary_and_headline_numbers(binary):
    evaluation, md, html = binary
    text, page = md.read_text(encoding="utf-8"), _html_text(html.read_text(encoding="utf-8"))
    assert text.startswith("# bench evaluation: mobilenet_v2 on external\n")
    assert "bench evaluation: mobilenet_v2 on external" in page
    assert "2026-11-30T12:00:00+00:00" in text and "`bench evaluate results/run1 external/`" in text
    summary_md = text.split("## 1. Summary")[1].split("## 2.")[0]
    summary_html = page.split("1Summary")[1].split("2Metrics")[0]
    for key, res in evaluation["results"].items():
        m = res["metrics"]
        for name, metric in (("ROC AUC", "roc_auc"), ("accuracy", "accuracy"), ("sensitivity", "recall"),
                             ("specificity", "specificity")):
            shown = f"{name} {metric_with_ci(m, metric, style='dash', source=Source.PLAIN)}"
            assert shown in summary_md and shown in summary_html, (key, shown)
    assert "At the Youden's J operating point (threshold 0.630 on P(yes))" in summary_md
    assert "test-time augmentation" in summary_md
    groups = evaluation["results"]["plain"]["metrics"]["ci_groups"]
    assert f"200 resamples of the {groups} duplicate groups" in summary_md
    assert "54 images of /data/external" in summary_md


def test_metrics_table_has_plain_and_tta_side_by_side(binary):
    evaluation, md, _ = binary
    text = md.read_text(encoding="utf-8")
    section = text.split("## 2. Metrics")[1].split("## 3.")[0]
    assert re.search(r"^\| metric +\| +plain \(95 % CI\) \| +TTA flip \(95 % CI\) \|", section, flags=re.MULTILINE)
    plain, tta = (evaluation["results"][k]["metrics"] for k in ("plain", "tta"))
    for metric in ("balanced_accuracy", "pr_auc", "f1", "brier", "brier_skill"):
        row = next(line for line in section.splitlines() if metric_with_ci(plain, metric, style="dash",
                                                                            source=Source.PLAIN) in line)
        assert metric_with_ci(tta, metric, style="dash", source=Source.PLAIN) in row
    assert "| precision (PPV)" in section and "| threshold" in section


def test_figures_operating_points_and_calibration(binary):
    evaluation, md, html = binary
    text, page = md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")
    for name in ("fig-confusion.png", "fig-roc-pr.png", "fig-calibration.png", "fig-decision-curve.png"):
        assert f"]({name})" in text
    assert 'alt="Decision curve"' in page
    points = text.split("**Operating points**")[1].split("## 4.")[0]
    youden = evaluation["results"]["plain"]["operating_points"]["youden"]
    assert re.search(r"^\| plain +\| Youden's J \u2605 +\|", points, flags=re.MULTILINE)
    assert metric_with_ci(youden, "sensitivity", style="dash", source=Source.PLAIN) in points
    assert len(re.findall(r"^\| (plain|TTA flip) ", points, flags=re.MULTILINE)) == 6
    calibration = text.split("## 4. Calibration")[1].split("## 5.")[0]
    for key in ("plain", "tta"):
        c = evaluation["results"][key]["calibration"]
        assert metric_with_ci(c, "ece", style="dash", source=Source.PLAIN) in calibration


def test_overlap_banner_and_table(binary):
    _, md, html = binary
    text, page = md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")
    assert ("2 images in external are copies of the run's training/test images; they were excluded from every "
            "number below (pass --keep-overlap to keep them)") in text
    assert 'data-banner="overlap_excluded"' in page and "danger" not in page.split("<nav")[0].split("</style>")[1]
    assert 'data-banner="small_set"' in page and "Only 54 images were evaluated" in text
    assert 'data-banner="warning"' in page and "No images of class maybe" in text
    section = text.split("## 5. Overlap with the run")[1].split("## 6.")[0]
    assert "| yes/copy_0.png | yes     | mirrored/rotated |     0.93 |          40 | yes/Y0.jpg | training" in section
    assert "| yes/copy_1.png | yes     | mirrored/rotated |     0.92 |          41 | yes/Y1.jpg | test" in section
    assert "yes/copy_0.png" in page and "yes/Y1.jpg" in page


def test_kept_overlap_is_a_danger_banner():
    from bench.report.evaluation_report import banners

    evaluation, _ = make_evaluation(["no", "yes"], n=120, tta=False)
    evaluation["overlap"]["kept"] = True
    shown = banners(evaluation)
    assert [b.key for b in shown] == ["overlap_kept", "warning"]  # 120 images: no small-set banner
    assert shown[0].title == "KEPT: this is not an external test"


def test_overlap_table_is_capped():
    rows = [{"file": f"a/{i}.png", "label": "a", "kind": "exact", "layout": 1.0, "details": 0, "reference": f"a/{i}",
             "reference_split": "val", "reference_label": "b"} for i in range(63)]
    table = overlap_table({"rows": rows})
    assert len(table.rows) == 50 and table.more == 13
    assert table.rows[0][5:] == ["a/0 (filed as b)", "validation"]
    assert table.markdown().endswith("\u2026 and 13 more.")


def test_three_classes_without_tta_and_without_overlap_check(three):
    evaluation, md, html = three
    text, page = md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")
    assert "Operating points and decision curves are binary-only" in text
    assert "binary-only" in page
    assert "fig-decision-curve.png" not in text and 'alt="Decision curve"' not in page
    assert not (md.parent / "fig-decision-curve.png").exists()  # the stale one is gone
    reason = evaluation["overlap"]["reason"]
    assert f"**No overlap check.** {reason[:1].upper() + reason[1:]}." in text
    assert 'data-banner="no_overlap_check"' in page and reason in _html_text(page)
    assert "TTA flip" not in text and "| macro" not in text and "ROC AUC (macro)" in text
    m = evaluation["results"]["plain"]["metrics"]
    assert f"sensitivity (macro) {metric_with_ci(m, 'recall', style='dash', source=Source.PLAIN)}" in text
    assert "Deciding by the most probable class" in text
