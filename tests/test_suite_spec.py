"""The suite file: shared options, per-dataset data options, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import BenchError
from bench.suite.spec import changed_options, parse_suite

runner = CliRunner()


def write(tmp_path: Path, text: str) -> Path:
    for name in ("a", "b"):
        (tmp_path / "data" / name / "x").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "suite.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
[run]
backbones = "mobilenet_v2, vgg16"
weights = "none"
max-trials = 2
image_size = 48
cv = 3

[[datasets]]
name = "a"
path = "data/a"
copy-threshold = 0.8

[[datasets]]
name = "b"
path = "data/b"
groups = "patients.csv"
"""


def test_shared_options_and_data_options_per_dataset(tmp_path):
    spec = parse_suite(write(tmp_path, GOOD))
    assert [d.name for d in spec.datasets] == ["a", "b"]
    assert spec.datasets[0].path == (tmp_path / "data" / "a").resolve()  # relative to the suite file
    assert spec.datasets[1].options["groups"] == (tmp_path / "patients.csv").resolve()
    assert spec.shared["backbones"] == ["mobilenet_v2", "vgg16"] and spec.shared["max_trials"] == 2
    config = spec.config_for(spec.datasets[0], tmp_path / "suite", tmp_path / "reports")
    assert (config.cv, config.copy_threshold, config.search.max_trials, config.name) == (3, 0.8, 2, "a")
    assert config.out == tmp_path / "suite" and config.data == spec.datasets[0].path
    other = spec.config_for(spec.datasets[1], tmp_path / "suite", tmp_path / "reports")
    assert other.copy_threshold != 0.8  # one dataset's option stays its own


def test_command_line_options_override_the_file(tmp_path):
    spec = parse_suite(write(tmp_path, GOOD), overrides={"max_trials": 5, "out": tmp_path})
    assert spec.shared["max_trials"] == 5 and "out" not in spec.shared


@pytest.mark.parametrize("text, words", [
    (GOOD.replace("max-trials = 2", "max-trials = \"2\""), "max-trials in [run] of the suite file must be a whole"),
    (GOOD.replace("max-trials = 2", "max-trails = 2"), "unknown option 'max-trails' in [run]"),
    (GOOD.replace("copy-threshold = 0.8", "epochs = 3"), "epochs is shared by every dataset"),
    (GOOD.replace("name = \"b\"", "name = \"a\""), "dataset name 'a' appears twice"),
    (GOOD.replace("path = \"data/b\"", "path = \"data/missing\""), "does not exist"),
    (GOOD.replace("max-trials = 2", "max-trials = 0"), "--max-trials must be at least 1"),
    (GOOD.replace("vgg16", "vgg17"), "vgg17"),
    (GOOD.replace("[run]", "[runs]"), "unknown table 'runs'"),
    (GOOD + "\n[[datasets]]\nname = \"c\"\n", "needs a name and a path"),
    ("[run\n", "is not valid TOML"),
    ("[run]\nweights = \"none\"\n", "lists no datasets"),
    (GOOD.replace("name = \"b\"", "name = \"b/../x\""), "must be letters, digits"),
])
def test_bad_suite_files_get_one_line(tmp_path, text, words):
    with pytest.raises(BenchError, match=None) as info:
        parse_suite(write(tmp_path, text))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_data_options_cannot_come_from_the_command_line(tmp_path):
    with pytest.raises(BenchError, match="set it per dataset"):
        parse_suite(write(tmp_path, GOOD), overrides={"groups": tmp_path / "g.csv"})


def test_changed_options_name_what_would_change_results(tmp_path):
    path = write(tmp_path, GOOD)
    stored = parse_suite(path)
    assert changed_options(stored, parse_suite(path, overrides={"out": tmp_path / "elsewhere"})) == []
    diffs = changed_options(stored, parse_suite(path, overrides={"max_trials": 4}))
    assert diffs == ["--max-trials 4 (the suite has 2)"]
    edited = write(tmp_path, GOOD.replace("copy-threshold = 0.8", "copy-threshold = 0.9"))
    assert changed_options(stored, parse_suite(edited)) == ["dataset 'a''s path or options"]


def test_cli_refuses_a_bad_suite_file_with_one_line_and_no_folder(tmp_path):
    path = write(tmp_path, GOOD.replace("max-trials = 2", "max-trials = -1"))
    result = runner.invoke(app, ["suite", str(path), "--out", str(tmp_path / "out"), "--name", "s"])
    assert result.exit_code == 2
    assert "Error: --max-trials must be at least 1" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "s").exists()
    missing = runner.invoke(app, ["suite", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "suite file" in missing.output and "not found" in missing.output
    rope = runner.invoke(app, ["suite", str(path), "--rope", "nan"])
    assert rope.exit_code == 2 and "--rope must be between" in rope.output
    data = runner.invoke(app, ["suite", str(path), "--data", str(tmp_path)])
    assert data.exit_code == 2 and "--data" in data.output
