"""bench serve: the Streamlit app driven by AppTest, the launcher, and (slow) a headless
Chromium screenshot of the running app."""

from __future__ import annotations

import io
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bench.deploy.serve
from bench.errors import BenchError
from bench.deploy.export import export_run
from bench.deploy.serve import APP, TARGET_ENV, check_target, serve, serve_env, streamlit_command
from conftest import noise_image

CHROMIUM = Path("/usr/bin/chromium")



@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    return export_run(tiny_run, to=tmp_path_factory.mktemp("serve") / "model", check=False).path


def _png(size=(50, 38), mode="RGB") -> bytes:
    buf = io.BytesIO()
    noise_image(np.random.default_rng(8), 48, mode=mode).resize(size).save(buf, format="PNG")
    return buf.getvalue()


def _app(monkeypatch, target: Path):
    testing = pytest.importorskip("streamlit.testing.v1", reason="streamlit is not installed (pip install 'bench[serve]')")
    monkeypatch.setenv(TARGET_ENV, str(target))
    return testing.AppTest.from_file(str(APP), default_timeout=180)


def test_app_predicts_an_uploaded_image(monkeypatch, exported):
    at = _app(monkeypatch, exported).run()
    assert not at.exception and not at.error
    assert "not a medical device" in at.warning[0].value
    assert "Random initialisation" in " ".join(i.value for i in at.info)
    at.file_uploader[0].set_value([("scan.png", _png(), "image/png")]).run()
    assert not at.exception and not at.error
    result = [m.value for m in at.markdown if m.value.startswith("**scan.png**")]
    assert len(result) == 1
    assert ("**a**" in result[0]) != ("**b**" in result[0]) and "probability" in result[0]


def test_app_on_a_run_folder_shows_leaderboard_and_picker(monkeypatch, tiny_run):
    at = _app(monkeypatch, tiny_run).run()
    assert not at.exception and not at.error
    assert any("Leaderboard" in h.value for h in at.subheader)
    assert len(at.dataframe) >= 1
    assert at.selectbox[0].value == "mobilenet_v2"
    at.file_uploader[0].set_value([("one.png", _png(), "image/png"), ("bad.png", b"junk", "image/png"),
                                   ("grey.png", _png((30, 60), "L"), "image/png")]).run()
    assert not at.exception
    shown = [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**")]
    assert shown == ["one.png", "grey.png"]
    assert len(at.error) == 1 and "bad.png: skipped" in at.error[0].value


def test_app_without_a_target_says_how_to_start(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "missing").run()
    assert at.error and "bench serve MODEL_DIR" in at.error[0].value


def test_missing_streamlit_gives_a_clear_message(monkeypatch, exported):
    monkeypatch.setattr(bench.deploy.serve, "streamlit_available", lambda: False)
    with pytest.raises(BenchError, match=r"pip install 'bench\[serve\]'"):
        serve(exported)


def test_launcher_checks_the_folder(exported, tiny_run, tmp_path):
    assert check_target(exported) == "export" and check_target(tiny_run) == "run"
    with pytest.raises(BenchError, match="neither an exported model"):
        check_target(tmp_path)
    with pytest.raises(BenchError, match="not found"):
        check_target(tmp_path / "nope")
    cmd = streamlit_command(exported, port=8600)
    assert cmd[1:5] == ["-m", "streamlit", "run", str(APP)] and "8600" in cmd
    assert cmd[-1] == str(exported.resolve()) and serve_env(exported)[TARGET_ENV] == str(exported.resolve())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed at /usr/bin/chromium")
def test_browser_screenshot_of_the_running_app(tiny_run, tmp_path):
    pytest.importorskip("streamlit", reason="streamlit is not installed (pip install 'bench[serve]')")
    port = _free_port()
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen(streamlit_command(tiny_run, port, "127.0.0.1"), env=serve_env(tiny_run),
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def chromium(*args: str) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
            return subprocess.run(
                [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--user-data-dir={profile}", "--window-size=1280,1100", "--virtual-time-budget=5000", *args, url],
                capture_output=True, text=True, timeout=120, check=False)

    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(url + "_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert time.time() < deadline and server.poll() is None, (tmp_path / "streamlit.log").read_text()
            time.sleep(0.5)
        # the first session imports TensorFlow and loads the model; each Chromium start is a
        # new app session, which renders again: poll, the page's text and its screenshot taken
        # by one Chromium run, until the page is complete and the screenshot shows it
        deadline = time.time() + 240
        shot = tmp_path / "app.png"
        while True:
            done = chromium("--dump-dom", f"--screenshot={shot}")
            assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
            with Image.open(shot) as im:
                pixels = np.asarray(im.convert("L"), dtype=np.float32)
            if "Upload one or more images" in done.stdout and pixels.std() > 5:
                break
            assert time.time() < deadline, "the app never finished rendering"
            shot.unlink()
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert pixels.shape == (1100, 1280) and pixels.std() > 5  # a rendered page, not a blank one
