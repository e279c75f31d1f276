"""``bench run``: validate everything, scan, split, and write the run folder.

All checks that can fail on bad input run before anything is written, so a refused run
leaves no half-made folder behind.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import backbones
from bench import __version__
from bench.errors import BenchError
from bench.runfolder import (
    check_run_name,
    check_writable,
    default_run_name,
    library_versions,
    machine_info,
    write_json_atomic,
)
from bench.scan import DatasetIndex, scan
from bench.split import SplitManifest, check_sizes, make_split, write_split


@dataclass
class RunConfig:
    """Everything that defines a run; stored in run.json."""

    data: Path | None = None
    backbones: list[str] = field(default_factory=lambda: ["xception", "mobilenet_v2"])
    weights: str = "imagenet"
    seed: int = 0
    val_size: float = 0.15
    test_size: float = 0.15
    image_size: int | None = None
    out: Path = Path("results")
    reports: Path = Path("reports")
    name: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("data", "out", "reports"):
            d[key] = None if d[key] is None else str(d[key])
        return d


@dataclass
class RunFolder:
    path: Path
    config: RunConfig
    index: DatasetIndex
    split: SplitManifest


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
    check_sizes(config.val_size, config.test_size)
    config.backbones = parse_backbones(config.backbones)
    if config.image_size is not None:
        for name in config.backbones:
            rec = backbones.get(name)
            if config.image_size < rec.min_size:
                raise BenchError(
                    f"--image-size {config.image_size} is below {name}'s minimum of {rec.min_size}; "
                    f"use --image-size {rec.min_size} or more, or drop {name}"
                )
    backbones.resolve_weights(config.weights)
    if config.name is not None:
        check_run_name(config.name)


def prepare_run(config: RunConfig, progress: Callable[[int, int], None] | None = None) -> RunFolder:
    """Validate, scan, split and write ``<out>/<name>/`` with run.json, dataset.json, split.json."""
    validate(config)
    if config.data is None:
        from bench.demo import demo_data_dir

        config.data = demo_data_dir()
    index = scan(config.data, progress=progress)
    split = make_split(index, config.val_size, config.test_size, config.seed)
    out = check_writable(config.out, "--out")
    config.name = config.name or default_run_name()
    run_dir = out / config.name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise BenchError(f"run folder {run_dir} already exists; pass another --name (or --resume once available)")
    check_writable(run_dir, "--out")
    write_json_atomic(
        run_dir / "run.json",
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
    write_json_atomic(run_dir / "dataset.json", index.to_dict())
    write_split(split, run_dir / "split.json")
    return RunFolder(run_dir, config, index, split)
