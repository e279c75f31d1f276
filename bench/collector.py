"""Garbage collection around a run's jobs: built backbones kept out of every collection.

Keras' ``clear_session`` runs a full collection after every backbone and fold, which
walks every object the collector tracks. Under ``--cv`` every built backbone lives until
the run ends (its folds come round in turn, and the winner is searched again), so each
fold's collection walked the layers, variables and traced passes of every backbone built
so far: a quarter of a second per fold with three backbones, more with eleven.
:class:`KeptBackbones` moves what is alive just after a backbone's first job (the
backbone, and what the run holds) out of the collector's view (``gc.freeze``), as the
modules imported at start-up are (:func:`bench.terminal.freeze_imported`); later
collections walk only what each fold makes. Objects that are frozen and become garbage
in a reference cycle wait for :meth:`KeptBackbones.release`, which puts everything back,
collects once, and freezes what is still alive.
"""

from __future__ import annotations

import gc


class KeptBackbones:
    """Freezes the collector's objects after a job that built a backbone kept for later
    jobs; :meth:`release` once those backbones are dropped."""

    def __init__(self) -> None:
        self.frozen = False

    def keep(self) -> None:
        """Everything alive now (after the job's own collection) is kept out of later ones."""
        gc.collect()  # nothing collectable is kept out
        gc.freeze()
        self.frozen = True

    def release(self) -> None:
        """Collect what died among the frozen objects (the dropped backbones), once."""
        if self.frozen:
            gc.unfreeze()
            gc.collect()
            gc.freeze()  # what lives on (imported modules) stays out, as at start-up
            self.frozen = False
