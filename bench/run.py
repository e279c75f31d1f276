"""``bench run``: validate everything, scan, split, and write the run folder.

All checks that can fail on bad input run before anything is written, so a refused run
leaves no half-made folder behind.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import backbones
from bench import __version__
from bench.config import RunConfig, as_flag, check_bounds, parse_duration, parse_window, result_options
from bench.data.content import ContentTable
from bench.data.dicom import reading_window
from bench.data.folds import FoldPlan, make_folds, read_folds, write_folds
from bench.data.group_files import grouping_for, write_group_files
from bench.data.scan import DatasetIndex, check_data_folder, scan
from bench.data.split import (
    SplitManifest,
    check_sizes,
    make_split,
    read_split,
    write_split,
)
from bench.errors import BenchError, is_disk_full
from bench.evaluate.shortcuts import check_split, shortcut_sentence
from bench.atomic import read_json, write_json_atomic, write_text_atomic
from bench.data.header_groups import ATTRIBUTE
from bench.locks import RunLock, file_lock, read_only_message
from bench.machine import library_versions, machine_info
from bench.runfolder import (
    CONTENT_CSV, COPIES_PNG, DATASET_JSON, FOLDS_JSON, GROUPS_CSV, HEADER_SALT, RUN_JSON, SPLIT_JSON, RunFiles,
    check_can_write, check_run_name, check_writable, default_run_name)

log = logging.getLogger("bench")


@dataclass
class RunFolder:
    path: Path
    config: RunConfig
    index: DatasetIndex
    split: SplitManifest  # with --cv: the final model's train/val (all CV images) and the holdout as test
    folds: FoldPlan | None = None  # --cv: the outer folds and their inner splits (folds.json)

    @property
    def files(self) -> RunFiles:
        """Where each of the run's files lives."""
        return RunFiles(self.path)


def parse_backbones(spec: str | list[str]) -> list[str]:
    """Comma-separated names or wildcards -> registry names, in the order given."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        matched = backbones.list_backbones(item) if any(ch in item for ch in "*?[") else [backbones.get(item).name]
        if not matched:
            raise BenchError(f"no backbone matches {item!r}; valid: {', '.join(backbones.list_backbones())}")
        names.extend(n for n in matched if n not in names)
    if not names:
        raise BenchError("no backbones given; pass --backbones with comma-separated names, see `bench backbones`")
    return names


def validate(config: RunConfig) -> None:
    """Checks on options alone (no data, no files): raises BenchError."""
    check_bounds(config)
    config.window = parse_window(config.window)
    if config.plain_split and config.cv is not None:
        raise BenchError(f"--plain-split makes one plain train/val/test split; drop --cv {config.cv} (folds are always "
                         "group-aware)")
    if config.cv is None and config.repeats != 1:
        raise BenchError(f"--repeats {config.repeats} needs --cv K (repeats of a K-fold cross-validation); add --cv 5")
    config.test_size = config.resolved_test_size
    if config.cv is None:
        check_sizes(config.val_size, config.test_size)
    else:
        from bench.data.folds import check_cv

        check_cv(config.cv, config.repeats, config.test_size)
    config.backbones = parse_backbones(config.backbones)
    if config.image_size is not None:
        for name in config.backbones:
            backbones.get(name).check_size(config.image_size)
    config.weights = backbones.weights_text(backbones.parse_weights(config.weights))
    if config.runtime != "tensorflow":  # before the scan: a missing openvino costs nothing
        from bench.search.runtime import check_runtime

        check_runtime(config.runtime, config.mixed_precision)
    if config.baseline is None:
        config.baseline = "xception" in config.backbones
    if config.name is not None:
        check_run_name(config.name)


def check_outputs(config: RunConfig) -> None:
    """Every place ``bench run`` writes (``--out``, ``--reports``) can be written: checked
    before the scan and the search, creating nothing."""
    check_can_write(config.out, "--out")
    check_can_write(config.reports, "--reports")


#: What a run's preparation writes before run.json, the file that marks a prepared run.
PREPARATION_FILES = frozenset({DATASET_JSON, SPLIT_JSON, FOLDS_JSON, GROUPS_CSV, COPIES_PNG, CONTENT_CSV, HEADER_SALT})


def stopped_preparation(run_dir: Path) -> bool:
    """A run folder whose preparation was stopped before its run.json landed: nothing in
    it but the preparation's own files (and hidden temporary files). There is no run to
    resume; the same command prepares it again over them."""
    entries = list(run_dir.iterdir())
    return not (run_dir / RUN_JSON).exists() and all(
        e.is_file() and not e.is_symlink() and (e.name in PREPARATION_FILES or e.name.startswith(".")) for e in entries)


def _check_new_run_dir(run_dir: Path, name: str) -> None:
    if run_dir.exists() and any(run_dir.iterdir()) and not stopped_preparation(run_dir):
        raise BenchError(f"run folder {run_dir} already exists; continue it with --resume --name {name}, "
                         "or pass another --name")


def prepare_run(config: RunConfig, progress: Callable[[int, int], None] | None = None,
                index: DatasetIndex | None = None) -> RunFolder:
    """Validate, scan, split and write ``<out>/<name>/`` with run.json, dataset.json, split.json.

    ``index``: the scan of ``config.data`` when the caller has one (``bench audit``
    prepares two runs from one scan, its copy links computed once). DICOM files are read
    with the run's ``--window`` throughout."""
    validate(config)
    with reading_window(config.window):
        return _prepare(config, progress, index)


def _prepare(config: RunConfig, progress, index: DatasetIndex | None) -> RunFolder:
    check_outputs(config)
    config.name = config.name or default_run_name()
    _check_new_run_dir(Path(config.out) / config.name, config.name)  # before the scan: nothing computed in vain
    if config.data is not None and index is None:
        check_data_folder(config.data)  # the data before the weights: the first thing a user gives
    check_weights(config)
    if config.data is None:
        from bench.data.demo import demo_data_dir

        config.data = demo_data_dir()
    if index is None:
        index = scan(config.data, progress=progress)
    config.data = index.root  # absolute: later commands (export checks, reports) run from anywhere
    grouping = grouping_for(index, config.copy_threshold, config.groups, config.group_by)
    folds = None
    if config.cv:
        folds = make_folds(index, config.cv, config.repeats, config.val_size, config.test_size, config.search.seed,
                           grouping=grouping)
        split = folds.final_split()
        part_of = folds.part_of_groups()
    else:
        split = make_split(index, config.val_size, config.test_size, config.search.seed, grouping=grouping,
                           plain=config.plain_split)
        part_of = split.part_of_groups()
        if config.plain_split:
            crossing = sum(a["bench_crossing"] for a in split.audit)
            log.warning(f"--plain-split: copies and groups ignored; {crossing} linked pairs of images sit on "
                        "different sides of the split, so the test estimates are optimistic")
    content = ContentTable.compute(index.root, split.files)  # once per image: the shortcut check and the floor
    split.shortcut = check_split(index, split, content)
    if split.shortcut and split.shortcut["warn"]:
        log.warning(shortcut_sentence(split.shortcut).removeprefix("WARNING: "))
    out = check_writable(config.out, "--out")
    run_dir = out / config.name
    _check_new_run_dir(run_dir, config.name)
    check_writable(run_dir, "--out")
    # dataset.json and split.json first: run.json marks a fully prepared run folder
    files = RunFiles(run_dir)
    write_json_atomic(files.dataset_json, index.to_dict())
    write_split(split, files.split_json)
    if folds is not None:
        write_folds(folds, files.folds_json)
    write_group_files(grouping, part_of, index.root, run_dir)
    if grouping.user_kind in ATTRIBUTE:  # the group ids' salt: who holds it and an ID can find its group
        write_text_atomic(files.header_salt, index.salt + "\n")
    content.write(files.content_csv)
    write_json_atomic(
        files.run_json,
        {
            "bench_version": __version__,
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "config": config.to_dict(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data_hash": index.content_hash(),
            "machine": machine_info(),
            "synthetic_data": index.synthetic,
            "versions": library_versions(),
        },
    )
    return RunFolder(run_dir, config, index, split, folds)


def check_weights(config: RunConfig) -> None:
    """Every backbone of the run can start from every ``--weights`` entry: ImageNet files in
    Keras' cache (or downloaded), and a weights file loads into each backbone (built once,
    at the run's size, then dropped). Raises BenchError naming the file and the backbone."""
    specs = backbones.parse_weights(config.weights)
    names = config.backbones + (["xception"] if config.baseline and "xception" not in config.backbones else [])
    for name in names:
        record = backbones.get(name)
        size = config.image_size or record.default_size
        for spec in specs:
            backbones.ensure_available(record, spec, size)
            if spec.kind == "file":
                import keras

                backbones.build_with_weights(record, spec, size)
                keras.backend.clear_session()


#: What a run.json written without an option's key ran with, where that is not the option's
#: default: such a run searched every head (``--max-head-weights 0``).
UNSTORED_MEANS = {"max_head_weights": 0}


def check_options(config: RunConfig, given: dict, name: str, who: str = "--resume") -> None:
    """Refuse options given now that differ from the run's stored ones (``--data``: by content)."""
    guarded = result_options()
    diffs = []
    for field_name, value in given.items():
        if field_name not in guarded or field_name == "data":
            continue
        stored = config.get(field_name)
        if field_name == "backbones":
            value = parse_backbones(value)
        if field_name == "weights" and backbones.weights_items(value) == backbones.weights_items(stored):
            continue  # the same entries, written another way (case, relative paths)
        if field_name == "window":
            value = parse_window(value)
        if value != stored:
            diffs.append(f"{as_flag(field_name, value)} (run {name} has {as_flag(field_name, stored)})")
    if diffs:
        raise BenchError(
            f"{who} cannot change options that change results: {'; '.join(diffs)}; "
            f"drop them to continue run {name} as it started, or start a new run with another --name"
        )


def resume_run(out: Path, name: str | None, given: dict | None = None, cluster=None) -> RunFolder:
    """Reopen ``<out>/<name>``: its stored config, data and split are used unchanged.

    ``given``: RunConfig fields the user passed explicitly now; any that would change
    results must equal the stored ones. ``--data`` may point elsewhere (another mount of
    the same folder) as long as its contents are the same.
    """
    if not name:
        raise BenchError("--resume needs --name RUN (the run folder to continue)")
    run_dir = Path(out) / check_run_name(name)
    files = RunFiles(run_dir)
    if not files.run_json.exists():
        raise BenchError(f"no run to resume at {run_dir} (run.json missing); check --out and --name")
    check_run_writable(run_dir)
    if cluster is None:
        RunLock(run_dir).acquire().release()  # fail at once when another process works on it
    damaged = (f"run {name} cannot be resumed: restore its run.json from a copy, or start a new run "
               "with another --name")
    info = read_json(files.run_json, damaged)
    stored = info.get("config") if isinstance(info, dict) else None
    if not isinstance(stored, dict):
        raise BenchError(f"cannot read {files.run_json}: it holds no run configuration; {damaged}")
    config = RunConfig.from_dict({**UNSTORED_MEANS, **stored})
    config.out = Path(out)
    given = dict(given or {})
    check_options(config, given, name, who="--resume" if cluster is None else f"{cluster.role} joining run {name}")
    if given.get("data") is not None:
        config.data = Path(given["data"])
    config.data = Path(config.data) if config.data else None
    if "reports" in given:
        config.reports = Path(given["reports"])
    check_can_write(config.reports, "--reports")
    if "trial_timeout" in given:  # this process's own: how long its chief waits for a silent worker
        config.search.trial_timeout = parse_duration(given["trial_timeout"], "--trial-timeout")
        check_bounds(config)
    with reading_window(config.window):
        index = scan(config.data, copies=False)  # the groups are in split.json
    config.data = index.root
    stored_hash = info.get("data_hash")
    if stored_hash and index.content_hash() != stored_hash:
        raise BenchError(
            f"the data in {config.data} differs from the data run {name} started with (files added, removed or "
            "edited); restore it, or start a new run without --resume"
        )
    split = read_split(files.split_json)
    folds = read_folds(files.folds_json) if config.cv else None
    return RunFolder(run_dir, config, index, split, folds)


def check_run_writable(run_dir: Path) -> None:
    """Raise the one-line error when ``run_dir`` (an existing run folder) cannot be written."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        if is_disk_full(exc):
            raise
        raise BenchError(read_only_message(run_dir, exc)) from None


def open_distributed(config: RunConfig, given: dict, cluster, progress=None) -> RunFolder:
    """Distributed mode: the first process to arrive prepares the run folder, under a lock;
    every other one (chief or worker) joins it, with the same checks as ``--resume``."""
    if not config.name:
        raise BenchError("distributed mode needs --name: the chief and every worker must name the same run folder")
    if config.search.budget is not None:
        raise BenchError("--budget shares one process's time among its searches; a distributed run ends by "
                         "--max-trials: drop --budget")
    check_run_name(config.name)
    out = check_writable(config.out, "--out")
    with file_lock(out / f".{config.name}.prepare.lock"):
        if RunFiles(out / config.name).run_json.exists():
            return resume_run(out, config.name, given, cluster=cluster)
        return prepare_run(config, progress)


def execute(run: RunFolder, cluster=None, sources: dict | None = None, release: bool = True) -> "object":
    """Search and evaluate every backbone (and the notebook baseline) as the run's design
    says (:mod:`bench.designs`: one split, or every outer fold with ``--cv``), write the
    leaderboard ranked on the design's estimates, and train the model to deploy.

    The run's frozen pass (:class:`bench.search.runtime.FrozenPass`, from its configuration)
    travels with every job; Keras' dtype policy for it holds while the run executes and is
    restored after (:func:`bench.search.runtime.run_settings`).

    ``sources``: built backbones to share with later runs of this process (a suite's
    datasets, :mod:`bench.suite.runner`); each run keeps its own backbone weights.
    ``release=False``: the built backbones' memory is not collected at the end (the
    process ends soon after and nothing it does then needs that memory).

    Holds the run's lock throughout: a second process on the same run fails at once. In
    distributed mode the chief holds it; each worker holds its own (one process per
    worker id) and returns None: the chief ranks and reports.
    """
    from bench.designs import run_design
    from bench.search.runtime import FrozenPass, run_settings

    frozen_pass = FrozenPass.for_config(run.config)
    with RunLock(run.path, ".lock" if cluster is None else cluster.lock_name), \
            run_settings(frozen_pass, run.config.deterministic, run.config.search.seed), \
            reading_window(run.config.window):
        return run_design(run, cluster, frozen_pass, sources, release)
