"""Evaluate stage: :mod:`~bench.evaluate.final` rebuilds each backbone's best trial as a
full model, picks the decision threshold on validation and scores the test split once;
:mod:`~bench.evaluate.metrics` holds the metrics and their bootstrap intervals;
:mod:`~bench.evaluate.paired` compares two backbones on the same images (McNemar, paired
AUC bootstrap); :mod:`~bench.evaluate.leaderboard` ranks backbones by the validation
objective; :mod:`~bench.evaluate.rows` reads the flat result rows all of them write.
"""

from bench.lazy import reexport

__getattr__, __dir__, __all__ = reexport(__name__, {
    "evaluate_on_test": "final", "full_model": "final",
    "evaluate": "metrics", "bootstrap_ci": "metrics", "choose_threshold": "metrics",
    "PairTest": "paired", "pairwise_tests": "paired", "mcnemar_exact": "paired", "paired_bootstrap_auc": "paired",
    "rank": "leaderboard", "write_leaderboard": "leaderboard", "format_leaderboard": "leaderboard",
    "to_float": "rows", "metric_with_ci": "rows",
})
