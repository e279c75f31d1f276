"""The candidates a run compares: each backbone with each starting point of ``--weights``.

A candidate is one (network, weights) pair and one leaderboard row. With one
``--weights`` value (the default) a candidate is named after its backbone, as every row
and folder of a run is; with several (``--weights imagenet,none,PATH``) it is named
``<backbone>@<label>`` (:func:`backbones.weights_label`: ``imagenet``, ``none`` or the
weights file's name) and its row also carries ``architecture`` and ``weights``. The name
is the row's ``backbone`` key and the search's folder, so every stage that reads a run by
row (ranking, paired tests, report, export, ``bench leaderboard``) treats pairs as it
treats backbones.

Order: backbone by backbone as ``--backbones`` gives them, each with every weights entry
in the order ``--weights`` gives them; then the notebook baseline, once per entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import backbones

#: The original notebook's recipe on Xception, compared as one more candidate.
BASELINE = "xception_notebook"


@dataclass(frozen=True)
class Candidate:
    """One compared (network, weights) pair of a run."""

    architecture: str  # a registry name, or BASELINE
    weights: str  # this pair's --weights entry: imagenet, none or an absolute path
    several: bool = False  # whether the run compares several weights entries

    @property
    def baseline(self) -> bool:
        return self.architecture == BASELINE

    @property
    def network(self) -> str:
        """The registry name of the network it trains (the baseline trains Xception)."""
        return "xception" if self.baseline else self.architecture

    @property
    def name(self) -> str:
        """The row's ``backbone`` key and the search's folder name."""
        return pair_name(self.architecture, self.weights, self.several)

    @property
    def source_name(self) -> str:
        """The folder that keeps the network's starting weights (``backbone.weights.npz``):
        the network and weights, so the baseline shares Xception's with the same weights."""
        return pair_name(self.network, self.weights, self.several)

    def columns(self) -> dict:
        """What its row carries on top of the backbone name: the architecture when the run
        compares several weights (the row's ``weights`` is this pair's entry in any run)."""
        return {"architecture": self.architecture} if self.several else {}


def pair_name(architecture: str, weights: str, several: bool) -> str:
    """``architecture``, or ``architecture@<weights label>`` when a run compares several weights."""
    return f"{architecture}@{backbones.weights_label(weights)}" if several else architecture


def candidates(config) -> list[Candidate]:
    """Every candidate of a run (``config``: its :class:`bench.config.RunConfig`), in order.

    Reads the stored ``--weights`` text without looking at the disk, so a resumed run
    names its candidates as it first did."""
    items = backbones.weights_items(config.weights)
    several = len(items) > 1
    if not several:  # the entry exactly as stored: a run's one weights value names nothing
        items = [str(config.weights).strip()]
    names = list(config.backbones) + ([BASELINE] if config.baseline else [])
    return [Candidate(name, weights, several) for name in names for weights in items]
