"""Kill a `bench run` at seeded durable writes, resume it each time, compare with a run never killed.

The machinery of ``tests/test_kill_anywhere.py`` and ``benchmarks/kill_anywhere.py``:

1. the reference: the run, never interrupted, with ``BENCH_WRITE_LOG`` (:mod:`bench.faults`):
   the number of durable writes it makes, T, and the stage of each;
2. moments: ``k`` distinct write numbers drawn from 1..T with a seeded ``random.Random``, sorted;
3. the chain: the same run killed at the first moment (``BENCH_KILL_AT=write:N``, SIGKILL at its
   N-th durable write), then ``bench run --resume`` killed at the next moment (the write count
   goes on across the chain's processes through their shared log), ..., then one last
   ``--resume`` that finishes. k kills cost k + 2 processes, not k runs;
4. the outcome of both: leaderboard.json / .csv, every trials.csv and predictions CSV (test,
   validation, out-of-fold) and every table of report.md, timing columns left out; the
   differences between them (none expected).

Both runs use the same folder names relative to their own working folder, so the report's
option table (``--out``, ``--reports``, ``--name``) is the same in both.

Processes: ``fork`` (the default) imports TensorFlow once in a fresh helper process and forks
every `bench run` of the reference and the chain from it: each is a separate process running
bench's CLI, SIGKILLed as any other, without paying TensorFlow's start-up each time.
``spawn`` starts each as ``python -m bench.cli`` instead (what a user runs; slower).

Run as a script (``python tests/kill_chain.py SPEC.json OUT.json``) it reads a spec (see
:func:`sweep`) and writes its result as JSON: a test process that has run TensorFlow must
not fork, so tests start this script as a fresh process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

#: Leaderboard, trial and prediction columns that measure time, not results.
from bench.schema import TIMING_COLUMNS as TIME_COLUMNS  # noqa: E402
#: Column headers of report.md's tables that measure time.
REPORT_TIME_HEADERS = {"search time", "ms / image", "ms / image (batch 1)", "ms / image (batch 32)", "time"}
#: Stages, in the order a run reaches them.
STAGES = ("scan and split", "caching", "trials", "evaluation", "leaderboard", "report")

RUN_NAME, OUT, REPORTS = "k", "results", "reports"
#: The repository whose bench runs (first on the path of every process started here).
REPO = Path(__file__).resolve().parents[1]


def stage_of(path: str | Path, root: Path) -> str:
    """The stage a durable write to ``path`` belongs to, with where it happened
    (``trials (r0-f1)``, ``evaluation (final model)``); ``root`` holds ``results/`` and ``reports/``."""
    rel = Path(path).resolve().relative_to(root.resolve())
    if rel.parts[0] == REPORTS:
        return "report"
    run, parts = root / OUT / RUN_NAME, rel.parts[2:]  # below results/<run>/
    if parts[0] == "cache":
        return "caching"
    if parts[0] in ("leaderboard.csv", "leaderboard.json") or parts[-1] == "oof_predictions.csv":
        return "leaderboard"
    if parts[0].startswith("checklist"):
        return "report"
    if len(parts) == 1:
        return "scan and split"
    if parts[0] == "cv":  # cv/r0-f1/<backbone>/...
        where, parts = parts[1], parts[3:]
    else:  # <backbone>/...
        where, parts = "final model" if (run / "folds.json").exists() else "", parts[1:]
    stage = {"backbone.weights.npz": "caching", "tuner": "trials"}.get(parts[0], "evaluation")
    return f"{stage} ({where})" if where else stage


def read_log(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        n, target = line.split("\t", 1)
        rows.append((int(n), target))
    return rows


def draw_moments(total: int, k: int, seed: int) -> list[int]:
    """``k`` distinct write numbers from 1..``total``, sorted: the chain's kill moments."""
    return sorted(random.Random(seed).sample(range(1, total + 1), min(k, total)))


# ---------------------------------------------------------------- running bench


def _child(args: list[str], cwd: Path, env: dict) -> None:  # pragma: no cover - runs in a forked child
    from warm_bench import run_child

    gone = {key: None for key in ("BENCH_KILL_AT", "BENCH_WRITE_LOG") if key not in env}
    run_child(args, cwd, {**env, **gone}, cwd / "bench.log", cwd / "bench.log", append=True)


def bench(args: list[str], cwd: Path, env: dict, processes: str = "fork") -> int:
    """Run ``bench <args>`` in ``cwd`` as a separate process with ``env`` added; its return
    code (``-9``: SIGKILLed). Output goes to ``cwd/bench.log``."""
    if processes == "fork":
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            _child(args, cwd, env)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    full = {k: v for k, v in os.environ.items() if k not in ("BENCH_KILL_AT", "BENCH_WRITE_LOG")}
    full.update(env, PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with open(cwd / "bench.log", "a") as log:
        return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, env=full, stdout=log,
                              stderr=subprocess.STDOUT).returncode


def run_args(data: Path, options: list[str]) -> list[str]:
    return ["run", "--data", str(data), *options, "--out", OUT, "--reports", REPORTS, "--name", RUN_NAME]


RESUME = ["run", "--resume", "--name", RUN_NAME, "--out", OUT, "--no-export"]


def reference(data: Path, options: list[str], root: Path, processes: str = "fork") -> dict:
    """The run never interrupted, in ``root``: its write log and seconds."""
    root.mkdir(parents=True, exist_ok=True)
    log = root / "writes.log"
    t0 = time.perf_counter()
    rc = bench(run_args(data, options), root, {"BENCH_WRITE_LOG": str(log)}, processes)
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"the uninterrupted run failed (rc {rc}): {_tail(root)}")
    writes = read_log(log)
    return {"root": str(root), "writes": [[n, stage_of(p, root), str(Path(p).relative_to(root))] for n, p in writes],
            "seconds": round(seconds, 1)}


def chain(data: Path, options: list[str], root: Path, moments: list[int], processes: str = "fork") -> dict:
    """The same run in ``root``, killed at each of ``moments`` (chain write numbers) and
    resumed each time, then resumed to the end."""
    root.mkdir(parents=True, exist_ok=True)
    log = root / "writes.log"
    kills, first = [], True
    t0 = time.perf_counter()
    for moment in moments:
        args = run_args(data, options) if first else RESUME
        rc = bench(args, root, {"BENCH_WRITE_LOG": str(log), "BENCH_KILL_AT": f"write:{moment}"}, processes)
        writes = read_log(log)
        last = writes[-1] if writes else (0, "")
        if rc != -signal.SIGKILL or last[0] != moment:
            kills.append({"moment": moment, "rc": rc, "stage": None, "path": None,
                          "error": f"not killed at write {moment} (rc {rc}, last write {last[0]}): {_tail(root)}"})
            break
        # killed before the run folder's run.json landed: there is no run to resume, so the
        # same command starts it again, as a user would
        first = not (root / OUT / RUN_NAME / "run.json").exists()
        kills.append({"moment": moment, "rc": rc, "stage": stage_of(last[1], root),
                      "path": str(Path(last[1]).relative_to(root)), "completed": completed_trials(root)})
    rc = bench(run_args(data, options) if first else RESUME, root, {"BENCH_WRITE_LOG": str(log)}, processes)
    end = completed_trials(root)
    for kill in kills:
        kill["ran_again"] = sorted(t for t, mtime in kill.pop("completed", {}).items() if end.get(t) != mtime)
    return {"root": str(root), "kills": kills, "final_rc": rc, "final_error": None if rc == 0 else _tail(root),
            "writes": len(read_log(log)), "seconds": round(time.perf_counter() - t0, 1),
            "leftovers": sorted(str(p.relative_to(root)) for p in root.rglob("*") if _temporary(p))}


def completed_trials(root: Path) -> dict[str, int]:
    """Trials KerasTuner's own file calls completed, each with the mtime (ns) of its
    ``bench_trial.json``: a trial whose file is written again later ran again."""
    done = {}
    for trial_json in root.glob(f"{OUT}/{RUN_NAME}/**/tuner/trial_*/trial.json"):
        history = trial_json.parent / "bench_trial.json"
        try:
            if json.loads(trial_json.read_text()).get("status") == "COMPLETED" and history.exists():
                done[str(trial_json.parent.relative_to(root))] = history.stat().st_mtime_ns
        except ValueError:
            continue
    return done


def independent(data: Path, options: list[str], root: Path, moments: list[int], reference_root: Path,
                processes: str = "fork") -> dict:
    """For each moment N, a fresh run killed at its N-th durable write (exactly where the
    uninterrupted run was about to make it) and resumed to the end, compared with the
    uninterrupted run in ``reference_root``; each run's folder is removed after."""
    import shutil

    kills, t0 = [], time.perf_counter()
    for moment in moments:
        one = root / f"write-{moment}"
        result = chain(data, options, one, [moment], processes)
        kill = result["kills"][0]
        kill.update(final_rc=result["final_rc"], leftovers=len(result["leftovers"]),
                    differences=differences(reference_root, one) if result["final_rc"] == 0
                    else [f"did not finish: {result['final_error']}"])
        kills.append(kill)
        shutil.rmtree(one)
    return {"kills": kills, "seconds": round(time.perf_counter() - t0, 1)}


def _temporary(path: Path) -> bool:
    """A temporary file a killed write left behind (see :mod:`bench.atomic`, the cache)."""
    name = path.name
    return name.startswith(".") and (name.endswith((".tmp", ".partial", ".link")) or ".tmp" in name)


def _tail(root: Path, n: int = 3000) -> str:
    log = root / "bench.log"
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


# ---------------------------------------------------------------- comparing outcomes


def _csv(path: Path) -> list[list[str]]:
    """A CSV as text cells, timing columns left out."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        rows = list(csv.reader(fh))
    keep = [i for i, name in enumerate(rows[0]) if name not in TIME_COLUMNS]
    return [[row[i] for i in keep] for row in rows]


def report_tables(path: Path) -> list[list[list[str]]]:
    """Every Markdown table of ``path`` as rows of cells, columns with a timing header left out."""
    tables, current = [], []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            keep = [i for i, h in enumerate(current[0]) if h not in REPORT_TIME_HEADERS]
            tables.append([[row[i] for i in keep if i < len(row)] for row in current])
            current = []
    return tables


def outcome(root: Path) -> dict[str, object]:
    """What must not depend on kills: file (relative to ``root``) -> its content, timings left out."""
    run = root / OUT / RUN_NAME
    found: dict[str, object] = {}
    board = run / "leaderboard.json"
    if board.exists():
        found["leaderboard.json"] = [{k: v for k, v in row.items() if k not in TIME_COLUMNS}
                                     for row in json.loads(board.read_text())]
    names = ("leaderboard.csv", "trials.csv", "test_predictions.csv", "val_predictions.csv", "oof_predictions.csv")
    for path in sorted(p for p in run.rglob("*.csv") if p.name in names):
        found[str(path.relative_to(root))] = _csv(path)
    for path in sorted((root / REPORTS).rglob("report.md")):
        found[str(path.relative_to(root))] = report_tables(path)
    return found


def differences(reference_root: Path, chain_root: Path) -> list[str]:
    """What differs between the two runs' outcomes (empty: equal)."""
    a, b = outcome(reference_root), outcome(chain_root)
    diffs = [f"{name}: only in the uninterrupted run" for name in a if name not in b]
    diffs += [f"{name}: only in the killed run" for name in b if name not in a]
    for name in (n for n in a if n in b and a[n] != b[n]):
        diffs.append(f"{name}: {_first_difference(a[name], b[name])}")
    return diffs


def _first_difference(a, b) -> str:
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{len(a)} rows (uninterrupted) vs {len(b)} (killed)"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"item {i}: {_first_difference(x, y)}"
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))[:600]
    return f"{a!r} vs {b!r}"[:600]


# ---------------------------------------------------------------- one design, start to end


def sweep(spec: dict) -> dict:
    """One design's kill-anywhere check. ``spec``: ``data`` (folder), ``options`` (bench run
    options after ``--data``), ``root`` (an empty folder), ``moments`` (how many kills, or
    the write numbers themselves), ``seed`` (of the draw), ``processes`` (``fork`` or ``spawn``),
    ``independent`` (true: a fresh run per moment, :func:`independent`, instead of one chain)."""
    root, processes = Path(spec["root"]), spec.get("processes", "fork")
    ref = reference(Path(spec["data"]), spec["options"], root / "uninterrupted", processes)
    moments = spec["moments"]
    if isinstance(moments, int):
        moments = draw_moments(len(ref["writes"]), moments, spec["seed"])
    if spec.get("independent"):
        each = independent(Path(spec["data"]), spec["options"], root / "killed", moments, root / "uninterrupted",
                           processes)
        diffs = [f"write {k['moment']}: {d}" for k in each["kills"] for d in k["differences"]]
        diffs += [f"write {k['moment']}: completed trials ran again after the kill: {k['ran_again']}"
                  for k in each["kills"] if k.get("ran_again")]
        diffs += [f"write {k['moment']}: {k['error']}" for k in each["kills"] if k.get("error")]
        return {"reference": ref, "moments": moments, "independent": each, "differences": diffs}
    killed = chain(Path(spec["data"]), spec["options"], root / "killed", moments, processes)
    diffs = differences(root / "uninterrupted", root / "killed") if killed["final_rc"] == 0 else ["did not finish"]
    diffs += [f"write {k['moment']}: completed trials ran again after the kill: {k['ran_again']}"
              for k in killed["kills"] if k.get("ran_again")]
    return {"reference": ref, "moments": moments, "chain": killed, "differences": diffs}


def main(argv: list[str]) -> None:
    spec_path, out_path = map(Path, argv)
    specs = json.loads(spec_path.read_text())
    if any(s.get("processes", "fork") == "fork" for s in specs):
        import keras  # noqa: F401 - imported once here, shared by every forked run
        import keras_tuner  # noqa: F401
        import tensorflow  # noqa: F401

        import bench.cli  # noqa: F401
    out_path.write_text(json.dumps([sweep(s) for s in specs], indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main(sys.argv[1:])
