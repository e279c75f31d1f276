"""Fill TRIPOD+AI and CLAIM from a run folder and write ``checklist.md`` / ``checklist.json``.

:func:`fill` reads only the run (a :class:`bench.report.load.RunData`) and the keys of the
report's sections; :func:`write_checklists` puts both files in the run folder. The JSON is
the record; the Markdown is rendered from the same dictionary, so they cannot disagree.

    from bench.report.checklists import fill, write_checklists
    filled = fill(load_run(run_dir), {"data": (7, "Data"), ...})
    md_path, json_path = write_checklists(filled, run_dir)
"""

from __future__ import annotations

from pathlib import Path

from bench.atomic import write_json_atomic, write_text_atomic
from bench.report.checklists import claim, tripod_ai
from bench.report.checklists.evidence import gather
from bench.report.checklists.items import (AUTO, COUNTING_RULE, PARTIAL, PERSON, STATUS_WORDS, Checklist, main_status,
                                           status)
from bench.report.load import RunData

CHECKLIST_MD, CHECKLIST_JSON = "checklist.md", "checklist.json"
CHECKLISTS: tuple[Checklist, ...] = (tripod_ai.CHECKLIST, claim.CHECKLIST)
#: Format of checklist.json; raised when its keys change meaning.
FORMAT = 1


def pointer_text(item: dict, sections: dict) -> str:
    """The item's evidence in words: its files, then ``report §<no> <title>`` of its sections."""
    files = [f"`{f}`" for f in item["files"]]
    shown = [f"report §{sections[s][0]} {sections[s][1]}" for s in item["sections"] if s in sections]
    return "; ".join(files + shown)


def _item(item, facts: dict) -> dict:
    state = status(item, set(facts))
    have = [facts[f] for f in item.facts if f in facts]
    lacking = [f for f in item.facts if f not in facts]
    add = item.add
    if lacking and state != AUTO:
        gone = "the run folder lacks the evidence for: " + ", ".join(lacking)
        add = f"{add} ({gone})" if add else gone
    return {"item": item.number, "main": item.main, "section": item.section, "topic": item.topic, "status": state,
            "from_run": "; ".join(f.text for f in have),
            "files": list(dict.fromkeys(p for f in have for p in f.files)),
            "sections": list(dict.fromkeys(s for f in have for s in f.sections)),
            "person_adds": add if state != AUTO else None}


def counts(items: list[dict], mains: list[int]) -> dict:
    """Main items by status (:func:`bench.report.checklists.items.main_status`), and how many are filled."""
    per_main = {m: main_status([i["status"] for i in items if i["main"] == m]) for m in mains}
    out = {s: sum(1 for v in per_main.values() if v == s) for s in (AUTO, PARTIAL, PERSON)}
    return {"items": len(mains), **out, "filled": out[AUTO] + out[PARTIAL],
            "main_status": {str(m): v for m, v in per_main.items()}}


def fill(data: RunData, sections: dict | None = None) -> dict:
    """Both checklists filled from the run: ``sections`` maps the report's section keys to
    ``(number, title)`` (the pointers name only sections the report has)."""
    sections = dict(sections or {})
    facts = gather(data, sections)
    out = []
    for checklist in CHECKLISTS:
        items = [_item(item, facts) for item in checklist.items]
        out.append({"key": checklist.key, "title": checklist.title, "reference": checklist.reference,
                    "numbering": checklist.numbering, "counts": counts(items, checklist.mains), "items": items})
    versions = data.run.get("versions") or {}
    return {"format": FORMAT, "run": data.name, "run_dir": str(data.path.resolve()),
            "bench_version": versions.get("bench", data.run.get("bench_version")),
            "counting_rule": COUNTING_RULE, "statuses": STATUS_WORDS,
            "report_sections": {k: {"number": v[0], "title": v[1]} for k, v in sections.items()},
            "checklists": out}


def _cell(text) -> str:
    return str(text or "").replace("|", "\\|").replace("\n", " ")


def counts_line(checklist: dict) -> str:
    """``TRIPOD+AI: 7 auto, 16 partial, 4 need a person (23 of 27 filled from the run)``."""
    c = checklist["counts"]
    return (f"{checklist['title']}: {c[AUTO]} auto, {c[PARTIAL]} partial, {c[PERSON]} need a person "
            f"({c['filled']} of {c['items']} filled from the run)")


def markdown(filled: dict) -> str:
    """The Markdown checklist: a counts table, then one table per checklist."""
    sections = {k: (v["number"], v["title"]) for k, v in filled["report_sections"].items()}
    lines = [f"# Reporting checklists: run {filled['run']}", "",
             f"Filled by bench {filled['bench_version']} from the run folder `{filled['run_dir']}` (file pointers are "
             "relative to it) and its report. Topics are short paraphrases; read each checklist for its own "
             "wording. Status: **auto** (the run holds the evidence: see the pointer), **partial** (what the run "
             "shows, and what a person adds), **needs a person**.", "", filled["counting_rule"], "",
             "| checklist | main items | auto | partial | needs a person | filled from the run |",
             "|---|---|---|---|---|---|"]
    for cl in filled["checklists"]:
        c = cl["counts"]
        lines.append(f"| {cl['title']} | {c['items']} | {c[AUTO]} | {c[PARTIAL]} | {c[PERSON]} | {c['filled']} |")
    for cl in filled["checklists"]:
        lines += ["", f"## {cl['title']}", "", f"{cl['reference']}; {cl['numbering']}.", "",
                  "| item | section | topic | status | from the run | evidence | a person adds |",
                  "|---|---|---|---|---|---|---|"]
        for i in cl["items"]:
            lines.append("| " + " | ".join(_cell(v) for v in (
                i["item"], i["section"], i["topic"], STATUS_WORDS[i["status"]], i["from_run"] or "-",
                pointer_text(i, sections) or "-", i["person_adds"] or "-")) + " |")
    return "\n".join(lines) + "\n"


def write_checklists(filled: dict, folder: Path) -> tuple[Path, Path]:
    """``checklist.md`` and ``checklist.json`` into ``folder`` (the run folder)."""
    md, js = Path(folder) / CHECKLIST_MD, Path(folder) / CHECKLIST_JSON
    write_json_atomic(js, filled)
    write_text_atomic(md, markdown(filled))
    return md, js
