"""What ``bench audit`` prints: both protocols side by side, the files written, and the
verdict on the claim as the last line."""

from __future__ import annotations

from tabulate import tabulate


def protocol_rows(found: dict) -> list[list[str]]:
    """One row per protocol: how it splits, its model, the estimate, the images it rests
    on, test images with a copy in train, its best floor baseline."""
    copies = found["copies"]
    rows = []
    for protocol in ("honest", "naive"):
        entry = found[protocol]
        baseline = entry.get("baseline")
        crossing = (f"{copies['with_copy_in_train']} of {copies['test_images']}" if protocol == "naive"
                    else "-" if copies.get("honest_with_copy_in_train") is None
                    else f"{copies['honest_with_copy_in_train']} (all folds)")
        rows.append([protocol, entry["protocol"], entry["model"] or "-", entry["text"],
                     "-" if entry.get("n") is None else str(entry["n"]), crossing,
                     "-" if baseline is None else f"{baseline['model']} {baseline['text']}"])
    return rows


def summary_lines(outcome) -> list[str]:
    found = outcome.findings
    claim = found["claim"]
    table = tabulate(protocol_rows(found), headers=[
        "protocol", "split", "model", f"{claim['label']} [95% CI]", "images", "test images with a copy in train",
        "best floor baseline"], disable_numparse=True)
    return [table, "", f"wrote {outcome.audit.state_file}", f"wrote {outcome.report.markdown}",
            f"wrote {outcome.report.html}", "", found["sentence"]]
