"""`bench` commands as separate processes without TensorFlow's start-up each time.

A test that kills `bench` needs it in a process of its own; starting ``python -m bench.cli``
costs several seconds of imports every time. Here one helper process imports TensorFlow and
bench's CLI once (without running anything in TensorFlow) and forks a child per command:
each child is a separate process running bench's CLI with its own environment, working
folder, stdout and stderr, SIGKILLed like any other. The test process itself never forks
(one that has run TensorFlow must not).

    with WarmBench() as warm:
        done = warm.run(["run", "--data", ...], env={"BENCH_KILL_AT": "caching"})
        proc = warm.start(["run", "--resume", ...]); ...; os.kill(proc.pid, signal.SIGKILL); proc.wait()

The helper speaks JSON lines on its stdin/stdout: ``start`` (fork a command, reply its pid),
``poll`` and ``wait`` (its exit code: negative for a signal, as subprocess reports it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Finished:
    """What ``subprocess.run(..., capture_output=True, text=True)`` returns, for a warm command."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class WarmProcess:
    """A running warm command: ``pid``, ``poll()``, ``wait()``, then ``stdout``/``stderr`` text."""

    def __init__(self, warm: "WarmBench", pid: int, out: Path, err: Path):
        self.warm, self.pid, self._out, self._err = warm, pid, out, err
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.warm._ask({"op": "poll", "pid": self.pid})["rc"]
        return self.returncode

    def wait(self, timeout: float = 900) -> int:
        deadline = time.time() + timeout
        while self.poll() is None:
            if time.time() > deadline:
                os.kill(self.pid, 9)
                raise TimeoutError(f"bench (pid {self.pid}) still running after {timeout} s")
            time.sleep(0.05)
        return self.returncode

    @property
    def stdout(self) -> str:
        return self._out.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self._err.read_text(encoding="utf-8", errors="replace")


class WarmBench:
    """The helper process (started on first use) and the commands it forks."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._logs = Path(tempfile.mkdtemp(prefix="warm-bench-"))
        self._count = 0

    def __enter__(self) -> "WarmBench":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ask(self, message: dict) -> dict:
        if self._proc is None:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            with open(self._logs / "helper.err", "w") as err:  # TensorFlow's start-up lines, the helper's errors
                self._proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, stderr=err, env=env, text=True)
        self._proc.stdin.write(json.dumps(message) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the warm bench helper ended")
        return json.loads(line)

    def start(self, args, env: dict | None = None, cwd: Path | None = None) -> WarmProcess:
        """Fork ``bench <args>`` with ``env`` added to the environment (a None value removes
        the variable), in ``cwd`` (default: the repository)."""
        self._count += 1
        out, err = self._logs / f"{self._count}.out", self._logs / f"{self._count}.err"
        reply = self._ask({"op": "start", "args": [os.fsdecode(a) for a in args], "env": env or {},
                           "cwd": str(cwd or REPO), "out": str(out), "err": str(err)})
        return WarmProcess(self, reply["pid"], out, err)

    def run(self, args, env: dict | None = None, cwd: Path | None = None, timeout: float = 900) -> Finished:
        """``bench <args>`` to its end: return code, stdout and stderr."""
        proc = self.start(args, env, cwd)
        proc.wait(timeout)
        return Finished(proc.returncode, proc.stdout, proc.stderr)

    def close(self) -> None:
        """End the helper and remove the commands' captured output."""
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
            self._proc = None
        shutil.rmtree(self._logs, ignore_errors=True)


# ------------------------------------------------------------------ the helper process


def run_child(args: list[str], cwd, env: dict, out, err, append: bool = False) -> None:  # pragma: no cover
    """In a forked child: ``bench <args>`` in ``cwd`` with ``env`` applied (a None value
    removes the variable), stdout and stderr to the files ``out`` and ``err`` (the same file
    may be both; ``append`` adds to them), then exit with the command's code."""
    code = 0
    try:
        os.chdir(cwd)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        sys.argv = ["bench", *args]
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        os.dup2(os.open(out, flags), 1)
        os.dup2(os.open(err, flags) if str(err) != str(out) else 1, 2)
        sys.stdin = open(os.devnull)
        from bench.cli import app

        try:
            returned = app(args, prog_name="bench", standalone_mode=False)
        except Exception as exc:
            if not (hasattr(exc, "show") and hasattr(exc, "exit_code")):
                raise
            exc.show()  # a usage error, shown as the CLI shows it
            returned = exc.exit_code
        code = returned if isinstance(returned, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child reports and exits
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve() -> None:  # pragma: no cover - the helper's main loop
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow  # noqa: F401 - imported once, before any fork

    import bench.cli  # noqa: F401

    finished: dict[int, int] = {}
    for line in sys.stdin:
        message = json.loads(line)
        if message["op"] == "start":
            pid = os.fork()
            if pid == 0:
                run_child(message["args"], message["cwd"], message["env"], message["out"], message["err"])
            reply = {"pid": pid}
        else:
            pid = message["pid"]
            if pid not in finished:
                done, status = os.waitpid(pid, 0 if message["op"] == "wait" else os.WNOHANG)
                if done:
                    finished[pid] = os.waitstatus_to_exitcode(status)
            reply = {"rc": finished.get(pid)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    _serve()
