"""A suite file (``SUITE.toml``): the datasets, and the run options they share.

.. code-block:: toml

    [run]                       # bench run's options, by flag name without the dashes
    backbones = "densenet121,vgg16,xception"
    weights = "none"
    cv = 5
    max-trials = 3

    [[datasets]]
    name = "brain_mri"          # the run folder's name inside the suite folder
    path = "data/brain_mri"     # relative to the suite file's folder
    groups = "patients.csv"     # optional, like --groups
    copy-threshold = 0.8        # optional: only the data-specific options below

Options that change how the backbones are compared (backbones, weights, trials, epochs,
image size, seed, ...) are shared by every dataset; a dataset may set only
:data:`PER_DATASET` options. Command-line options override ``[run]``; a dataset's own
options override both.
"""

from __future__ import annotations

import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import RunConfig, SearchConfig, declared_options, result_options
from bench.errors import BenchError
from bench.runfolder import check_run_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Options a dataset may set for itself: they describe its data, not the comparison.
PER_DATASET = ("groups", "copy_threshold", "val_size", "test_size", "objective")
#: Options that name a dataset's location: per dataset in the file, never on the command line.
DATA_OPTIONS = ("data", "groups")
#: Options a suite sets itself for every dataset's run folder.
SUITE_SET = ("out", "reports", "name")
#: Smallest and largest --rope (a difference of the objective counted as no difference).
ROPE_BOUNDS = (0.0, 0.5)


@dataclass
class Dataset:
    name: str
    path: Path
    options: dict = field(default_factory=dict)  # PER_DATASET options, field names

    def as_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path),
                "options": {k: str(v) if isinstance(v, Path) else v for k, v in self.options.items()}}


@dataclass
class SuiteSpec:
    datasets: list[Dataset]
    shared: dict  # RunConfig / SearchConfig field -> value, for every dataset
    text: str = ""  # the suite file as the user wrote it

    def config_for(self, dataset: Dataset, suite_dir: Path, reports: Path) -> RunConfig:
        """The ordinary run configuration of ``dataset``: a run folder named after it in
        ``suite_dir``, its report under ``reports``."""
        flat = {**self.shared, **dataset.options, "data": dataset.path, "out": suite_dir, "name": dataset.name,
                "reports": reports}
        return RunConfig.from_dict(flat)

    def as_dict(self) -> dict:
        return {"datasets": [d.as_dict() for d in self.datasets], "shared": _plain(self.shared)}

    @classmethod
    def from_dict(cls, stored: dict, text: str = "") -> "SuiteSpec":
        datasets = [Dataset(d["name"], Path(d["path"]), _paths(d.get("options", {}))) for d in stored["datasets"]]
        return cls(datasets, dict(stored["shared"]), text)


def _plain(options: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}


def _paths(options: dict) -> dict:
    return {k: Path(v) if k == "groups" and v is not None else v for k, v in options.items()}


def _fields() -> dict[str, object]:
    """Field name -> type hint of every bench run option."""
    hints = {**typing.get_type_hints(RunConfig), **typing.get_type_hints(SearchConfig)}
    return {name: hints[name] for name, _, _ in declared_options()}


def _key(raw: str, where: str, allowed: typing.Iterable[str]) -> str:
    name = str(raw).strip().lstrip("-").replace("-", "_")
    allowed = list(allowed)
    if name not in allowed:
        valid = ", ".join(n.replace("_", "-") for n in allowed)
        raise BenchError(f"unknown option {raw!r} in {where} of the suite file; valid: {valid}")
    return name


def _value(name: str, value, hint, where: str):
    """``value`` from the TOML file as the field's type; one line naming it otherwise."""
    flag = name.replace("_", "-")
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    if typing.get_origin(kind) is list:  # backbones: "a,b" or ["a", "b"]
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    elif kind is bool and isinstance(value, bool):
        return value
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise BenchError(f"{flag} in {where} of the suite file must be a finite number, got {value}")
        return float(value)
    elif kind in (str, Path) and isinstance(value, str):
        return value
    wanted = {bool: "true or false", int: "a whole number", float: "a number", str: "a text in quotes",
              Path: "a path in quotes"}.get(kind, "a comma-separated text")
    raise BenchError(f"{flag} in {where} of the suite file must be {wanted}, got {value!r}")


def parse_suite(path: Path, overrides: dict | None = None) -> SuiteSpec:
    """Read and check ``path``; ``overrides``: bench run options given on the command line
    (field names), which replace ``[run]``'s. Raises :class:`BenchError` with one line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise BenchError(f"suite file {path} not found; pass a TOML file (see `bench suite --help`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read suite file {path} ({exc}); pass a readable UTF-8 TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"suite file {path} is not valid TOML ({exc}); fix that line") from None
    extra = set(raw) - {"run", "datasets"}
    if extra:
        raise BenchError(f"unknown table {sorted(extra)[0]!r} in suite file {path}; use [run] and [[datasets]]")
    return build_spec(raw.get("run", {}), raw.get("datasets", []), path.parent, overrides, text)


def build_spec(run: dict, datasets: list, base: Path, overrides: dict | None = None, text: str = "") -> SuiteSpec:
    """The suite from ``[run]`` and ``[[datasets]]`` tables (paths relative to ``base``)."""
    hints = _fields()
    shareable = [n for n in hints if n not in DATA_OPTIONS + SUITE_SET]
    if not isinstance(run, dict):
        raise BenchError("[run] in the suite file must be a table of bench run options")
    shared = {}
    for raw_key, value in run.items():
        name = _key(raw_key, "[run]", shareable)
        shared[name] = _value(name, value, hints[name], "[run]")
    for name, value in (overrides or {}).items():
        if name in DATA_OPTIONS:
            raise BenchError(f"--{name} names one dataset's files; set it per dataset under [[datasets]] in the "
                             "suite file")
        if name not in SUITE_SET:
            shared[name] = value
    if not isinstance(datasets, list) or not datasets:
        raise BenchError("the suite file lists no datasets; add [[datasets]] tables with name and path")
    out: list[Dataset] = []
    for i, entry in enumerate(datasets, start=1):
        where = f"dataset {i}"
        if not isinstance(entry, dict) or "name" not in entry or "path" not in entry:
            raise BenchError(f"{where} of the suite file needs a name and a path, e.g. name = \"mri\", path = \"data/mri\"")
        name = str(entry["name"])
        try:
            check_run_name(name)
        except BenchError:
            raise BenchError(f"dataset name {name!r} in the suite file must be letters, digits, '.', '_' or '-' "
                             "(it names the dataset's run folder)") from None
        if any(d.name == name for d in out):
            raise BenchError(f"dataset name {name!r} appears twice in the suite file; give each dataset its own name")
        where = f"dataset {name!r}"
        options = {}
        for raw_key, value in entry.items():
            if raw_key in ("name", "path"):
                continue
            key = str(raw_key).replace("-", "_")
            if key in hints and key not in PER_DATASET:
                raise BenchError(f"{raw_key} is shared by every dataset of a suite (it changes the comparison); "
                                 f"move it from {where} to [run]")
            key = _key(raw_key, where, PER_DATASET)
            options[key] = _value(key, value, hints[key], where)
        if "groups" in options:
            options["groups"] = (base / options["groups"]).resolve()
        data = (base / str(entry["path"])).resolve()
        if not data.is_dir():
            raise BenchError(f"data folder {data} of {where} does not exist; fix its path (relative to the suite file)")
        out.append(Dataset(name, data, options))
    spec = SuiteSpec(out, shared, text)
    for dataset in out:  # every option checked before any work: bounds, backbones, weights
        from bench.run import validate

        validate(spec.config_for(dataset, Path("."), Path(".")))
    return spec


def changed_options(stored: SuiteSpec, now: SuiteSpec) -> list[str]:
    """Result-changing differences between a suite's stored spec and the one given now."""
    guarded = result_options()
    diffs = []
    names = [d.name for d in stored.datasets]
    if names != [d.name for d in now.datasets]:
        diffs.append(f"datasets {', '.join(d.name for d in now.datasets)} (the suite has {', '.join(names)})")
    for name in sorted(set(stored.shared) | set(now.shared)):
        if name in guarded and stored.shared.get(name) != now.shared.get(name):
            diffs.append(f"{guarded[name]} {now.shared.get(name)} (the suite has {stored.shared.get(name)})")
    for old, new in zip(stored.datasets, now.datasets):
        if old.name == new.name and (old.options != new.options or old.path != new.path):
            diffs.append(f"dataset {old.name!r}'s path or options")
    return diffs
