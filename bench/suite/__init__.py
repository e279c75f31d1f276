"""``bench suite``: one run per dataset, then a verdict across the datasets.

Each dataset runs as an ordinary run folder inside the suite folder
(:mod:`bench.suite.runner`), so every per-dataset report, export and ``bench evaluate``
keep working; the suite adds the comparison across datasets
(:mod:`bench.evaluate.suite_table`, :mod:`bench.evaluate.across_datasets`) and its report.
"""
