"""The package's shape: imports run one way (no cycles), modules stay small, the stage
sub-packages only re-export, and the CLI starts without TensorFlow."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
MAX_LINES = 450
STAGES = ("data", "search", "evaluate", "deploy", "report")


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a folder)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in the file, lazy imports too)."""
    modules = module_names(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = name.split(".") if is_package else name.split(".")[:-1]
                    parent = parent[: len(parent) - (node.level - 1)]
                    base = ".".join(parent + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # a module importing its own package's __init__ is not an edge of the pipeline
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")  # a lazy, relative import
    (pkg / "c.py").write_text("import pkg.a\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.sub.b"]]


def test_bench_imports_run_one_way():
    assert cycles(import_graph(BENCH)) == []


def test_no_module_is_over_450_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in module_names(BENCH).items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_packages_have_a_docstring_and_only_reexport(stage):
    import importlib

    init = BENCH / stage / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree) and len(ast.get_docstring(tree)) > 100
    assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    package = importlib.import_module(f"bench.{stage}")
    for name in package.__all__:  # every re-export resolves to the object in its module
        assert getattr(package, name) is not None


def test_the_cli_and_the_data_stage_start_without_tensorflow():
    code = ("import sys, bench.cli, bench.config, bench.data, bench.data.split, bench.run; "
            "from bench.data import make_split; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_every_failure_mode_in_the_readme_names_a_test_that_exists():
    readme = (BENCH.parent / "docs" / "failure-modes.md").read_text(encoding="utf-8")
    table = readme[readme.index("| fault or bad input"):]
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)(?:\[[^\]]*\])?`", table)
    assert len(named) >= 20
    tests = BENCH.parent / "tests"
    for file, test in named:
        tree = ast.parse((tests / file).read_text(encoding="utf-8"))
        assert test in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, f"{file}::{test}"
