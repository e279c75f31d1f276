"""Evaluate stage: :mod:`~bench.evaluate.final` rebuilds each backbone's best trial as a
full model, picks the decision threshold on validation and scores the test split once;
:mod:`~bench.evaluate.metrics` holds the metrics and their bootstrap intervals;
:mod:`~bench.evaluate.resampling` is the weighted-resample engine (per image or per
duplicate group) behind every interval; :mod:`~bench.evaluate.paired`,
:mod:`~bench.evaluate.delong` and :mod:`~bench.evaluate.comparisons` compare backbones
(McNemar, paired AUC bootstrap, DeLong, corrected resampled t-test, Holm, probability
best); :mod:`~bench.evaluate.across_datasets` compares them over a suite of datasets
(ranks, Friedman, Nemenyi, Wilcoxon-Holm, Bayesian signed-rank, with
:mod:`~bench.evaluate.rank_tests` and :mod:`~bench.evaluate.bayes_signed_rank`);
:mod:`~bench.evaluate.crossval` turns out-of-fold predictions into CV estimates;
:mod:`~bench.evaluate.leaderboard` ranks backbones. The columns of the result rows they
write are declared in :mod:`bench.schema`.
"""

from bench.lazy import reexport

__getattr__, __dir__, __all__ = reexport(__name__, {
    "evaluate_on_test": "final", "full_model": "final",
    "evaluate": "metrics", "bootstrap_ci": "metrics", "choose_threshold": "metrics", "brier_skill_score": "metrics",
    "delong_test": "delong", "auc_covariance": "delong",
    "corrected_resampled_ttest": "comparisons", "holm": "comparisons", "probability_best": "comparisons",
    "bootstrap_scores": "comparisons", "mcnemar_counts": "paired",
    "cv_row": "crossval", "oof_predictions": "crossval",
    "PairTest": "paired", "pairwise_tests": "paired", "mcnemar_exact": "paired", "paired_bootstrap_auc": "paired",
    "compare_across": "across_datasets", "AcrossDatasets": "across_datasets",
    "rank": "leaderboard", "write_leaderboard": "leaderboard", "format_leaderboard": "leaderboard",
})
