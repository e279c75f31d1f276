"""The README and the docs site cannot drift from the code.

- ``mkdocs build --strict`` builds the site (docs/, mkdocs.yml) without a warning;
- every ``bench ...`` command in a code block names a real command, real options and valid
  choice values; blocks without ``<!-- illustrative -->`` just before them are run on
  tiny data; every option in an inline ``bench ...`` span exists too;
- ``.ci/run`` runs exactly the README's test command, after installing what the README
  says to install first;
- the README stays short, and neither it nor the docs speak of development history.
"""

from __future__ import annotations

import enum
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from bench.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ILLUSTRATIVE = "<!-- illustrative -->"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
OPTION = re.compile(r"^--?[A-Za-z][\w-]*$")
#: Options a run of a documented command gets on top of what the page shows: tiny data.
TINY = {"demo-data": ["--n", "5", "--size", "32"]}

COMMAND = typer.main.get_command(app)


def code_blocks(page: Path) -> list[tuple[str, str, bool]]:
    """(language, text, illustrative) of every fenced block of ``page``."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        blocks.append((match.group(1), match.group(2), before == ILLUSTRATIVE))
    return blocks


def bench_commands(script: str) -> list[list[str]]:
    """Each ``bench ...`` invocation of a shell snippet, as its arguments after ``bench``."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            tokens = line.split()
        command: list[str] = []
        for token in tokens + [";"]:
            if token in {"&&", "||", ";", "|", "&"} or token.endswith(";"):
                if command and command[0] == "bench":
                    found.append(command[1:])
                command = []
            elif command or not re.match(r"^[A-Z_]+=", token):  # skip leading VAR=value
                command.append(token)
    return found


def shown_commands(illustrative: bool | None = None) -> list[tuple[str, list[str]]]:
    out = []
    for page in PAGES:
        for language, text, marked in code_blocks(page):
            if language in {"bash", "sh", "console"} and (illustrative is None or marked == illustrative):
                out += [(f"{page.relative_to(ROOT)}: bench {shlex.join(args)}", args) for args in bench_commands(text)]
    return out


def inline_commands() -> list[tuple[str, list[str]]]:
    out = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for span in re.findall(r"`(bench [a-z][^`]*)`", text):
            out.append((f"{page.relative_to(ROOT)}: `{span}`", span.split()[1:]))
    return out


def choices(param) -> list[str] | None:
    """The values an option accepts when they are a fixed set (an enum or a click Choice)."""
    kind = getattr(param, "type", None)
    if isinstance(kind, click.Choice):
        return [str(c) for c in kind.choices]
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    return None


def check_options(where: str, args: list[str], values: bool) -> None:
    assert args, f"{where}: no command after bench"
    sub = COMMAND.commands.get(args[0])
    assert sub is not None, f"{where}: no command {args[0]!r} (bench has {sorted(COMMAND.commands)})"
    params = {opt: p for p in sub.params for opt in (*p.opts, *p.secondary_opts)}
    tokens = [t.strip("[]") for t in args[1:]]
    for i, token in enumerate(tokens):
        name = token.split("=", 1)[0]
        if not OPTION.match(name):
            continue
        assert name in params, f"{where}: bench {args[0]} has no option {name}"
        param = params[name]
        allowed = choices(param)
        if values and allowed and i + 1 < len(tokens):
            value = token.split("=", 1)[1] if "=" in token else tokens[i + 1]
            assert value in allowed, f"{where}: {name} {value!r} is not one of {allowed}"


def test_mkdocs_builds_strict_without_warnings(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_COLOR": "1"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not re.search(r"^\s*(WARNING|ERROR)\b", output, re.M), output
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_documented_command_and_option_exists():
    shown = shown_commands()
    assert len(shown) >= 20, shown
    for where, args in shown:
        check_options(where, args, values=True)
    inline = inline_commands()
    assert len(inline) >= 10, inline
    for where, args in inline:
        check_options(where, args, values=False)


def test_a_misspelt_option_is_caught():
    with pytest.raises(AssertionError, match="no option --max-trial"):
        check_options("x", ["run", "--max-trial", "3"], values=True)
    with pytest.raises(AssertionError, match="is not one of"):
        check_options("x", ["run", "--tuner", "grid"], values=True)
    assert bench_commands('X=1 bench scan d --out o && echo hi; KERASTUNER_TUNER_ID=chief bench run \\\n --cv 5 # note') \
        == [["scan", "d", "--out", "o"], ["run", "--cv", "5"]]


def test_commands_not_marked_illustrative_run_on_tiny_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runnable = shown_commands(illustrative=False)
    assert runnable, "no runnable bench command in the docs"
    for where, args in runnable:
        result = CliRunner().invoke(app, [*args, *TINY.get(args[0], [])])
        assert result.exit_code == 0, f"{where}: exit {result.exit_code}\n{result.output}"


def _readme_blocks() -> list[str]:
    return [text for language, text, _ in code_blocks(ROOT / "README.md") if language == "bash"]


def test_ci_runs_exactly_the_readme_test_command():
    blocks = _readme_blocks()
    first, tests = blocks[0], next(b for b in blocks if "pytest" in b)
    assert "bench run" in first and "--backbones" in first
    command = tests.strip().splitlines()[-1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci, f".ci/run does not run the README's test command:\n{command}"
    # what the README says to install first, CI installs
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    wanted = re.search(r"apt-get install -y ([\w .-]+?)`", readme).group(1).split()
    ci_text = "\n".join(ci)
    for package in wanted:
        assert re.search(rf"apt-get install .*\b{re.escape(package)}\b", ci_text), package


def test_readme_is_short_and_points_to_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"docs/{page.name}" in readme, f"README has no link to docs/{page.name}"


HISTORY = [
    r"\bstop \d+", r"\bissues? #?\d+", r"\bbefore the fix\b", r"\bsince then\b", r"\bthe old\b", r"\bthis machine\b",
    r"\bhere\)", r"\bmeasured here\b", r"\b\d+(\.\d+)? ?(s|min|seconds) here\b", r"\bat commit\b",
    r"(?<![\w-])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w-])",
]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_speak_in_the_present_tense(page):
    text = page.read_text(encoding="utf-8")
    for pattern in HISTORY:
        match = re.search(pattern, text, re.I)
        assert match is None, f"{page.name}: development history {match.group(0)!r}: say what is"


def _docs_helper():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_docs_helper", ROOT / "benchmarks" / "_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_docs_replaces_only_its_own_section(tmp_path):
    helper = _docs_helper()
    page = tmp_path / "performance.md"
    page.write_text("# P\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\nkeep\n<!-- bench:b -->\nold b\n<!-- /bench:b -->\n")
    helper.replace_section("a", "new a\n", page)
    assert page.read_text() == "# P\n<!-- bench:a -->\nnew a\n<!-- /bench:a -->\nkeep\n<!-- bench:b -->\nold b\n<!-- /bench:b -->\n"
    with pytest.raises(SystemExit, match="no section <!-- bench:c -->"):
        helper.replace_section("c", "x", page)
    line = helper.header((1.5, 1.0, 0.5), ["benchmarks/x.py", "--quick"])
    assert "load average 1.50 at the start" in line and "`python benchmarks/x.py --quick`" in line


def test_every_performance_section_belongs_to_a_benchmark():
    sections = re.findall(r"<!-- bench:([\w-]+) -->", (ROOT / "docs" / "performance.md").read_text(encoding="utf-8"))
    assert len(sections) == len(set(sections)) >= 8
    scripts = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "benchmarks").glob("*.py"))
    for name in sections:
        assert f'"{name}"' in scripts, f"no benchmark writes section {name!r} of docs/performance.md"
