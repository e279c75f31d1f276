"""The HTML report in a real browser: headless Chromium decodes every embedded figure
and shows the tables. Saves a full-page screenshot under tmp_path (and, when
BENCH_SCREENSHOT_DIR is set, a copy there), never in the repository."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.report import build_report
from bench.report.browser import check_html, find_chromium
from test_report import make_run

CHROMIUM = find_chromium()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="headless Chromium not found at /usr/bin/chromium; install Debian's chromium package "
        "(apt-get install -y chromium; CI's .ci/run does)",
    ),
]


def test_report_renders_in_chromium(tmp_path):
    run = make_run(tmp_path / "results", {
        "alpha": {"status": "ok", "skill": 0.5, "failed_trials": 1},
        "beta": {"status": "ok", "skill": 0.2},
        "broken": {"status": "failed", "failed_trials": 2},
    }, weights="none", synthetic=True)
    md, html = build_report(run, tmp_path / "reports")
    figures = sorted(md.parent.glob("*.png"))
    page = html.read_text(encoding="utf-8")
    shot = tmp_path / "screenshot" / "report.png"

    result = check_html(html, shot)

    assert result.images_total == len(figures) >= 7
    assert result.images_decoded == result.images_total, f"not decoded: {result.broken}"
    assert result.tables == page.count("<table") >= 10
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(shot) as img:
        width, height = img.size
        colours = img.convert("L").getextrema()
    assert width == 1200 and height >= min(result.height, 30000) > 3000
    assert colours[0] < 60 and colours[1] > 240  # text on a white page, not a blank capture
    keep = os.environ.get("BENCH_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")
    print(f"screenshot: {shot}")


def test_cv_report_renders_in_chromium(tmp_path):
    from test_report_cv import make_cv_run

    run = make_cv_run(tmp_path / "results")
    md, html = build_report(run, tmp_path / "reports")
    shot = tmp_path / "screenshot" / "report_cv.png"

    result = check_html(html, shot)

    assert result.images_total == len(list(md.parent.glob("*.png"))) >= 10
    assert result.images_decoded == result.images_total, f"not decoded: {result.broken}"
    assert result.tables == html.read_text(encoding="utf-8").count("<table") >= 12
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size[0] == 1200 and img.size[1] > 3000
        assert img.convert("L").getextrema()[0] < 60
    keep = os.environ.get("BENCH_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report_cv.png")


def test_check_detects_a_broken_image(tmp_path):
    html = tmp_path / "broken.html"
    html.write_text(
        "<!DOCTYPE html><html><body><table><tr><td>x</td></tr></table>"
        '<img alt="good" src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8'
        'z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==">'
        '<img alt="bad" src="data:image/png;base64,bm90IGEgcG5n"></body></html>',
        encoding="utf-8",
    )
    result = check_html(html)
    assert (result.images_total, result.images_decoded, result.broken, result.tables) == (2, 1, ["bad"], 1)
