"""``bench audit DATA --claim METRIC=VALUE``: the honest protocol (nested CV, copies grouped)
beside the naive one (one plain split, copies ignored), the verdict on the claim, the
one-page report; the claim judged again from the same runs with ``--resume``."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.audit.claim import ABOVE, BELOW, INSIDE, UNKNOWN, Claim, judge, parse_claim, verdict_sentence
from bench.cli import app
from bench.errors import BenchError
from bench.schema import Estimate, Source, metric

runner = CliRunner()
#: Cheap options: one small backbone from random weights, one short trial, two outer folds.
CHEAP = ["--weights", "none", "--image-size", "32", "--max-trials", "1", "--epochs", "1", "--backbones",
         "mobilenet_v2", "--cv", "2", "--max-unfreeze", "0"]
COPIES = 8  # per class: exact copies of the class's first images, saved under another name


def phantoms_with_copies(dest: Path) -> Path:
    """Two phantom classes of 16 images each, and an exact copy (same class) of the first
    COPIES images of each: ``copy_<name>.png`` beside ``<name>.png``."""
    from bench.data.demo import PhantomClass, make_phantom_data
    from bench.data.phantom import LesionStyle

    make_phantom_data(dest, [PhantomClass("no", 16, None), PhantomClass("yes", 16, LesionStyle(0.25, 0.8, 1.0))],
                      size=48, seed=3, marker={})
    for label in ("no", "yes"):
        for f in sorted((dest / label).glob("*.png"))[:COPIES]:
            shutil.copyfile(f, f.with_name(f"copy_{f.name}"))
    return dest


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """One audit of the phantoms (the claim written as a percentage); what it printed,
    its folders and its audit.json."""
    root = tmp_path_factory.mktemp("audit")
    data = phantoms_with_copies(root / "data")
    where = ["--out", str(root / "out"), "--reports", str(root / "reports"), "--name", "a"]
    result = runner.invoke(app, ["audit", str(data), "--claim", "accuracy=96%", *CHEAP, *where])
    assert result.exit_code == 0, result.output
    folder = root / "out" / "a"
    return {"root": root, "data": data, "where": where, "result": result, "folder": folder,
            "reports": root / "reports" / "a", "found": json.loads((folder / "audit.json").read_text())}


def board(folder: Path, protocol: str) -> list[dict]:
    return json.loads((folder / protocol / "leaderboard.json").read_text())


def test_the_estimates_are_the_two_run_folders_leaderboards(audited):
    found, folder = audited["found"], audited["folder"]
    assert found["claim"] == {"metric": "accuracy", "value": 0.96, "text": "accuracy=0.96", "label": "accuracy"}
    for protocol, prefix in (("honest", "cv_"), ("naive", "test_")):
        rows = board(folder, protocol)
        first = next(r for r in rows if r.get("rank") == 1)
        entry = found[protocol]
        assert entry["model"] == first["backbone"] == "mobilenet_v2"
        assert (entry["value"], entry["ci_low"], entry["ci_high"]) == (
            first[f"{prefix}accuracy"], first[f"{prefix}accuracy_ci_low"], first[f"{prefix}accuracy_ci_high"])
        floors = [r for r in rows if r.get("kind") == "floor" and r["status"] == "ok"]
        best = max(floors, key=lambda r: r[f"{prefix}accuracy"])
        assert entry["baseline"]["model"] == best["backbone"]
        assert entry["baseline"]["value"] == best[f"{prefix}accuracy"]
        assert entry["baseline"]["beats_model"] is (best[f"{prefix}accuracy"] > entry["ci_high"])
    run = json.loads((folder / "honest" / "run.json").read_text())["config"]
    naive = json.loads((folder / "naive" / "run.json").read_text())["config"]
    assert (run["cv"], run["plain_split"], naive["cv"], naive["plain_split"], naive["test_size"]) == (
        2, False, None, True, 0.15)
    assert found["honest"]["n"] == 2 * (16 + COPIES)  # every image predicted out of fold
    assert "out-of-fold predictions of 48 images" in found["honest"]["about"]
    assert f"scored once on its {found['naive']['n']} test images" in found["naive"]["about"]


def test_copies_crossing_the_naive_split_match_a_count_from_the_copies_themselves(audited):
    folder, found = audited["folder"], audited["found"]
    split = json.loads((folder / "naive" / "split.json").read_text())
    part = {Path(f["path"]).name: f["split"] for f in split["files"]}

    def partner(name: str) -> str | None:
        other = name.removeprefix("copy_") if name.startswith("copy_") else f"copy_{name}"
        return other if other in part else None

    test = [n for n, p in part.items() if p == "test"]
    expected = sum(1 for n in test if partner(n) and part[partner(n)] == "train")
    assert expected > 0  # the data is made so that a plain split leaks
    assert split["sizes"]["test"] == {"no": 4, "yes": 4}  # stratified: 15 % of each class's 24 images
    assert found["copies"]["with_copy_in_train"] == expected
    assert found["copies"]["test_images"] == len(test)
    # the naive split is the leakage audit's plain split; the honest folds keep every copy with its image
    assert all(a["bench_crossing"] == a["plain_split_crossing"] for a in split["leakage_audit"])
    assert found["copies"]["pairs_crossing"] == sum(a["bench_crossing"] for a in split["leakage_audit"]) > 0
    assert found["copies"]["honest_with_copy_in_train"] == 0
    assert "train+test" in (folder / "naive" / "groups.csv").read_text()  # a group on both sides, said so


def test_stdout_ends_with_the_verdict_and_the_report_says_it(audited):
    found, result = audited["found"], audited["result"]
    sentence = last_line(result.stdout)
    assert sentence == found["sentence"] and "claim accuracy=0.96" in sentence
    honest = Estimate(metric("accuracy"), Source.OUT_OF_FOLD, found["honest"]["value"], found["honest"]["ci_low"],
                      found["honest"]["ci_high"])
    assert found["verdict"] == judge(Claim("accuracy", 0.96), honest)
    assert f"[{honest.low:.2f}, {honest.high:.2f}]" in sentence
    copies = found["copies"]
    assert f"with {copies['with_copy_in_train']} of its {copies['test_images']} test images" in sentence
    assert "honest" in result.stdout and "naive" in result.stdout and "content-logistic" in result.stdout
    html = (audited["reports"] / "audit.html").read_text()
    md = (audited["reports"] / "audit.md").read_text()
    for page in (html, md):
        assert found["sentence"].split(":")[0] in page and found["honest"]["text"] in page
        assert found["naive"]["text"] in page and found["honest"]["baseline"]["text"] in page
    assert 'href="honest/report.html"' in html and 'href="naive/report.html"' in html
    assert 'data:image/png;base64,' in html  # the interval figure, embedded
    assert 'data-banner="plain_split"' in (audited["reports"] / "naive" / "report.html").read_text()
    assert 'data-banner="plain_split"' not in (audited["reports"] / "honest" / "report.html").read_text()


def test_another_claim_is_judged_from_the_same_runs(audited):
    """``--resume`` with a claim inside the honest interval and one outside: nothing runs
    again, the verdict follows the interval, exit 0 both times."""
    found, folder = audited["found"], audited["folder"]
    low, high = found["honest"]["ci_low"], found["honest"]["ci_high"]
    stamp = (folder / "honest" / "leaderboard.json").stat().st_mtime_ns
    outside = round(high + 0.01, 2) if high < 0.98 else round(low - 0.01, 2)
    for value, verdict in ((round((low + high) / 2, 3), INSIDE), (outside, ABOVE if outside > high else BELOW)):
        result = runner.invoke(app, ["audit", str(audited["data"]), "--claim", f"accuracy={value}", "--resume",
                                     *audited["where"]])
        assert result.exit_code == 0, result.output
        stored = json.loads((folder / "audit.json").read_text())
        assert stored["verdict"] == verdict and stored["inside"] is (verdict == INSIDE)
        word = "inside" if verdict == INSIDE else "outside"
        assert last_line(result.stdout).startswith(f"The claim accuracy={value:g} lies {word}")
        assert "finished earlier, skipped" in result.output
    assert (folder / "honest" / "leaderboard.json").stat().st_mtime_ns == stamp
    rebuilt = runner.invoke(app, ["report", str(folder), "--reports", str(audited["root"] / "again")])
    assert rebuilt.exit_code == 0 and (audited["root"] / "again" / "a" / "audit.html").is_file()
    table = runner.invoke(app, ["leaderboard", str(folder)])
    assert table.exit_code == 0 and "honest" in table.output and "naive" in table.output


def test_resume_refuses_to_change_what_the_audit_computes(audited):
    result = runner.invoke(app, ["audit", str(audited["data"]), "--claim", "accuracy=0.9", "--resume", "--epochs",
                                 "3", *audited["where"]])
    assert result.exit_code == 2 and "--epochs 3 (run a has --epochs 1)" in result.output


@pytest.mark.parametrize("claim, message", [
    ("accuracy", "is not METRIC=VALUE; write e.g. --claim accuracy=0.96"),
    ("accurcy=0.9", "unknown metric 'accurcy'; choose one of: accuracy, balanced_accuracy,"),
    ("accuracy=1.2", "accuracy lies between 0 and 1"),
    ("roc_auc=nan", "ROC AUC lies between 0 and 1"),
    ("f1=high", "'high' is not a number"),
])
def test_a_bad_claim_is_one_line_before_any_work(tmp_path, claim, message):
    result = runner.invoke(app, ["audit", str(tmp_path / "missing"), "--claim", claim, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and message in result.output
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_the_verdict_is_a_function_of_the_claim_and_the_interval():
    claim = Claim("accuracy", 0.96)

    def est(v, lo, hi, name="accuracy"):
        return Estimate(metric(name), Source.OUT_OF_FOLD, v, lo, hi)

    assert judge(claim, est(0.87, 0.82, 0.91)) == ABOVE
    assert judge(claim, est(0.95, 0.90, 0.96)) == INSIDE  # the bounds belong to the interval
    assert judge(claim, est(0.98, 0.97, 0.99)) == BELOW
    assert judge(claim, est(0.9, math.nan, math.nan)) == UNKNOWN
    assert judge(Claim("brier", 0.05), est(0.12, 0.09, 0.15, "brier")) == BELOW
    copies = {"test_images": 38, "with_copy_in_train": 7}
    text = verdict_sentence(claim, ABOVE, est(0.87, 0.82, 0.91), est(0.97, 0.94, 0.99), "nested 5-fold CV", copies)
    assert text == ("The claim accuracy=0.96 lies outside (above) the honest 95 % interval [0.82, 0.91] (nested 5-fold "
                    "CV): the honest protocol does not support it; the naive protocol (one plain split, copies "
                    "ignored) gives 0.97 [0.94, 0.99], with 7 of its 38 test images having a copy in its train split.")
    inside = verdict_sentence(claim, INSIDE, est(0.95, 0.93, 0.98), est(0.97, 0.94, 0.99), "nested 5-fold CV")
    assert inside.startswith("The claim accuracy=0.96 lies inside the honest 95 % interval [0.93, 0.98]")
    assert "is consistent with it" in inside
    none = verdict_sentence(claim, UNKNOWN, est(math.nan, math.nan, math.nan), est(0.97, 0.94, 0.99),
                            "nested 5-fold CV", reason="no backbone finished")
    assert none == ("The claim accuracy=0.96 cannot be checked: the honest protocol (nested 5-fold CV) gives no "
                    "95 % interval for accuracy (no backbone finished).")


def test_claims_read_as_papers_write_them():
    assert parse_claim("accuracy=0.96") == Claim("accuracy", 0.96)
    assert parse_claim("AUC = 91%") == Claim("roc_auc", 0.91)
    assert parse_claim("balanced-accuracy=0.8") == Claim("balanced_accuracy", 0.8)
    assert parse_claim("sensitivity=1") == Claim("recall", 1.0)
    with pytest.raises(BenchError, match="choose one of"):
        parse_claim("brier_skill=0.2")  # reported without an interval


def test_a_plain_split_is_one_split(tmp_path):
    result = runner.invoke(app, ["run", "--data", str(tmp_path), "--plain-split", "--cv", "3", "--weights", "none",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--plain-split makes one plain train/val/test split; drop --cv 3" in result.output
