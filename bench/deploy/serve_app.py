"""The Streamlit app behind ``bench serve``: upload images, see label, probability, Grad-CAM.

Started by :func:`bench.deploy.serve.serve`, which passes the model or run folder in the
``BENCH_SERVE_TARGET`` environment variable (``streamlit run bench/serve_app.py -- PATH``
works too). For a run folder the app also shows the leaderboard and lets the user pick a
backbone (default: the recommended one); its export is used when there is one, else the
model is assembled in memory from ``best_model.keras`` (nothing is written).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

TARGET_ENV = "BENCH_SERVE_TARGET"
UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "dcm", "dicom"]
LEADERBOARD_COLUMNS = ["rank", "backbone", "status", "val_objective", "test_accuracy", "test_accuracy_ci_low",
                       "test_accuracy_ci_high", "test_roc_auc", "test_f1", "image_size", "latency_ms_b1"]


def _target() -> Path | None:
    value = os.environ.get(TARGET_ENV)
    if not value and len(sys.argv) > 1:
        value = sys.argv[1]
    return Path(value) if value else None


@st.cache_resource(show_spinner="Loading the model ...")
def _predictor(path: str, backbone: str | None):
    from bench.deploy.predict import Predictor

    return Predictor.load(Path(path), backbone)


def _banners(synthetic: bool, weights: str | None) -> None:
    st.warning("Research tool, not a medical device: not validated for diagnosis or any clinical decision.")
    if synthetic:
        st.info("This model was trained on SYNTHETIC demo images, not real scans.")
    if weights == "none":
        st.info("Random initialisation (--weights none): the backbone was not pretrained.")


def _run_section(run_dir: Path) -> str | None:
    """Leaderboard and backbone picker for a run folder; returns the chosen backbone."""
    import pandas as pd

    from bench.runfolder import read_run

    run = read_run(run_dir)
    _banners(bool(run.run.get("synthetic_data")), str(run.config.get("weights")))
    st.subheader(f"Leaderboard: run {run.name}")
    table = pd.DataFrame(run.leaderboard)
    st.dataframe(table[[c for c in LEADERBOARD_COLUMNS if c in table]], hide_index=True)
    ok = run.ranked()
    if not ok:
        st.error("No backbone of this run finished successfully; nothing to serve.")
        st.stop()
    names = [r["backbone"] for r in ok]
    ranks = {r["backbone"]: r["rank"] for r in ok}
    return st.selectbox(
        "Backbone", names, index=0,
        format_func=lambda b: f"{b} (rank {ranks[b]}{', recommended' if ranks[b] == 1 else ''})",
    )


def _export_banners(model_dir: Path) -> None:
    from bench.atomic import read_json

    manifest = model_dir / "manifest.json"
    source = read_json(manifest).get("source", {}) if manifest.is_file() else {}
    _banners(bool(source.get("synthetic_data")), source.get("weights"))


def _show(predictor, name: str, data, with_cam: bool) -> None:
    from bench.data.images import UnreadableImage
    from bench.deploy.gradcam import overlay
    from bench.deploy.predict import read_image

    try:
        image = read_image(data, predictor.window)
    except (UnreadableImage, OSError) as exc:
        st.error(f"{name}: skipped ({exc})")
        return
    probs = predictor.probabilities(image)
    label, p = predictor.decide(probs)
    st.markdown(f"**{name}**: **{label}** (probability {p:.3f})")
    left, right = st.columns(2)
    left.image(image, caption=f"{name} ({image.shape[1]}x{image.shape[0]})", width="stretch")
    if with_cam:
        k = predictor.explained_class(probs)
        cam = predictor.gradcam(image, k)
        right.image(overlay(image, cam.heatmap_for(image)),
                    caption=f"Grad-CAM: evidence for '{predictor.classes[k]}' (layer {cam.layer})"
                    + (": none found anywhere" if cam.empty else ""), width="stretch")
    st.dataframe({"class": predictor.classes, "probability": [round(float(v), 4) for v in probs]}, hide_index=True)


def main() -> None:
    st.set_page_config(page_title="bench", layout="wide")
    st.title("bench: image classifier")
    target = _target()
    if target is None or not target.is_dir():
        st.error(f"No model folder given (set {TARGET_ENV}, or start the app with `bench serve MODEL_DIR`).")
        st.stop()
    from bench.runfolder import is_run_dir

    backbone = None
    if is_run_dir(target):
        backbone = _run_section(target)
    else:
        _export_banners(target)
    try:
        predictor = _predictor(str(target.resolve()), backbone)
    except Exception as exc:  # a BenchError or a broken model file: show it in the page
        st.error(str(exc))
        st.stop()
    rule = (f"'{predictor.positive_class}' when its probability >= {predictor.threshold:.4g}"
            if predictor.threshold is not None else "highest probability")
    st.caption(f"Model: {predictor.labels.get('backbone')} at {predictor.image_size}px from {predictor.source}. "
               f"Classes: {', '.join(predictor.classes)}. Decision: {rule}.")
    files = st.file_uploader("Upload one or more images", type=UPLOAD_TYPES, accept_multiple_files=True)
    with_cam = st.checkbox("Show Grad-CAM overlay", value=True)
    for upload in files or []:
        _show(predictor, upload.name, upload, with_cam)


main()
