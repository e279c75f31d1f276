"""The run folder as the checklist facts read it (:class:`Run`) and the :class:`Fact` they
make: a short sentence of what the run shows, with pointers to where the evidence lies
(files relative to the run folder, report sections by key)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.report.load import RunData
from bench.schema import Estimate, Source, to_float


@dataclass(frozen=True)
class Fact:
    """What the run shows (``text``) and where: ``files`` relative to the run folder, report ``sections`` by key."""

    text: str
    files: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()


class Run:
    """The run folder's files as the fact builders read them: what exists, the recommended
    backbone's row and files, the source of the estimates."""

    def __init__(self, data: RunData, sections) -> None:
        self.data, self.sections = data, tuple(sections)
        self.config = data.config
        self.best = data.ok[0] if data.ok else None
        self.row = self.best.row if self.best else {}
        self.source = data.source

    def has(self, name: str) -> bool:
        return (self.data.path / name).is_file()

    def fact(self, text: str, files=(), sections=()) -> Fact:
        """A fact with only the files that exist and the report sections the report has."""
        return Fact(text, tuple(f for f in files if self.has(f)), tuple(s for s in sections if s in self.sections))

    def best_file(self, name: str) -> str:
        return f"{self.best.name}/{name}" if self.best else name

    def estimate(self, name: str) -> Estimate:
        return Estimate.read(self.row, name, self.source)

    @property
    def calibration(self) -> dict | None:
        return self.data.files.backbone(self.best.name).calibration() if self.best else None

    @property
    def cv(self) -> bool:
        return self.source is Source.OUT_OF_FOLD

    @property
    def held_out(self) -> str:
        return "out-of-fold" if self.cv else "test"


def _n(value) -> int:
    v = to_float(value, 0)
    return int(v) if math.isfinite(v) else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _objective(r: Run) -> str:
    """The selection objective in words: ``val_auc`` is the validation AUC."""
    return r.data.objective.removeprefix("val_").replace("_", " ").replace("auc", "AUC")


def _ci(e: Estimate) -> str:
    return e.text(3, 2, "brackets")
