"""Progress of long steps: plain log lines with rate and time left off a terminal, a rich
bar on one; the search's lines carry the best score so far and the time left."""

from __future__ import annotations

import io
import logging

from rich.console import Console
from rich.progress import Progress

from bench.progress import PLAIN_EVERY, eta_text, step, use_display


def test_plain_lines_at_every_quarter_with_rate_and_time_left(caplog):
    caplog.set_level(logging.INFO, logger="bench.progress")
    with step("xception: caching train features", total=100) as s:
        for done in range(10, 101, 10):
            s.update(done)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == round(1 / PLAIN_EVERY) - 1  # 30/100, 50/100, 80/100; the caller reports the end
    assert lines[0].startswith("xception: caching train features: 30/100 images (")
    assert all("images/s, " in line and " left)" in line for line in lines)


def test_a_terminal_display_shows_a_bar_instead_of_lines(caplog):
    caplog.set_level(logging.INFO, logger="bench.progress")
    out = io.StringIO()
    progress = Progress(console=Console(file=out, force_terminal=True, width=100))
    with progress, use_display(progress):
        with step("resnet50: trials", total=4, unit="trials") as s:
            assert s.shown
            s.update(2, "best val_auc 0.8100")
            assert progress.tasks[0].completed == 2 and "best val_auc 0.8100" in progress.tasks[0].description
        assert not progress.tasks  # removed when the step ends
    assert not caplog.records
    with step("after the display", total=2) as s:
        assert not s.shown


def test_eta_text():
    assert eta_text(42.4) == "42 s" and eta_text(185) == "3 min 05 s" and eta_text(3720) == "1 h 02 min"


def test_a_run_logs_the_progress_of_every_stage_with_counts(image_folder, tmp_path, caplog):
    from typer.testing import CliRunner

    from bench.cli import app

    caplog.set_level(logging.INFO, logger="bench")
    result = CliRunner().invoke(app, [
        "run", "--data", str(image_folder), "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
        "--max-trials", "3", "--epochs", "1", "--tuner", "random", "--max-unfreeze", "0", "--no-export", "--batch-size", "4",
        "--out", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), "--name", "p"])
    assert result.exit_code == 0, result.output
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("mobilenet_v2: caching train features: ") and "images/s" in m for m in messages)
    assert any(m.startswith("mobilenet_v2: cached train features of ") for m in messages)
    trials = [m for m in messages if m.strip().startswith("trial ")]
    assert len(trials) == 3 and all("best val_auc" in m for m in trials)
    assert "left" in trials[0] and "left" not in trials[-1]  # the time left, until nothing is
    # the stages after the last trial, each with its counts
    after = messages[messages.index(trials[-1]) + 1:]
    test = next(m for m in after if m.startswith("mobilenet_v2: final evaluation, predicting the test images: "))
    # the val images: through the model, or (a frozen winner) their features kept from the caching pass
    val = next(m for m in after if m.startswith("mobilenet_v2: final evaluation") and "val images" in m)
    assert (val.endswith(")") and " images (" in val) or ("frozen features from the caching pass" in val
                                                          and val.endswith("s"))
    assert "/" in test
    assert any(m.startswith("mobilenet_v2: calibrating on ") and " val images" in m for m in after)
    assert any(m.startswith("mobilenet_v2: test metrics of ") and "1000 bootstrap resamples" in m for m in after)
    assert any(m.startswith("mobilenet_v2: calibration and operating-point checks") for m in after)
    assert any(m.startswith("report: computing its tables") for m in after)
    assert any(m.startswith("report: writing report.md, report.html and ") and " figures" in m for m in after)


def test_copy_grouping_reports_each_stage_with_its_counts(tmp_path, monkeypatch, caplog):
    """10,000 small files group in minutes: each stage of the grouping says what it does."""
    import bench.data.copies as copies
    from bench.data.scan import scan
    from bench.data.split import group_index
    from conftest import make_folder

    data = make_folder(tmp_path / "data", {"a": 6, "b": 6}, size=32)
    index = scan(data)
    caplog.set_level(logging.INFO, logger="bench")
    group_index(index)
    assert not [r for r in caplog.records if r.getMessage().startswith("grouping copies")]  # a small folder is quiet
    index.link_cache.clear()
    monkeypatch.setattr(copies, "PROGRESS_FROM", 10)
    group_index(index)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("grouping copies")]
    assert len(lines) == 3
    assert lines[0] == "grouping copies: looking for candidate pairs among 12 images"
    assert lines[1].startswith("grouping copies: scoring the layouts of ") and " candidate pairs (" in lines[1]
    assert lines[2].startswith("grouping copies: checking ") and " close pairs by keypoints (" in lines[2]


def test_every_bar_of_a_run_is_gone_when_its_step_ends(image_folder, tmp_path):
    from bench.run import RunConfig, execute, prepare_run

    progress = Progress(console=Console(file=io.StringIO(), force_terminal=True, width=100))
    seen = []
    config = RunConfig.from_dict(dict(data=image_folder, backbones=["mobilenet_v2"], weights="none", image_size=32,
                                      out=tmp_path / "results", name="bars", tuner="random", max_trials=2, epochs=1,
                                      max_unfreeze=0, baseline=False))
    with progress, use_display(progress):
        original = progress.add_task
        progress.add_task = lambda description, **kw: seen.append(description) or original(description, **kw)
        execute(prepare_run(config))
        assert not progress.tasks  # caching bars and the search's bar all removed
    assert any("caching train features" in d for d in seen) and "mobilenet_v2: trials" in seen
