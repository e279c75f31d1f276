"""bench.forked.beside: a call made in a forked copy of the process while the process does
other work, with what came of it (a value, an error, a crash, a stop) as if made here.

Each case runs in a fresh interpreter: a test worker runs threads, where beside never forks.
"""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import user_environment

REPO = Path(__file__).resolve().parents[1]

PRELUDE = """
import os, sys, time, gc
from pathlib import Path
from bench import faults
from bench.errors import BenchError
from bench.forked import beside, can_fork
here = os.getpid()
"""


def _python(code: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, in a user's environment (thread pools as wide as the machine)."""
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**user_environment(), "TMPDIR": str(tmp_path), **(env or {})})


def test_the_call_runs_in_a_copy_while_this_process_works_and_its_value_comes_back(tmp_path):
    done = _python("""
        assert can_fork()
        def call():
            time.sleep(1.0)
            return {"pid": os.getpid(), "rows": list(range(5))}
        def meanwhile():
            time.sleep(1.0)
        t0 = time.monotonic()
        got = beside(call, meanwhile)
        print(got["pid"] != here, got["rows"], round(time.monotonic() - t0, 1) < 1.8)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "True [0, 1, 2, 3, 4] True"


def test_an_error_in_the_copy_is_raised_here_a_bug_with_the_copys_traceback(tmp_path):
    done = _python("""
        def refused():
            raise BenchError("--data /nowhere does not exist; pass a folder")
        try:
            beside(refused, lambda: None)
        except BenchError as exc:
            print("bench error:", exc, getattr(exc, "__notes__", None))
        def bug():
            return {}["missing"]
        try:
            beside(bug, lambda: None)
        except KeyError as exc:
            print("bug:", ", in bug" in "".join(exc.__notes__), "KeyError" in "".join(exc.__notes__))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["bench error: --data /nowhere does not exist; pass a folder None", "bug: True True"]


def test_a_copy_killed_by_sigkill_takes_this_process_with_it(tmp_path):
    done = _python("""
        beside(lambda: os.kill(os.getpid(), 9), lambda: None)
        print("survived")
    """, tmp_path)
    assert done.returncode == -signal.SIGKILL and "survived" not in done.stdout


def test_stopped_while_waiting_the_copy_is_stopped_and_its_finally_blocks_run(tmp_path):
    done = _python(f"""
        from bench.stopping import Stopped, stop_on_signals
        def call():
            try:
                time.sleep(30)
            finally:
                Path({str(tmp_path / "cleaned")!r}).write_text(str(os.getpid()))
        def meanwhile():
            time.sleep(0.5)
            raise Stopped(15)  # as a SIGTERM to this process would
        with stop_on_signals():
            t0 = time.monotonic()
            try:
                beside(call, meanwhile)
            except Stopped as exc:
                print("stopped", exc.name, time.monotonic() - t0 < 10)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stopped", "SIGTERM", "True"]
    assert int((tmp_path / "cleaned").read_text()) > 0  # the copy's finally block ran before beside returned


def test_a_stopped_copy_that_does_not_end_is_killed_after_its_grace(tmp_path):
    done = _python("""
        import signal
        import bench.forked
        bench.forked.STOP_GRACE_S = 0.5
        def deaf():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a copy stuck where a signal cannot reach it
            time.sleep(30)
        def meanwhile():
            time.sleep(0.3)
            raise KeyboardInterrupt
        t0 = time.monotonic()
        try:
            beside(deaf, meanwhile)
        except KeyboardInterrupt:
            print("interrupted", time.monotonic() - t0 < 5)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["interrupted", "True"]


def test_the_copys_durable_writes_count_as_this_processs_own(tmp_path):
    done = _python(f"""
        faults.durable_write(Path({str(tmp_path)!r}) / "before")
        def call():
            for name in ("a", "b", "c"):
                faults.durable_write(Path({str(tmp_path)!r}) / name)
            return faults.writes_counted()
        print(beside(call, lambda: None), faults.writes_counted())
    """, tmp_path, env={"BENCH_KILL_AT": "write:99"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "4"]


def test_with_threads_running_both_run_here(tmp_path):
    """Also a thread ``threading`` does not list (started by C code or ``_thread``, as
    pytest-xdist's are)."""
    done = _python("""
        import _thread, threading
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        print(can_fork(), beside(os.getpid, lambda: None) == here)
        stop.set()
        time.sleep(0.2)
        _thread.start_new_thread(time.sleep, (2,))
        print(threading.active_count(), can_fork(), beside(os.getpid, lambda: None) == here)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "1", "False", "True"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the copy-features file is handed over on Linux")
def test_a_copy_table_made_in_the_copy_belongs_to_this_process_and_is_removed_with_it(tmp_path):
    done = _python("""
        from bench.data.copy_table import CopyTable, remove_orphans
        def call():
            table = CopyTable.create(4).select([1, 2])  # as a scan returns it: a selection
            table.hand_over(here)
            return table
        table = beside(call, lambda: None)
        table.adopt()
        table.adopt()  # once only
        own = CopyTable.create(2).select([0])
        own.adopt()  # its file is this process's already: nothing changes
        print(own._removal if hasattr(own, "_removal") else "no new removal")
        print(Path(table.path).name.split("-")[3] == str(here), remove_orphans(), Path(table.path).exists())
        path = table.path
        del table
        gc.collect()
        print(Path(path).exists())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["no", "new", "removal", "True", "[]", "True", "False"]
    assert not list(tmp_path.glob("bench-copy-features-*"))


def test_bench_run_forks_its_preparation(tmp_path):
    """``bench run`` reaches :func:`beside` with no thread but its main one, so the scan
    runs beside TensorFlow's import: nothing imported before it starts a thread (numpy's
    OpenBLAS workers, pandas' Arrow allocator do)."""
    (tmp_path / "data").mkdir()
    done = _python(f"""
        import bench.forked
        def spy(call, meanwhile):
            print("forks:", can_fork(), "numpy loaded:", "numpy" in sys.modules)
            raise SystemExit(0)
        bench.forked.beside = spy
        sys.argv = ["bench", "run", "--data", {str(tmp_path / "data")!r}, "--backbones", "mobilenet_v2",
                    "--weights", "none", "--out", {str(tmp_path / "results")!r}, "--reports", {str(tmp_path / "reports")!r}]
        from bench.cli import main
        main()
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["forks:", "True", "numpy", "loaded:", "False"]
