"""``bench serve``: start the Streamlit app (:mod:`bench.deploy.serve_app`) for a model or run folder.

Streamlit is an optional extra (``pip install 'bench[serve]'``); without it the command
stops with a one-line message saying so.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

from bench.errors import BenchError
from bench.stopping import Stopped
from bench.runfolder import RunFiles

APP = Path(__file__).with_name("serve_app.py")
TARGET_ENV = "BENCH_SERVE_TARGET"


def streamlit_available() -> bool:
    return importlib.util.find_spec("streamlit") is not None


def require_streamlit() -> None:
    if not streamlit_available():
        raise BenchError("bench serve needs Streamlit, an optional extra: pip install 'bench[serve]' (or pip install streamlit)")


def check_target(path: Path) -> str:
    """``"run"`` or ``"export"`` for a servable folder, else BenchError naming the fix.
    (Plain file checks: TensorFlow is imported by the app, not by the launcher.)"""
    path = Path(path)
    if not path.is_dir():
        raise BenchError(f"{path} not found; pass a folder written by `bench export` or `bench run`")
    if RunFiles(path).has_leaderboard:
        return "run"
    if (path / "model.keras").is_file() and (path / "labels.json").is_file():
        return "export"
    raise BenchError(f"{path} is neither an exported model (model.keras, labels.json) nor a finished run folder "
                     "(run.json, leaderboard.json); pass one of those")


def streamlit_command(target: Path, port: int = 8501, address: str = "localhost", headless: bool = True) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port), "--server.address", address,
        "--server.headless", "true" if headless else "false",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--", str(Path(target).resolve()),
    ]


def serve_env(target: Path) -> dict[str, str]:
    return {**os.environ, TARGET_ENV: str(Path(target).resolve()), "TF_CPP_MIN_LOG_LEVEL": "2"}


def serve(target: Path, port: int = 8501, address: str = "localhost", open_browser: bool = False) -> int:
    """Run the app until interrupted; returns Streamlit's exit code (0 after Ctrl-C)."""
    require_streamlit()
    check_target(target)
    if not 0 < port < 65536:
        raise BenchError(f"--port must be between 1 and 65535, got {port}")
    process = subprocess.Popen(streamlit_command(target, port, address, headless=not open_browser), env=serve_env(target))
    try:
        return process.wait()
    except KeyboardInterrupt:
        _stop(process, signal.SIGTERM)
        return 0
    except Stopped as exc:  # SIGTERM / SIGHUP: handed on to Streamlit, which is waited for
        _stop(process, exc.signum)
        raise


def _stop(process: subprocess.Popen, signum: int, timeout: float = 10) -> None:
    """Send ``signum`` to the app and wait for it; kill it if it has not ended in ``timeout`` s."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
