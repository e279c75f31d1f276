"""TRIPOD+AI and CLAIM filled from a run folder: enough items filled, every pointer real,
items falling back when their evidence is absent, the JSON and the Markdown agreeing, and
the report linking them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from bench.report import build_report
from bench.report.checklists import fill
from bench.report.checklists.compose import CHECKLIST_JSON, CHECKLIST_MD, CHECKLISTS
from bench.report.checklists.evidence import BUILDERS
from bench.report.checklists.items import AUTO, PARTIAL, PERSON, STATUS_WORDS, main_status
from bench.report.load import load_run
from bench.runfolder import CALIBRATION_JSON, DATASET_JSON, GROUPS_CSV

#: Filled from the run (auto or partial), at least: half of CLAIM's 44 items, 12 of TRIPOD+AI's 27.
THRESHOLDS = {"tripod_ai": 12, "claim": 22}


@pytest.fixture(scope="module")
def real_run(tiny_run, tmp_path_factory):
    """A copy of the tiny finished run (the shared one stays untouched), with its report."""
    root = tmp_path_factory.mktemp("checklists")
    run = root / "results" / "tiny"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("tuner", "cache", "export"))
    return run, build_report(run, root / "reports").markdown


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """A cross-validated run folder (``--cv 3 --repeats 2`` with a holdout), with its report."""
    from test_report_cv import make_cv_run

    root = tmp_path_factory.mktemp("checklists-cv")
    run = make_cv_run(root / "results")
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))  # every image's group, as bench run writes it
    (run / GROUPS_CSV).write_text("group,group_size,kind,split,label,path\n" + "".join(
        f"{f['group']},1,,{f['split']},{f['label']},{f['path']}\n" for f in split["files"]), encoding="utf-8")
    return run, build_report(run, root / "reports").markdown


@pytest.fixture(params=["real_run", "cv_run"])
def built(request):
    return request.getfixturevalue(request.param)


def _json(run: Path) -> dict:
    return json.loads((run / CHECKLIST_JSON).read_text(encoding="utf-8"))


def _items(filled: dict, key: str) -> dict[str, dict]:
    checklist = next(c for c in filled["checklists"] if c["key"] == key)
    return {i["item"]: i for i in checklist["items"]}


# --------------------------------------------------------------------------- the tables


def test_the_item_tables_follow_the_published_numbering():
    tripod, claim = CHECKLISTS
    assert tripod.mains == list(range(1, 28)) and claim.mains == list(range(1, 45))
    subs = {m: [i.number for i in tripod.items if i.main == m] for m in tripod.mains}
    assert {m: n for m, n in subs.items() if len(n) > 1} == {
        3: ["3a", "3b", "3c"], 5: ["5a", "5b"], 6: ["6a", "6b", "6c"], 8: ["8a", "8b", "8c"], 9: ["9a", "9b", "9c"],
        12: [f"12{c}" for c in "abcdefg"], 18: [f"18{c}" for c in "abcdef"], 20: ["20a", "20b", "20c"],
        23: ["23a", "23b"], 27: ["27a", "27b", "27c"]}
    assert [i.number for i in claim.items] == [str(n) for n in range(1, 45)]
    for checklist in CHECKLISTS:
        assert {f for i in checklist.items for f in i.facts} <= set(BUILDERS)
        assert all(i.add for i in checklist.items if not i.facts)  # a person's item says what to write
        assert len({i.topic for i in checklist.items}) == len(checklist.items)


# --------------------------------------------------------------------------- a finished run


def test_counts_meet_the_thresholds(built):
    run, _ = built
    filled = _json(run)
    for checklist in filled["checklists"]:
        c = checklist["counts"]
        assert c["filled"] >= THRESHOLDS[checklist["key"]], checklist["key"]
        assert c[AUTO] + c[PARTIAL] + c[PERSON] == c["items"] == len({i["main"] for i in checklist["items"]})
        for main, state in c["main_status"].items():  # the counting rule, applied to the items
            assert state == main_status([i["status"] for i in checklist["items"] if str(i["main"]) == main])
    claim = _items(filled, "claim")
    for item in ("19", "20", "22", "23", "25", "26", "28", "29", "32", "35", "37"):  # computational items: auto
        assert claim[item]["status"] == AUTO, item


def test_every_pointer_names_a_file_of_the_run_or_a_section_of_the_report(built):
    run, md = built
    filled, report = _json(run), md.read_text(encoding="utf-8")
    headings = set(re.findall(r"^## (\d+)\. (.+)$", report, re.M))
    for checklist in filled["checklists"]:
        for item in checklist["items"]:
            if item["status"] == PERSON:
                assert not item["files"] and not item["sections"] and item["person_adds"]
                continue
            assert item["files"] or item["sections"], item["item"]
            assert item["from_run"]
            for name in item["files"]:
                assert (run / name).is_file(), (item["item"], name)
            for key in item["sections"]:
                section = filled["report_sections"][key]
                assert (str(section["number"]), section["title"]) in headings, (item["item"], key)
            assert (item["person_adds"] is None) == (item["status"] == AUTO)


def test_json_and_markdown_agree(built):
    run, _ = built
    filled, text = _json(run), (run / CHECKLIST_MD).read_text(encoding="utf-8")
    words = {v: k for k, v in STATUS_WORDS.items()}
    parts = re.split(r"^## ", text, flags=re.M)
    for checklist in filled["checklists"]:
        c = checklist["counts"]
        assert f"| {checklist['title']} | {c['items']} | {c[AUTO]} | {c[PARTIAL]} | {c[PERSON]} | {c['filled']} |" in text
        table = next(p for p in parts if p.startswith(checklist["title"] + "\n"))
        rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table.splitlines()
                if line.startswith("| ") and not line.startswith("| item ")]
        assert [(r[0], words[r[3]]) for r in rows] == [(i["item"], i["status"]) for i in checklist["items"]]
        for row, item in zip(rows, checklist["items"]):
            assert row[4] == (item["from_run"].replace("|", "\\|") or "-")
            assert all(f"`{name}`" in row[5] for name in item["files"])


def test_the_report_links_the_checklists_and_gives_the_counts(real_run):
    run, md = real_run
    text, page = md.read_text(encoding="utf-8"), md.with_suffix(".html").read_text(encoding="utf-8")
    link = re.search(r"\[checklist\.md\]\(([^)]+)\)", text).group(1)
    assert (md.parent / link).resolve() == (run / CHECKLIST_MD).resolve()
    assert f'<a href="{link}">checklist.md</a>' in page
    for checklist in _json(run)["checklists"]:
        c = checklist["counts"]
        assert f"{checklist['title']}: {c[AUTO]} auto, {c[PARTIAL]} partial, {c[PERSON]} need a person" in text


# --------------------------------------------------------------------------- missing evidence


def test_items_fall_back_when_their_evidence_is_absent(real_run, tmp_path):
    run = tmp_path / "tiny"
    shutil.copytree(real_run[0], run)
    before = fill(load_run(run), {"data": (7, "Data")})
    claim, tripod = _items(before, "claim"), _items(before, "tripod_ai")
    assert claim["20"]["status"] == tripod["12f"]["status"] == tripod["24"]["status"] == AUTO
    assert tripod["11"]["status"] == claim["12"]["status"] == claim["38"]["status"] == AUTO

    (run / GROUPS_CSV).unlink()  # no file of every image's group: the level of disjointness is a person's
    (run / "mobilenet_v2" / CALIBRATION_JSON).unlink()
    (run / DATASET_JSON).unlink()
    after = fill(load_run(run), {"data": (7, "Data")})
    claim, tripod = _items(after, "claim"), _items(after, "tripod_ai")
    assert claim["20"]["status"] == PERSON and "disjoint" in claim["20"]["person_adds"]
    assert tripod["12f"]["status"] == tripod["24"]["status"] == tripod["15"]["status"] == PERSON
    assert tripod["11"]["status"] == claim["12"]["status"] == PERSON
    assert claim["38"]["status"] == AUTO and "at the decision threshold" in claim["38"]["from_run"]  # from the row
    assert tripod["7"]["status"] == PARTIAL and "quality" in tripod["7"]["person_adds"]  # preprocessing remains
    counts = next(c for c in after["checklists"] if c["key"] == "claim")["counts"]
    assert counts["filled"] < next(c for c in before["checklists"] if c["key"] == "claim")["counts"]["filled"]


def test_a_run_folder_that_cannot_be_written_gets_the_counts_only(tmp_path, monkeypatch):
    import bench.report.build
    import bench.report.checklists
    from test_report import make_run

    def refuse(filled, folder):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(bench.report.build, "make_figures", lambda *a: {"backbone": {}, **dict.fromkeys(
        ("leaderboard", "deployment", "roc_pr", "calibration", "decision_curve", "search_lr", "search_choices"))})
    monkeypatch.setattr(bench.report.checklists, "write_checklists", refuse)
    run = make_run(tmp_path / "results")
    md, _ = build_report(run, tmp_path / "reports")
    text = md.read_text(encoding="utf-8")
    assert "**Reporting checklists** filled from this run: TRIPOD+AI:" in text and "[checklist.md]" not in text
    assert not (run / CHECKLIST_MD).exists()


def test_the_model_description_gives_whole_pixels_and_the_output_the_model_has(real_run):
    """The leaderboard's size column is a float where floor rows have none; a two-class
    model ends in one sigmoid unit, not a softmax."""
    run, _ = real_run
    described = _items(_json(run), "claim")["22"]["from_run"]
    size = json.loads((run / "leaderboard.json").read_text(encoding="utf-8"))[0]["image_size"]
    assert f"image backbone at {int(size)} px, then " in described
    classes = json.loads((run / "split.json").read_text(encoding="utf-8"))["classes"]
    assert ("one sigmoid output" in described) == (len(classes) == 2) != ("softmax" in described)
