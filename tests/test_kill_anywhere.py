"""Kill anywhere: a `bench run` SIGKILLed at seeded durable writes (``BENCH_KILL_AT=write:N``,
bench/faults.py) and resumed each time ends with the leaderboard, trials, predictions and
report tables of a run never killed (timing columns aside), and no completed trial runs again.

One chain per design (a single split, ``--cv 2``): the run killed at the first moment,
``--resume`` killed at the next, ..., resumed to the end (tests/kill_chain.py), so a few kills
cost a few process starts, not a run each. The moments are drawn with a fixed seed from the
writes of the uninterrupted run and counted on across the chain's processes, so they are the
same on every machine (seed 27: trials, evaluation, leaderboard and report stages). A resumed
process redoes the trial it was killed in, so later moments of a chain fall a little earlier in
the run than the same write numbers of the uninterrupted run. benchmarks/kill_anywhere.py kills a fresh run at each of 20 moments per
design, exactly where the uninterrupted run was about to make that write, and prints them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_folder

OPTIONS = ["--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--max-trials", "2",
           "--epochs", "1", "--max-unfreeze", "0", "--no-export", "--deterministic", "--seed", "3"]
DESIGNS = {"single split": [], "cv": ["--cv", "2"]}
#: Kills per design, and the seed of their draw.
MOMENTS, SEED = 5, 27


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, dict]:
    """Both designs' reference run and chain of kills, in one fresh process (it forks every run)."""
    root = tmp_path_factory.mktemp("kill_anywhere")
    data = make_folder(root / "data", {"a": 9, "b": 9}, size=32, seed=3)
    specs = [{"data": str(data), "root": str(root / name.replace(" ", "_")), "moments": MOMENTS, "seed": SEED,
              "options": OPTIONS + extra} for name, extra in DESIGNS.items()]
    (root / "spec.json").write_text(json.dumps(specs))
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_chain.py")), str(root / "spec.json"),
                           str(root / "out.json")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(zip(DESIGNS, json.loads((root / "out.json").read_text())))


@pytest.mark.slow
@pytest.mark.parametrize("design", list(DESIGNS))
def test_killed_at_seeded_writes_and_resumed_equals_an_uninterrupted_run(sweeps, design):
    result = sweeps[design]
    chain = result["chain"]
    moments = [(k["moment"], k["stage"], k.get("path")) for k in chain["kills"]]
    print(f"{design}: {len(result['reference']['writes'])} writes; kills (write, stage, file): {moments}")
    assert [k["moment"] for k in chain["kills"]] == result["moments"] and len(result["moments"]) == MOMENTS
    assert all(k["rc"] == -9 and not k.get("error") for k in chain["kills"]), chain["kills"]
    assert chain["final_rc"] == 0, chain["final_error"]
    assert result["differences"] == []
    assert len({k["stage"] for k in chain["kills"]}) >= 2  # the seed's draw: see the module's notes
