"""The shape of a reporting checklist as bench fills it: items, their topics in bench's own
short words (never the checklist's wording), and the run's evidence each item draws on.

An :class:`Item` names the facts of :mod:`bench.report.checklists.evidence` that answer
it and what a person must add that no run folder holds. Its status follows from which
facts the run has (:func:`status`):

* ``auto``: every fact it names is in the run, and nothing is left for a person;
* ``partial``: some of its facts are in the run; a person adds the rest;
* ``person``: none is (or it names none): a person writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO, PARTIAL, PERSON = "auto", "partial", "person"
#: Each status in words, as the Markdown checklist shows it.
STATUS_WORDS = {AUTO: "auto", PARTIAL: "partial", PERSON: "needs a person"}


@dataclass(frozen=True)
class Item:
    """One checklist item: ``number`` as the checklist numbers it ("12c"), the main item it
    belongs to (12), the checklist's section, the topic paraphrased, the evidence facts
    that fill it, and what a person adds (None when the run's facts answer it in full)."""

    number: str
    main: int
    section: str
    topic: str
    facts: tuple[str, ...] = ()
    add: str | None = None


@dataclass(frozen=True)
class Checklist:
    """A reporting guideline's items, with its reference and the numbering followed."""

    key: str
    title: str
    reference: str
    numbering: str
    items: tuple[Item, ...]

    @property
    def mains(self) -> list[int]:
        """The main item numbers, in order (27 for TRIPOD+AI, 44 for CLAIM)."""
        return sorted({item.main for item in self.items})


def status(item: Item, present: set[str]) -> str:
    """``auto``, ``partial`` or ``person`` for ``item`` given the facts ``present`` in the run."""
    have = [f for f in item.facts if f in present]
    if not have:
        return PERSON
    return AUTO if item.add is None and len(have) == len(item.facts) else PARTIAL


def main_status(statuses: list[str]) -> str:
    """A main item's status from its sub-items': ``auto`` when all are, ``person`` when none
    is filled at all, else ``partial``."""
    if all(s == AUTO for s in statuses):
        return AUTO
    return PERSON if all(s == PERSON for s in statuses) else PARTIAL


#: How the counts are made, as the checklist files state it.
COUNTING_RULE = (
    "Counts are of main items (TRIPOD+AI 1-27, CLAIM 1-44). A main item with sub-items (such as TRIPOD+AI 12a-12g) "
    "is auto when every sub-item is auto, needs a person when no sub-item holds anything from the run, and is "
    "partial otherwise. An item is filled from the run when it is auto or partial. An item is auto only when "
    "every piece of evidence it names is in the run folder and the item asks for nothing a run can know nothing "
    "about; when some of that evidence is missing it drops to partial, and with none of it to needs a person.")
