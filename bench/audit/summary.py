"""What ``bench audit`` prints: both protocols side by side, the files written, and the
verdict on the claim as the last line."""

from __future__ import annotations

from tabulate import tabulate

from bench.report.audit_report import protocol_rows


def summary_lines(outcome) -> list[str]:
    found = outcome.findings
    claim = found["claim"]
    table = tabulate(protocol_rows(found), headers=[
        "protocol", "split", "model", f"{claim['label']} [95% CI]", "images", "test images with a copy in train",
        "best floor baseline"], disable_numparse=True)
    return [table, "", f"wrote {outcome.audit.state_file}", f"wrote {outcome.report.markdown}",
            f"wrote {outcome.report.html}", "", found["sentence"]]
