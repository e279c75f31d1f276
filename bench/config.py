"""Every ``bench run`` option, declared once (no TensorFlow import).

Each option is a dataclass field whose metadata (:class:`Option`) holds its command-line
flag, help text, bounds or choices and whether it changes results. From that one
declaration come the typer parameters of ``bench run`` (:mod:`bench.cli`), the checks on
values (:func:`check_bounds`), the ``--resume`` guard (:func:`result_options`) and the
report's reproduce section (:func:`option_rows`, :func:`command_line`). Fields without
an :class:`Option` are internal settings stored in ``run.json`` but not on the CLI.

``run.json`` stores the configuration flat: one key per field, search settings beside
run settings.
"""

from __future__ import annotations

import math
import re

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from bench.errors import BenchError


@dataclass(frozen=True)
class Objective:
    direction: str  # "max" or "min"
    label: str  # as plots and tables name it


#: Validation objectives ``--objective`` accepts, their direction and label.
OBJECTIVE_SPECS = {
    "val_auc": Objective("max", "val AUC"),
    "val_f1": Objective("max", "val F1"),
    "val_accuracy": Objective("max", "val accuracy"),
    "val_loss": Objective("min", "val loss"),
}
OBJECTIVES = {name: spec.direction for name, spec in OBJECTIVE_SPECS.items()}
OBJECTIVE_LABELS = {name: spec.label for name, spec in OBJECTIVE_SPECS.items()}
#: KerasTuner search algorithms ``--tuner`` accepts (bench.search.tuner maps them to classes).
TUNER_NAMES = ("bayesian", "random", "hyperband")
#: ``--mixed-precision`` modes (bench.search.runtime applies them).
MIXED_PRECISION_MODES = ("auto", "on", "off", "bfloat16")
#: ``--runtime`` choices: what runs the frozen pass (bench.search.runtime, bench.search.openvino_runtime).
RUNTIMES = ("tensorflow", "openvino")
#: ``--test-size`` without ``--cv`` when not given (with ``--cv`` it is 0: all data in CV).
DEFAULT_TEST_SIZE = 0.15
#: Epochs per trial when ``--epochs`` is not given; the notebook baseline then trains
#: NOTEBOOK_EPOCHS (bench.pipeline), as the original notebook did.
DEFAULT_EPOCHS = 10
#: ``--max-head-weights`` when not given: the largest hidden layer the search puts after a
#: flattened feature map. Such a head trains on the whole map (Xception's at 224 px: 100,352
#: values, so 25.7 M weights into 256 units), and its epochs cost tens of times a pooled
#: head's: at the default, a 224 px map is flattened into the output layer only
#: (docs/search.md gives the measured cost and scores of both spaces).
DEFAULT_MAX_HEAD_WEIGHTS = 2_000_000
#: ``--copy-threshold`` when not given (bench.data.copies explains the measure).
DEFAULT_COPY_THRESHOLD = 0.70
#: The largest --image-size: a 1024 px input already needs ~12 MB a float32 image before
#: the backbone's activations; larger inputs exhaust memory rather than help.
MAX_IMAGE_SIZE = 1024
#: ``--group-by`` choices: which DICOM header attribute groups images (bench.data.header_groups).
GROUP_BY = ("patient", "study", "none")
#: ``--window`` rules besides ``center,width`` (bench.data.dicom applies them).
WINDOW_RULES = ("file", "minmax")
#: ``--trial-timeout`` when not given, in seconds. Workers call the chief at least every
#: 5 s while they train (bench.search.distributed), so the timeout measures silence, not
#: trial length: two minutes is 24 missed calls, far beyond a network hiccup or a pause
#: of the worker's process, and a lost machine's trial waits at most that long.
DEFAULT_TRIAL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Option:
    """How a config field appears on the command line."""

    flag: str  # "--max-trials"
    help: str
    low: float | None = None  # smallest allowed value
    high: float | None = None  # largest allowed value
    choices: tuple[str, ...] | None = None
    off_flag: str | None = None  # booleans with an off switch: "--no-augment"
    changes_results: bool = True  # refused by --resume when it differs from run.json
    cli_type: type | None = None  # when the CLI reads another type than the field holds
    show_default: str | None = None  # the default as --help shows it, when not the field's
    unit: str | None = None  # what the stored number counts ("s"), for the report's options table


def option(default=MISSING, *, factory=MISSING, **kwargs):
    """A dataclass field declared as a ``bench run`` option (see :class:`Option`)."""
    return field(default=default, default_factory=factory, metadata={"option": Option(**kwargs)})


@dataclass
class SearchConfig:
    """How each backbone is searched, and how its decision thresholds are chosen."""

    seed: int = option(0, flag="--seed", help="Seed for the split and the search.")
    tuner: str = option("bayesian", flag="--tuner", help="KerasTuner search algorithm.", choices=TUNER_NAMES)
    max_trials: int = option(10, flag="--max-trials", low=1, high=10_000,
                             help="Trials per backbone (hyperband sets its own count).")
    epochs: int | None = option(None, flag="--epochs", low=1, high=10_000, show_default=f"{DEFAULT_EPOCHS}",
                                help=f"Epochs per trial (both phases together when fine-tuning); not given: "
                                     f"{DEFAULT_EPOCHS}, and the notebook baseline's own 15.")
    objective: str = option("val_auc", flag="--objective", choices=tuple(OBJECTIVES),
                            help="Validation metric the search maximises (val_loss: minimises).")
    batch_size: int = option(32, flag="--batch-size", low=1, high=4096, help="Batch size.")
    augment: bool = option(False, flag="--augment", off_flag="--no-augment",
                           help="Train on cached augmented views too.")
    aug_views: int = option(4, flag="--aug-views", low=1, high=64, help="Augmented views per training image with --augment.")
    max_unfreeze: int = option(2, flag="--max-unfreeze", low=0, high=1000,
                               help="Largest number of top backbone blocks the search may fine-tune.")
    max_head_weights: int = option(DEFAULT_MAX_HEAD_WEIGHTS, flag="--max-head-weights", low=0, high=10**12,
                                   help="Largest hidden layer the search puts after a flattened feature map, in "
                                        "weights: flatten heads take hidden layers only where the map's values x "
                                        "256 units fit (Xception's 7x7x2048 map at 224 px does not: 25.7 M), and "
                                        "are otherwise one output layer on the map; 0: no limit.")
    min_sensitivity: float = option(0.95, flag="--min-sensitivity", low=0.5, high=1.0,
                                    help="Binary: the 'sensitivity' operating point's threshold keeps validation "
                                         "sensitivity at least this high.")
    min_specificity: float = option(0.95, flag="--min-specificity", low=0.5, high=1.0,
                                    help="Binary: the 'specificity' operating point's threshold keeps validation "
                                         "specificity at least this high.")
    trial_timeout: float = option(DEFAULT_TRIAL_TIMEOUT_S, flag="--trial-timeout", low=5, high=86_400, cli_type=str,
                                  changes_results=False, show_default="120 s", unit="s",
                                  help="Distributed: a trial whose worker has not called the chief for this long "
                                       "(seconds, or with a unit: 90s, 10m, 1h) goes back to the queue and runs on "
                                       "another worker. Workers call at least every 5 s while they train.")
    budget: float | None = option(None, flag="--budget", low=10, high=30 * 86_400, cli_type=str,
                                  changes_results=False, show_default="none", unit="s",
                                  help="Stop on time (seconds, or 90s, 10m, 1h): the searches share the time left "
                                       "(each stops in the epoch that uses up its share), and under --cv a "
                                       "backbone whose fold scores fall behind the leader's beyond the corrected "
                                       "paired interval is dropped after each round of folds. Counts from the "
                                       "search's start; the scan, the report and the export are not counted.")
    patience: int = 5
    class_weights: bool = True
    tensorboard: bool = True

    @property
    def trial_epochs(self) -> int:
        """Epochs per trial: ``--epochs``, or :data:`DEFAULT_EPOCHS` when not given."""
        return DEFAULT_EPOCHS if self.epochs is None else self.epochs


@dataclass
class RunConfig:
    """Everything that defines a run: data, split, backbones, and the search settings."""

    data: Path | None = option(None, flag="--data", show_default="the synthetic demo data",
                               help="Folder with one sub-folder per class.")
    backbones: list[str] = option(factory=lambda: ["xception", "mobilenet_v2"], flag="--backbones", cli_type=str,
                                  help="Comma-separated backbone names or wildcards.")
    weights: str = option("imagenet", flag="--weights",
                          help="'imagenet', 'none' (random init), a weights file / folder, or a comma-separated "
                               "list of them: each backbone runs from each, one row per pair.")
    val_size: float = option(0.15, flag="--val-size", help="Validation fraction.")
    test_size: float | None = option(None, flag="--test-size", show_default=f"{DEFAULT_TEST_SIZE}; 0 with --cv",
                                     help="Test fraction, held out from every choice (with --cv: from the "
                                          "cross-validation too, evaluated once by the final model).")
    copy_threshold: float = option(DEFAULT_COPY_THRESHOLD, flag="--copy-threshold", low=0.05, high=0.99,
                                   help="How alike two images must be to link as copies (layout correlation; "
                                        "the keypoints needed move with it): higher links fewer.")
    groups: Path | None = option(None, flag="--groups", show_default="none",
                                 help="CSV with columns path,group (patient or study IDs): files of a group "
                                      "stay in one split, on top of detected copies.")
    group_by: str = option("patient", flag="--group-by", choices=GROUP_BY,
                           help="DICOM files: keep the images of one patient (PatientID) or one study "
                                "(StudyInstanceUID) in one split, on top of detected copies; 'none' ignores the "
                                "headers. --groups, when given, is used instead.")
    window: str = option("file", flag="--window",
                         help="DICOM grey images, after the rescale slope and intercept: 'file' (each file's VOI "
                              "LUT or window; min-max where a file has none), 'minmax', or 'center,width' (e.g. "
                              "40,400) for every file; then 8 bits, MONOCHROME1 inverted.")
    plain_split: bool = option(False, flag="--plain-split",
                               help="Split as a plain stratified random split that ignores copies and --groups "
                                    "(the split the leakage audit compares with): copies then sit on both sides "
                                    "and the test estimates are optimistic. For comparison only; one split, no --cv.")
    cv: int | None = option(None, flag="--cv", low=2, high=100, show_default="one train/val/test split",
                            help="Nested cross-validation: K outer folds, stratified and group-aware; the search "
                                 "runs inside each fold on an inner train/val split.")
    repeats: int = option(1, flag="--repeats", low=1, high=100, help="Repetitions of --cv with other fold assignments.")
    image_size: int | None = option(None, flag="--image-size", high=MAX_IMAGE_SIZE, show_default="each backbone's own",
                                    help=f"Input size in px (at most {MAX_IMAGE_SIZE}).")
    baseline: bool | None = option(None, flag="--baseline", off_flag="--no-baseline",
                                   show_default="on when xception is included",
                                   help="Also train the original notebook's recipe.")
    floor: bool = option(True, flag="--floor", off_flag="--no-floor",
                         help="Also score floor baselines on the same splits: the majority class, a logistic "
                              "regression on image-content statistics and a linear probe per backbone.")
    deterministic: bool = option(False, flag="--deterministic",
                                 help="TensorFlow op determinism: same seed, same machine -> identical results "
                                      "(can be slower).")
    mixed_precision: str = option("auto", flag="--mixed-precision", choices=MIXED_PRECISION_MODES,
                                  help="Reduced precision: 'on' float16 everywhere (GPUs); 'bfloat16' for the frozen "
                                       "pass (CPUs with AMX or AVX512-BF16); 'off' float32; 'auto' picks.")
    runtime: str = option("tensorflow", flag="--runtime", choices=RUNTIMES,
                          help="What runs the frozen pass (the feature caching): 'openvino' (CPU; pip install "
                               "'bench[openvino]') is faster with --mixed-precision bfloat16; checked against "
                               "TensorFlow before use.")
    out: Path = option(Path("results"), flag="--out", changes_results=False, help="Folder for run folders.")
    reports: Path = option(Path("reports"), flag="--reports", changes_results=False, help="Folder for reports.")
    name: str | None = option(None, flag="--name", changes_results=False, show_default="a timestamp",
                              help="Run name (folder under --out).")
    mlflow: str | None = option(None, flag="--mlflow", changes_results=False, show_default="off",
                                help="MLflow tracking URI: log the finished run there (pip install 'bench[mlflow]').")
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict:
        """The flat form stored in run.json (paths as text)."""
        out = {}
        for f in fields(self):
            if f.name == "search":
                continue
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        for f in fields(SearchConfig):
            out[f.name] = getattr(self.search, f.name)
        return out

    @classmethod
    def from_dict(cls, flat: dict) -> "RunConfig":
        """From run.json's flat form, or from flat keyword values (unknown keys are ignored)."""
        own = {f.name for f in fields(cls)} - {"search"}
        searched = {f.name for f in fields(SearchConfig)}
        config = cls(**{k: v for k, v in flat.items() if k in own},
                     search=SearchConfig(**{k: v for k, v in flat.items() if k in searched}))
        config.search.trial_timeout = parse_duration(config.search.trial_timeout, "--trial-timeout")
        if config.search.budget is not None:
            config.search.budget = parse_duration(config.search.budget, "--budget")
        if isinstance(config.backbones, str):  # the CLI's comma-separated form
            config.backbones = [name.strip() for name in config.backbones.split(",") if name.strip()]
        for key in ("out", "reports", "data", "groups"):
            value = getattr(config, key)
            setattr(config, key, None if value is None else Path(value))
        return config

    @property
    def resolved_test_size(self) -> float:
        """``--test-size``, or its default: :data:`DEFAULT_TEST_SIZE`, 0 with ``--cv``."""
        if self.test_size is not None:
            return self.test_size
        return 0.0 if self.cv else DEFAULT_TEST_SIZE

    def get(self, name: str):
        """A field of the run or of its search settings, by name."""
        return getattr(self.search if name in SEARCH_FIELDS else self, name)


SEARCH_FIELDS = frozenset(f.name for f in fields(SearchConfig))


_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h)?\s*", re.IGNORECASE)
_UNIT_S = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(value, flag: str) -> float:
    """Seconds from ``90``, ``"90"``, ``"90s"``, ``"10m"`` or ``"1.5h"`` (one line naming ``flag`` if not)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.fullmatch(str(value))
    if not match:
        raise BenchError(f"{flag} {value!r} is not a duration; give seconds (90) or a number with s, m or h (10m)")
    return float(match[1]) * _UNIT_S[match[2] and match[2].lower()]


def parse_window(value) -> str:
    """``--window``: ``file``, ``minmax`` or ``center,width`` (width at least 1, DICOM's LINEAR
    window), normalised (``40,400``); one line naming ``--window`` otherwise."""
    text = str(value).strip().lower().replace(" ", "")
    if text in WINDOW_RULES:
        return text
    fix = "give --window file (each file's own window), minmax, or center,width like 40,400"
    parts = text.split(",")
    try:
        center, width = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        center = width = math.nan
    if not (math.isfinite(center) and math.isfinite(width)):
        raise BenchError(f"--window {value!r} is not a window rule; {fix}")
    if width < 1:
        raise BenchError(f"--window {value!r}: the width must be at least 1 (DICOM's LINEAR window); {fix}")
    return f"{center:g},{width:g}"


def describe_window(rule: str) -> str:
    """A ``--window`` rule in words, for the scan, the report and the model card."""
    rule = parse_window(rule)
    if rule == "file":
        return "each file's own VOI LUT or window (the first one), min-max where a file has none"
    if rule == "minmax":
        return "each image's own min..max"
    center, width = rule.split(",")
    return f"window center {center}, width {width} for every file"


def declared_options() -> list[tuple[str, Option, object]]:
    """``(field name, option, default)`` of every ``bench run`` option, in CLI order."""
    out = []
    for cls in (RunConfig, SearchConfig):
        for f in fields(cls):
            opt = f.metadata.get("option")
            if opt is None:
                continue
            default = f.default_factory() if f.default is MISSING else f.default
            out.append((f.name, opt, default))
    return out


def result_options() -> dict[str, str]:
    """Field name -> flag of the options that change results (the ``--resume`` guard)."""
    return {name: opt.flag for name, opt, _ in declared_options() if opt.changes_results}


def check_bounds(config: RunConfig) -> None:
    """Choices, bounds and finiteness of every option (one line naming the option on failure)."""
    for name, opt, _ in declared_options():
        value = config.get(name)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise BenchError(f"{opt.flag} must be a finite number, got {value}")
        if opt.choices is not None and value not in opt.choices:
            raise BenchError(f"unknown {opt.flag} {value!r}; choose one of: {', '.join(opt.choices)}")
        if opt.low is not None and value < opt.low:
            raise BenchError(f"{opt.flag} must be at least {opt.low:g}, got {value}")
        if opt.high is not None and value > opt.high:
            raise BenchError(f"{opt.flag} must be at most {opt.high:g}, got {value}")


def as_flag(name: str, value) -> str:
    """How an option's value reads on a command line: ``--epochs 5``, ``--no-augment``,
    ``no --image-size`` (not given)."""
    opt = dict((n, o) for n, o, _ in declared_options())[name]
    if isinstance(value, bool):
        if value:
            return opt.flag
        return opt.off_flag or f"no {opt.flag}"
    if value is None:
        return f"no {opt.flag}"
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f"{opt.flag} {value}"


def command_line(flat: dict) -> list[str]:
    """``bench run`` with every option that changes results set explicitly to the stored
    value (``flat``: run.json's config), so the command does not depend on defaults."""
    args = ["bench", "run"]
    for name, opt, _ in declared_options():
        if not opt.changes_results or name not in flat or flat[name] is None:
            continue
        value = flat[name]
        if isinstance(value, bool):
            if value or opt.off_flag:
                args.append(opt.flag if value else opt.off_flag)
            continue
        args += [opt.flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    if flat.get("name"):
        args += ["--name", str(flat["name"])]
    return args


def option_rows(flat: dict) -> list[tuple[str, str, bool]]:
    """``(flag or field name, value, changes results)`` for every stored setting."""
    rows, seen = [], set()
    for name, opt, _ in declared_options():
        if name in flat:
            value = flat[name]
            text = f"{value:g} {opt.unit}" if opt.unit and isinstance(value, (int, float)) else _text(value)
            rows.append((opt.flag, text, opt.changes_results))
            seen.add(name)
    rows += [(name, _text(value), True) for name, value in sorted(flat.items()) if name not in seen]
    return rows


def _text(value) -> str:
    if value is None:
        return "not given"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
