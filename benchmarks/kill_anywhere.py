"""Kill anywhere: SIGKILL a `bench run` at 20 seeded durable writes, resume each time, compare.

    .venv/bin/python benchmarks/kill_anywhere.py [--moments 20] [--seed 27] [--design single|cv|both]
                                                 [--chain] [--spawn] [--json FILE]

For a single split and for ``--cv 2`` (tiny data: 18 images at 32 px, mobilenet_v2 without
pretrained weights, 2 trials x 1 epoch, ``--deterministic``): one uninterrupted run counts
its durable writes (``BENCH_WRITE_LOG``, see ``bench/faults.py``) and ``--moments`` write
numbers are drawn from them with ``--seed``. For each, a fresh run is killed at that write
(``BENCH_KILL_AT=write:N``: exactly where the uninterrupted run was about to make it) and
resumed to the end (``tests/kill_chain.py``). Prints each moment with the stage and file it
hit, whether a completed trial ran again, and whether the leaderboard, trials, predictions
(test, validation, out of fold) and the report's tables equal the uninterrupted run's,
timing columns aside. ``--chain`` kills one run at every moment in turn instead (what
``tests/test_kill_anywhere.py`` does, cheaper: the count goes on across its resumes, each of
which redoes the trial it was killed in). ``--spawn`` starts every process as
``python -m bench.cli`` (as a user does) instead of forking it from one process that
imported TensorFlow once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from _docs import add_option, recording  # noqa: E402

#: The run of both designs, after --data (the CV design adds --cv 2).
OPTIONS = ["--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--max-trials", "2",
           "--epochs", "1", "--max-unfreeze", "0", "--no-export", "--deterministic", "--seed", "3"]
DESIGNS = {"single": [], "cv": ["--cv", "2"]}


def specs(data: Path, work: Path, designs: list[str], moments: int, seed: int, processes: str,
          independent: bool) -> list[dict]:
    return [{"data": str(data), "root": str(work / name), "moments": moments, "seed": seed,
             "options": OPTIONS + DESIGNS[name], "processes": processes, "independent": independent}
            for name in designs]


def show(name: str, result: dict) -> bool:
    ref = result["reference"]
    chain = result.get("chain") or result["independent"]
    stages = {}
    for _, stage, _ in ref["writes"]:
        stages[stage.split(" (")[0]] = stages.get(stage.split(" (")[0], 0) + 1
    print(f"\n== {name}: uninterrupted run {ref['seconds']} s, {len(ref['writes'])} durable writes "
          f"({', '.join(f'{s} {n}' for s, n in stages.items())})")
    if "chain" in result:
        print(f"   one run killed {len(chain['kills'])} times and resumed: {chain['seconds']} s in all, "
              f"{chain['writes']} writes")
    else:
        print(f"   {len(chain['kills'])} runs, each killed once and resumed to the end: {chain['seconds']} s in all")
    print(f"   {'write':>5}  {'stage hit':<26} {'file (killed before it landed)':<62} completed trials run again"
          + ("; outcome" if "chain" not in result else ""))
    for kill in chain["kills"]:
        if kill.get("error"):
            print(f"   {kill['moment']:>5}  NOT KILLED THERE: {kill['error'][:300]}")
            continue
        outcome = "" if "chain" in result else ("; equal" if kill["final_rc"] == 0 and not kill["differences"]
                                                 else f"; DIFFERS: {kill['differences']}")
        print(f"   {kill['moment']:>5}  {kill['stage']:<26} {kill['path'].removeprefix('results/k/'):<62} "
              f"{', '.join(kill['ran_again']) or 'none'}{outcome}")
    hit = {k["stage"].split(" (")[0] for k in chain["kills"] if k.get("stage")}
    print(f"   stages hit: {', '.join(s for s in stages if s in hit)}"
          + (f"; not hit: {', '.join(s for s in stages if s not in hit)}" if set(stages) - hit else ""))
    ok = chain.get("final_rc", 0) == 0 and not result["differences"]
    print("   final leaderboard, trials, predictions and report tables "
          + ("EQUAL the uninterrupted run's (timings aside)" if ok else "DIFFER:"))
    for line in result["differences"]:
        print(f"     {line}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moments", type=int, default=20, help="kills per design (default 20)")
    parser.add_argument("--seed", type=int, default=27, help="seed of the draw of kill moments")
    parser.add_argument("--design", choices=["single", "cv", "both"], default="both")
    parser.add_argument("--spawn", action="store_true", help="start each process as python -m bench.cli")
    parser.add_argument("--chain", action="store_true",
                        help="one run killed at every moment in turn (the write count going on across its "
                             "resumes) instead of a fresh run per moment")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    add_option(parser)
    args = parser.parse_args()
    from conftest import make_folder

    designs = list(DESIGNS) if args.design == "both" else [args.design]
    with recording("kill_anywhere", args.write_docs), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_folder(work / "data", {"a": 9, "b": 9}, size=32, seed=3)
        spec = work / "spec.json"
        spec.write_text(json.dumps(specs(data, work, designs, args.moments, args.seed,
                                         "spawn" if args.spawn else "fork", not args.chain)))
        t0 = time.perf_counter()
        # a fresh process: forking needs one that has not run TensorFlow
        done = subprocess.run([sys.executable, str(ROOT / "tests" / "kill_chain.py"), str(spec), str(work / "out.json")],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr[-3000:])
        results = json.loads((work / "out.json").read_text())
        print(f"kill anywhere: {args.moments} seeded moments (seed {args.seed}) per design, "
              f"{'one chain of kills' if args.chain else 'a fresh run killed at each'}, "
              f"{'spawned' if args.spawn else 'forked'} processes, {time.perf_counter() - t0:.0f} s in all")
        ok = [show(name, result) for name, result in zip(designs, results)]
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
