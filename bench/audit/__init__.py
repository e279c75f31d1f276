"""``bench audit``: a reported metric checked against an honest protocol.

The honest protocol (nested, group-aware cross-validation with the floor baselines) and
the naive one (one plain stratified random split, copies ignored) each run as an ordinary
run folder inside the audit folder (:mod:`bench.audit.runner`), so their reports, exports
and leaderboards work as for any run; :mod:`bench.audit.verdict` reads both and judges the
claim (:mod:`bench.audit.claim`), :mod:`bench.report.audit_report` writes the one-page
report and :mod:`bench.audit.summary` what the command prints.
"""
