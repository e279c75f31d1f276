"""Trials trained together, ahead of their turn.

While KerasTuner's oracle draws a search's trials at random whatever their results
(random search; Bayesian optimisation before its Gaussian process is first fitted, which
with ten trials is the whole search), the trials it will create next are known when the
first one starts (:func:`bench.search.kt_adapter.upcoming_trials`). Those whose dense
heads train in numpy are then trained with it
(:meth:`bench.search.hypermodel.BenchHyperModel.fit_together`): the heads on the same
rows read each batch once, so a flattened map is gathered once per batch for all of them
rather than once per trial. KerasTuner's loop is unchanged: it creates each trial in
turn, and the trial's run finds its result ready.

A trial's numbers do not depend on the trials it was trained with (each head's arithmetic
is that of training it alone, on the search's batches), so nothing changes when a guess
is wrong, when the run is resumed with some trials done, or when trials are trained one
by one (distributed trials, ``--budget``'s time shares, Hyperband): a trial not found
ready, or found with other values, is trained alone, and a wrong guess ends the guessing
for the search.
"""

from __future__ import annotations

from bench.search import kt_adapter


class TrialsAhead:
    """The results of trials trained ahead of their turn, for one tuner."""

    def __init__(self) -> None:
        self._ready: dict[int, tuple[dict, object]] = {}  # trial number -> (values, result)
        self._wrong = False

    def result(self, tuner, trial, epochs: int, seed_of) -> object | None:
        """``trial``'s result (as ``fit_rows`` gives it, or the NonFiniteLoss that ended
        it): found ready, or trained now with the trials the oracle creates next; None
        when it is not trained here (the caller trains it). ``seed_of(number)``: a
        trial's seed."""
        number, values = int(trial.trial_id), trial.hyperparameters.values
        kept = self._ready.pop(number, None)
        if kept is not None:
            if kept[0] == values:
                return kept[1]
            self._wrong = True  # never expected: a trial drawn otherwise than the dry run said
            self._ready.clear()
        if self._wrong or not hasattr(tuner.hypermodel, "fit_together") or not _draws_ahead(tuner):
            return None
        hp_of = tuner.oracle.hyperparameters
        left = (tuner.oracle.max_trials or 0) - len(tuner.oracle.trials)
        upcoming = [(n, v) for n, v in kt_adapter.upcoming_trials(tuner.oracle, left) if n not in self._ready]
        if not upcoming:
            return None
        trials = [(number, trial.hyperparameters)] + [(n, _with_values(hp_of, v)) for n, v in upcoming]
        results = tuner.hypermodel.fit_together([(hp, seed_of(n)) for n, hp in trials], epochs=epochs)
        for (n, hp), result in zip(trials[1:], results[1:]):
            if result is not None:
                self._ready[n] = (dict(hp.values), result)
        return results[0]


def _draws_ahead(tuner) -> bool:
    """Whether trials may be trained ahead in ``tuner``'s search: one process runs every
    trial of it (no distributed workers), with no time share (``--budget`` stops a search
    between trials; trained together, all would stop half-trained)."""
    return tuner.settings.cluster is None and tuner.settings.deadline is None


def _with_values(space, values: dict):
    hps = space.copy()
    hps.values = dict(values)
    return hps
