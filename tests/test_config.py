"""Options declared once (bench.config): the CLI, the checks, the resume guard and the
report's reproduce command all come from the same declaration."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import pytest
import typer

from bench.cli import app
from bench.config import (
    DEFAULT_EPOCHS,
    RunConfig,
    SearchConfig,
    as_flag,
    check_bounds,
    command_line,
    declared_options,
    option_rows,
    result_options,
)
from bench.errors import BenchError
from bench.pipeline import NOTEBOOK_EPOCHS, BackboneJob


def _run_command():
    return typer.main.get_command(app).commands["run"]


def _parse(args: list[str]) -> RunConfig:
    """``bench run ARGS`` parsed by the real CLI (nothing runs) into a RunConfig."""
    ctx = _run_command().make_context("run", list(args))
    values = {k: v.value if isinstance(v, Enum) else v for k, v in ctx.params.items()
              if k not in ("resume", "export", "quiet", "verbose")}
    return RunConfig.from_dict(values)


def test_every_declared_option_is_a_cli_flag_with_its_default():
    params = {p.name: p for p in _run_command().params}
    for name, opt, default in declared_options():
        assert opt.flag in params[name].opts, name
        if opt.off_flag:
            assert opt.off_flag in params[name].secondary_opts
        for choice in opt.choices or ():
            assert _parse([opt.flag, choice]).get(name) == choice
        if opt.choices:
            with pytest.raises(Exception, match="no-such-choice. is not one of"):
                _parse([opt.flag, "no-such-choice"])
    parsed = _parse([])
    assert parsed.to_dict() == RunConfig().to_dict()  # CLI defaults are the dataclass defaults


def test_equivalent_command_parses_back_to_the_same_config(tmp_path):
    config = RunConfig.from_dict(dict(
        data=tmp_path, backbones=["resnet50", "xception"], weights="none", val_size=0.2, image_size=96,
        baseline=False, deterministic=True, mixed_precision="off", name="r1", seed=3, tuner="random",
        max_trials=4, epochs=10, objective="val_loss", batch_size=16, augment=True, aug_views=2, max_unfreeze=1))
    args = command_line(config.to_dict())
    assert args[:2] == ["bench", "run"] and "--epochs" in args and "--no-baseline" in args and "--augment" in args
    back = _parse(args[2:])
    assert back.to_dict() == {**config.to_dict(), "out": "results", "reports": "reports"}


def test_run_json_form_round_trips_and_reads_old_flat_files():
    config = RunConfig.from_dict({"data": "/d", "epochs": 7, "max_trials": 2, "name": "x", "patience": 3})
    assert isinstance(config.search, SearchConfig) and config.search.epochs == 7 and config.search.patience == 3
    assert config.data == Path("/d") and config.get("max_trials") == 2 and config.get("name") == "x"
    flat = config.to_dict()
    assert flat["epochs"] == 7 and "search" not in flat  # run.json keeps one flat key per setting
    assert RunConfig.from_dict(flat).to_dict() == flat


def test_the_resume_guard_covers_exactly_the_result_changing_options():
    guarded = result_options()
    assert guarded["max_trials"] == "--max-trials" and guarded["epochs"] == "--epochs"
    assert not {"out", "reports", "name"} & set(guarded)
    assert as_flag("augment", False) == "--no-augment" and as_flag("deterministic", False) == "no --deterministic"
    assert as_flag("image_size", None) == "no --image-size" and as_flag("backbones", ["a", "b"]) == "--backbones a,b"


@pytest.mark.parametrize("field, value, message", [
    ("max_trials", 0, "--max-trials must be at least 1, got 0"),
    ("max_unfreeze", -1, "--max-unfreeze must be at least 0, got -1"),
    ("tuner", "grid", "unknown --tuner 'grid'; choose one of: bayesian, random, hyperband"),
    ("mixed_precision", "half", "unknown --mixed-precision 'half'"),
    ("copy_threshold", float("nan"), "--copy-threshold must be a finite number, got nan"),
    ("min_sensitivity", float("inf"), "--min-sensitivity must be a finite number, got inf"),
    ("image_size", 100_000, "--image-size must be at most 1024, got 100000"),
    ("max_trials", 10**8, "--max-trials must be at most 10000"),
    ("trial_timeout", "2s", "--trial-timeout must be at least 5, got 2.0"),
    ("trial_timeout", "48h", "--trial-timeout must be at most 86400, got 172800.0"),
])
def test_bounds_and_choices_come_from_the_declaration(field, value, message):
    with pytest.raises(BenchError, match=message):
        check_bounds(RunConfig.from_dict({field: value}))


def test_trial_timeout_reads_seconds_or_a_unit():
    assert _parse([]).search.trial_timeout == 120
    for text, seconds in (("90", 90), ("90s", 90), ("10m", 600), ("1.5h", 5400), ("45 min", 2700)):
        assert _parse(["--trial-timeout", text]).search.trial_timeout == seconds
    assert "--trial-timeout" not in result_options()  # a wait, not a result: --resume may change it


@pytest.mark.parametrize("args, message", [
    (["--trial-timeout", "soon"], "--trial-timeout 'soon' is not a duration; give seconds (90) or a number with s, m"),
    (["--trial-timeout", "nan"], "--trial-timeout 'nan' is not a duration"),
    (["--copy-threshold", "nan"], "--copy-threshold must be a finite number, got nan"),
    (["--image-size", "100000"], "--image-size must be at most 1024, got 100000"),
])
def test_out_of_range_options_stop_bench_run_before_any_work(tmp_path, args, message):
    """NaN was accepted and failed later ("cannot convert float NaN to integer"); a huge
    --image-size ran out of memory: both are one line, exit 2, and no run folder."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["run", "--data", str(tmp_path), "--weights", "none", "--out",
                                      str(tmp_path / "results"), "--name", "r", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "results").exists()


def test_epochs_not_given_is_a_sentinel_for_the_notebook_baseline(tmp_path):
    """An explicit --epochs 10 gives the baseline 10 epochs; only a missing --epochs means 15."""
    assert _parse([]).search.epochs is None
    assert _parse(["--epochs", "10"]).search.epochs == 10

    def baseline_epochs(epochs):
        search = SearchConfig(epochs=epochs)
        job = BackboneJob("xception_notebook", 1, True, tmp_path, tmp_path, None, "none", None, search)
        plain = BackboneJob("xception", 0, False, tmp_path, tmp_path, None, "none", None, search)
        return job.search_settings().trial_epochs, plain.search_settings().trial_epochs

    assert baseline_epochs(None) == (NOTEBOOK_EPOCHS, DEFAULT_EPOCHS)
    assert baseline_epochs(10) == (10, 10)
    assert baseline_epochs(3) == (3, 3)


def test_reproduce_rows_name_flags_and_say_what_changes_results():
    rows = {flag: (value, changes) for flag, value, changes in option_rows(RunConfig().to_dict())}
    assert rows["--epochs"] == ("not given", True) and rows["--out"] == ("results", False)
    assert rows["patience"] == ("5", True)  # internal settings are listed by field name
    assert rows["--trial-timeout"] == ("120 s", False) and rows["--budget"] == ("not given", False)
    timed = {flag: value for flag, value, _ in option_rows(RunConfig.from_dict({"budget": "10m"}).to_dict())}
    assert timed["--budget"] == "600 s"  # durations with their unit, not a bare 600.0
