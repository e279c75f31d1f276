"""The package's shape: imports run one way (no cycles between modules, nor between
sub-packages, and no stage imports a stage above it), modules stay small, the stage
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
#: bench's sub-packages and top-level modules, lowest layer first: a node imports only
#: nodes of its own layer or below (``__init__`` is ``bench/__init__.py``).
LAYERS = (
    ("__init__", "errors", "config", "schema", "atomic", "locks", "tables", "machine", "runfolder", "outputs", "lazy",
     "parallel", "row_reads", "faults", "stopping", "progress", "layers", "forward", "terminal", "collector",
     "forked"),  # shared helpers
    ("data",),
    ("search", "evaluate", "budget"),  # budget: --budget's time shares and racing
    ("report",),
    ("deploy",),  # export, serve, predict; an external evaluation writes its report with bench.report
    ("cli", "cli_options", "run", "preparation", "designs", "pipeline", "candidates", "floor", "mlflow_tracking", "suite", "audit"),  # what puts the stages together
)


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


def package_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(node, node it imports) -> the module imports behind that edge, where a node is a
    sub-package or a top-level module of the package (``pkg.sub.a`` belongs to ``pkg.sub``)."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, targets in graph.items():
        for target in sorted(targets):
            a, b = package_node(module), package_node(target)
            if a != b:
                edges.setdefault((a, b), []).append(f"{module} -> {target}")
    return edges


def package_node(module: str) -> str:
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Node -> the nodes it imports (see :func:`package_edges`)."""
    out: dict[str, set[str]] = {package_node(m): set() for m in graph}
    for a, b in package_edges(graph):
        out[a].add(b)
    return out


def upward_imports(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    """Each import of a node in a higher layer than the importer's, with the module imports behind it."""
    level = {name: i for i, layer in enumerate(layers) for name in layer}
    short = {node: node.partition(".")[2] or "__init__" for node in package_graph(graph)}
    return [f"{a} -> {b}: " + ", ".join(via) for (a, b), via in sorted(package_edges(graph).items())
            if level[short[b]] > level[short[a]]]


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")  # a lazy, relative import
    (pkg / "c.py").write_text("import pkg.a\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.sub.b"]]


def test_the_package_graph_finds_a_cycle_between_packages_and_an_upward_import(tmp_path):
    pkg = tmp_path / "pkg"
    for sub in ("low", "high"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    import pkg.high.b\n")  # a lazy import
    (pkg / "low" / "c.py").write_text("")
    (pkg / "high" / "b.py").write_text("from ..low import c\n")
    (pkg / "tool.py").write_text("import pkg.high.b\n")
    graph = import_graph(pkg)
    assert cycles(graph) == []  # no cycle between modules
    assert package_graph(graph) == {"pkg": set(), "pkg.low": {"pkg.high"}, "pkg.high": {"pkg.low"},
                                    "pkg.tool": {"pkg.high"}}
    assert cycles(package_graph(graph)) == [["pkg.high", "pkg.low"]]
    layers = (("__init__", "low"), ("high",), ("tool",))
    assert upward_imports(graph, layers) == ["pkg.low -> pkg.high: pkg.low.a -> pkg.high.b"]


def test_bench_imports_run_one_way():
    assert cycles(import_graph(BENCH)) == []


def test_bench_packages_import_one_way():
    assert cycles(package_graph(import_graph(BENCH))) == []


def test_every_package_sits_in_one_layer():
    placed = [name for layer in LAYERS for name in layer]
    nodes = {node.partition(".")[2] or "__init__" for node in package_graph(import_graph(BENCH))}
    assert len(placed) == len(set(placed))
    assert nodes ^ set(placed) == set(), "add the new module to a layer of LAYERS (or drop a removed one)"


def test_no_package_imports_a_layer_above_it():
    assert upward_imports(import_graph(BENCH), LAYERS) == []


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
