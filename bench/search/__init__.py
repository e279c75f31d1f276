"""Search stage, per backbone: :mod:`~bench.search.source` builds the run's backbone (its
weights saved once, reused by every trial and process); :mod:`~bench.search.cache`
computes the frozen part's features once per image and keeps them on disk;
:mod:`~bench.search.hypermodel` is the search space (head × learning rate × unfreeze
depth) and :mod:`~bench.search.trainer` the lean training loop a trial runs;
:mod:`~bench.search.tuner` is the KerasTuner glue (crash-safe state, one checkpoint per
best trial, ``trials.csv``); :mod:`~bench.search.distributed` spreads trials over
processes; :mod:`~bench.search.runtime` says how a run computes (the frozen pass's runtime
and precision, carried by every job; :mod:`~bench.search.openvino_runtime`: ``--runtime
openvino``); :mod:`~bench.search.kt_adapter` holds every KerasTuner internal bench uses.
"""

from bench.lazy import reexport

__getattr__, __dir__, __all__ = reexport(__name__, {
    "BackboneSource": "source", "source_for": "source", "depths_for": "source",
    "FeatureCache": "cache", "cached_features": "cache",
    "BenchHyperModel": "hypermodel", "TrialData": "hypermodel",
    "train": "trainer",
    "make_tuner": "tuner", "best_trial": "tuner", "write_trials_csv": "tuner",
    "Cluster": "distributed", "cluster_from_env": "distributed",
    "FrozenPass": "runtime", "run_settings": "runtime",
})
