"""Open a report in headless Chromium: count decoded images and tables, take a screenshot.

Used by the browser test (and handy by hand):

    python -m bench.report.browser reports/<run>/report.html /tmp/report.png

The report itself carries no script. A probe copy with a small ``onload`` script is
written to a temporary folder; Chromium loads it, the script records on ``<html>`` how
many ``<img>`` elements decoded (``naturalWidth > 0``), how many tables there are and the
page height, and ``--dump-dom`` prints the result. A second call takes a full-height
screenshot of the original file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--mute-audio",
)
PROBE = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var root = document.documentElement;
  root.setAttribute("data-images-total", String(images.length));
  root.setAttribute("data-images-decoded", String(decoded.length));
  root.setAttribute("data-broken", images.filter(function (i) { return decoded.indexOf(i) < 0; })
    .map(function (i) { return i.alt; }).join("|"));
  root.setAttribute("data-tables", String(document.querySelectorAll("table").length));
  root.setAttribute("data-height", String(Math.ceil(root.scrollHeight)));
});
</script>
"""


@dataclass
class BrowserCheck:
    images_total: int
    images_decoded: int
    broken: list[str]
    tables: int
    height: int
    screenshot: Path | None


def find_chromium() -> str | None:
    for path in CANDIDATES:
        if Path(path).exists():
            return path
    return shutil.which("chromium")


def _run(chromium: str, profile: Path, *args: str, timeout: float) -> str:
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def check_html(html: Path, screenshot: Path | None = None, width: int = 1200, max_height: int = 30000,
               chromium: str | None = None, timeout: float = 120) -> BrowserCheck:
    """Load ``html`` in headless Chromium; optionally save a full-page PNG at ``screenshot``."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found; install Debian's chromium package (apt-get install chromium)")
    html = Path(html).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as tmp:
        tmp = Path(tmp)
        text = html.read_text(encoding="utf-8")
        probe = tmp / "probe.html"
        probe.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
        dom = _run(chromium, tmp / "profile", "--virtual-time-budget=15000", f"--window-size={width},900",
                   "--dump-dom", probe.as_uri(), timeout=timeout)
        root = re.search(r"<html[^>]*>", dom)
        attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', root.group(0) if root else ""))
        if "images-total" not in attrs:
            raise RuntimeError("the page's load handler never ran; the HTML did not finish loading")
        height = int(attrs.get("height", "0") or 0)
        if screenshot is not None:
            screenshot = Path(screenshot).resolve()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            _run(chromium, tmp / "profile", "--virtual-time-budget=15000",
                 f"--window-size={width},{min(max(height, 600), max_height)}", f"--screenshot={screenshot}",
                 html.as_uri(), timeout=timeout)
    return BrowserCheck(
        images_total=int(attrs["images-total"]), images_decoded=int(attrs.get("images-decoded", "0")),
        broken=[b for b in attrs.get("broken", "").split("|") if b], tables=int(attrs.get("tables", "0")),
        height=height, screenshot=screenshot,
    )


if __name__ == "__main__":  # pragma: no cover - manual use
    result = check_html(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(result)
    sys.exit(0 if result.images_total == result.images_decoded else 1)
