"""A stop signal (SIGTERM, SIGHUP) ends a command cleanly: no worker process left behind,
no temporary feature file left in /tmp, and `bench serve` hands it on to Streamlit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import make_folder


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: set[int], seconds: float = 20) -> set[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if alive(p)}


def bench(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    """Enough images for the scan to read in worker processes and group copies for a few seconds."""
    return make_folder(tmp_path_factory.mktemp("signals") / "data", {"a": 300, "b": 300}, size=64, seed=9)


@pytest.mark.slow
@pytest.mark.parametrize("signum, moment", [(signal.SIGTERM, "workers reading"), (signal.SIGHUP, "1.5 s in"),
                                            (signal.SIGTERM, "4 s in")], ids=["SIGTERM-reading", "SIGHUP-1.5s", "SIGTERM-4s"])
def test_stop_signal_during_scan_leaves_no_worker_and_no_temporary_file(many_images, tmp_path, moment, signum):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = bench("scan", many_images, env={"TMPDIR": str(tmp)})
    started, seen = time.time(), set()
    if moment == "workers reading":  # the scan reads its files in worker processes
        while not seen and process.poll() is None and time.time() - started < 60:
            seen |= descendants(process.pid)
            time.sleep(0.01)
        assert seen, "the scan started no worker process"
    else:
        while time.time() - started < float(moment.split()[0]):
            seen |= descendants(process.pid)
            time.sleep(0.05)
    seen |= descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"bench scan did not stop within 60 s of {signal.Signals(signum).name}")
    if process.returncode != 0:  # it may have finished before the signal came
        assert process.returncode == 128 + signum, err.decode()
        assert f"Stopped by {signal.Signals(signum).name}" in err.decode() and "Traceback" not in err.decode()
    assert wait_gone(seen) == set(), f"processes left after {moment}: {seen}"
    assert sorted(p.name for p in tmp.iterdir()) == [], "temporary files left in TMPDIR"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_serve_hands_a_stop_signal_to_streamlit_and_waits_for_it(tiny_run, signum):
    pytest.importorskip("streamlit", reason="streamlit is not installed (pip install 'bench[serve]')")
    port = _free_port()
    process = bench("serve", tiny_run, "--port", port, "--address", "127.0.0.1")
    deadline = time.time() + 90
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        assert time.time() < deadline and process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.3)
    app = descendants(process.pid)
    assert app, "Streamlit runs as a child of bench serve"
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signum, err.decode()[-2000:]
    assert wait_gone(app, 5) == set(), "Streamlit kept running after bench serve ended"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the port is still served"


def test_a_table_file_left_by_a_killed_process_is_removed_by_the_next(tmp_path):
    """``kill -9`` cannot be handled: the file of a process that no longer exists goes when
    the next table is made; a live process's file stays."""
    from bench.data.copy_table import PREFIX, CopyTable, remove_orphans

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"{PREFIX}{int(dead.stdout)}-x1.rows"
    orphan.write_bytes(b"features of patient images")
    live = tmp_path / f"{PREFIX}{os.getpid()}-x2.rows"
    live.write_bytes(b"in use")
    table = CopyTable.create(3, folder=tmp_path)
    assert not orphan.exists() and live.exists() and Path(table.path).name.startswith(f"{PREFIX}{os.getpid()}-")
    assert remove_orphans(tmp_path) == []
