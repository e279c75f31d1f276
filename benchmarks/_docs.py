"""``--write-docs``: a benchmark writes what it prints into ``docs/performance.md``.

Each benchmark owns one marked section of that page::

    <!-- bench:NAME -->
    ...replaced on every --write-docs run...
    <!-- /bench:NAME -->

:func:`recording` tees everything the benchmark prints to stdout and, when the benchmark
ends without an error, replaces the section's contents with a header line (machine,
date, versions, load average at the start, the command) and the printed figures in a
text block. Without ``--write-docs`` it changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import re
import shlex
import sys
from importlib import metadata
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def add_option(parser) -> None:
    """Add ``--write-docs`` to an argparse parser."""
    parser.add_argument("--write-docs", action="store_true",
                        help=f"also write the printed figures into their section of {PAGE.relative_to(PAGE.parents[1])}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def header(load: tuple[float, float, float], argv: list[str]) -> str:
    """One line: where, when and with what the figures were measured."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    command = shlex.join(["python", f"benchmarks/{Path(argv[0]).name}", *argv[1:]])
    return (f"Measured {date} on {cpu_model()} ({usable} usable of {os.cpu_count()} cores), "
            f"Python {platform.python_version()}, TensorFlow {_version('tensorflow')}, bench {_version('bench')}; "
            f"load average {load[0]:.2f} at the start. Command: `{command}`")


def replace_section(name: str, body: str, page: Path = PAGE) -> None:
    """Replace the contents between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``."""
    text = page.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: {page} has no section <!-- bench:{name} --> ... <!-- /bench:{name} -->; "
                         "add the two markers where the figures belong")
    new = pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text, count=1)
    tmp = page.with_suffix(".md.tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(page)


class _Tee(io.TextIOBase):
    def __init__(self, stream):
        self.stream, self.buffer_ = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.buffer_.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def recording(name: str, write_docs: bool, load: tuple[float, float, float] | None = None, page: Path = PAGE):
    """Tee stdout; on a clean exit with ``write_docs``, write it into section ``name``. ``load``:
    the load average when the benchmark started, where that was before this block."""
    if not write_docs:
        yield
        return
    if not page.is_file():
        raise SystemExit(f"error: {page} not found; --write-docs writes into it")
    load = tuple(load) if load is not None else os.getloadavg()
    argv = list(sys.argv)
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield
    printed = tee.buffer_.getvalue().strip("\n")
    replace_section(name, f"{header(load, argv)}\n\n```text\n{printed}\n```\n", page)
    print(f"wrote section '{name}' of {page}", file=sys.stderr)
