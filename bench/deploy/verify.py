"""The export's fidelity check, run in a fresh Python process.

Fidelity checks (``check=True``): a fresh Python process loads the export and predicts
every test image of the run from its original file; the Keras model and the SavedModel
must give the run's test predictions (``test_predictions.csv``) to within
:data:`KERAS_TOLERANCE` and the same labels; the TFLite model, fed the run's resized
arrays, must agree within :data:`TFLITE_TOLERANCE` (labels may differ only for
probabilities that close to the threshold).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench.deploy.formats import FILES
from bench.errors import BenchError
from bench.atomic import read_json, sha256_file
from bench.runfolder import RunFiles
from bench.tables import probability_matrix, read_table

#: The exported Keras model and SavedModel against the run's test probabilities.
KERAS_TOLERANCE = 1e-4
#: TFLite (float32, TFLite's own kernels) against the run's test probabilities.
TFLITE_TOLERANCE = 1e-3


def check_export(export_dir: Path, run_dir: Path, fresh_process: bool = True, timeout: float = 1800) -> dict:
    """Compare the export's predictions on the run's test files with ``test_predictions.csv``.

    Returns a dict: ``run`` (False with ``reason`` when the test images are unavailable),
    ``passed``, ``failure`` and per format ``max_abs_diff``, ``tolerance``,
    ``label_mismatches``. With ``fresh_process`` the check runs in a new Python process,
    as a user loading the export would.
    """
    if not fresh_process:
        return _check_in_process(Path(export_dir), Path(run_dir))
    cmd = [sys.executable, "-c", _WORKER, "check", str(export_dir), str(run_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchError(f"the fidelity check process failed (exit {done.returncode}): {' | '.join(tail)[-800:]}")
    return json.loads(lines[-1])


def _test_rows(run_dir: Path, files: list[str]) -> tuple[Path | None, str | None]:
    """The run's data folder, and why its test ``files`` cannot be used, if so (missing, or
    changed since the split recorded their sha256)."""
    layout = RunFiles(run_dir)
    run = read_json(layout.run_json)
    recorded = {f["path"]: f["sha256"] for f in read_json(layout.split_json)["files"]}
    data = run.get("config", {}).get("data")
    if not data or not Path(data).is_dir():
        return None, f"the run's data folder {data} is not available"
    root = Path(data)
    for name in files:
        path = root / name
        if not path.is_file() or sha256_file(path) != recorded.get(name):
            return root, f"image {path} is missing or changed since the run"
    return root, None


def _check_in_process(export_dir: Path, run_dir: Path) -> dict:

    from bench.data.dicom import reading_window
    from bench.deploy.predict import dicom_window

    labels = read_json(export_dir / "labels.json")
    with reading_window(dicom_window(labels)):  # DICOM files as the export's contract says
        return _check_files(export_dir, run_dir, labels)


def _check_files(export_dir: Path, run_dir: Path, labels: dict) -> dict:
    from bench.data.images import load_array
    from bench.deploy.predict import Predictor, read_image

    backbone = labels["backbone"]
    search = RunFiles(run_dir).backbone(backbone)
    csv, images_of = search.test_predictions_csv, "test"
    if not csv.is_file():  # --cv without a holdout: the final model's validation predictions
        csv, images_of = search.val_predictions_csv, "validation"
    if not csv.is_file():
        return {"run": False, "reason": f"{csv} not found"}
    expected = read_table(csv)
    rows = [{"path": f} for f in expected["file"]]
    root, reason = _test_rows(run_dir, expected["file"].tolist())
    if reason:
        return {"run": False, "reason": reason}
    classes = labels["classes"]
    want = probability_matrix(expected, classes)
    if "prediction" not in expected:  # validation predictions record probabilities only
        expected["prediction"] = _decide(want, classes, labels.get("threshold"))
    # Keras and SavedModel get each original file at its own size (the user's path);
    # TFLite gets the padded, resized arrays the run evaluated (its documented input).
    # Each format reads the images again, one at a time: none is held for the next.
    def originals():
        return (read_image(root / r["path"]) for r in rows)

    def resized():
        size = int(labels["image_size"])
        return (load_array(root / r["path"], size) for r in rows)

    runners = {"keras": (Predictor.from_export(export_dir).probabilities, originals)}
    if (export_dir / FILES["savedmodel"]).is_dir():
        runners["savedmodel"] = (_saved_model_runner(export_dir / FILES["savedmodel"]), originals)
    if (export_dir / FILES["tflite"]).is_file():
        runners["tflite"] = (_tflite_runner(export_dir / FILES["tflite"]), resized)
    result = {"run": True, "n_images": len(rows), "images": images_of, "formats": {}, "passed": True, "failure": None}
    threshold = labels.get("threshold")
    for fmt, (runner, inputs) in runners.items():
        got = np.stack([runner(img) for img in inputs()]).astype(np.float64)
        tol = TFLITE_TOLERANCE if fmt == "tflite" else KERAS_TOLERANCE
        diff = np.abs(got - want)
        pred = _decide(got, classes, threshold)
        mismatch = [i for i, p in enumerate(pred) if p != expected["prediction"].iloc[i]]
        if threshold is not None:
            near = [i for i in mismatch if abs(want[i, 1] - threshold) <= tol]
        else:
            top2 = np.sort(want, axis=1)[:, -2:]
            near = [i for i in mismatch if top2[i, 1] - top2[i, 0] <= 2 * tol]
        worst = int(diff.max(axis=1).argmax()) if len(diff) else 0
        passed = bool(diff.max(initial=0.0) <= tol and len(mismatch) == len(near))
        result["formats"][fmt] = {
            "max_abs_diff": float(diff.max(initial=0.0)),
            "tolerance": tol,
            "label_mismatches": len(mismatch),
            "label_mismatches_near_threshold": len(near),
            "worst_file": rows[worst]["path"] if len(rows) else None,
            "passed": passed,
        }
        if not passed and result["passed"]:
            result["passed"] = False
            result["failure"] = (f"{fmt}: largest probability difference {diff.max():.2e} on {rows[worst]['path']} "
                                 f"(tolerance {tol:g}), {len(mismatch) - len(near)} labels differ")
    return result


def _decide(probs: np.ndarray, classes: list[str], threshold: float | None) -> list[str]:
    if threshold is not None and len(classes) == 2:
        return [classes[1] if p >= threshold else classes[0] for p in probs[:, 1]]
    return [classes[i] for i in probs.argmax(axis=1)]


def _saved_model_runner(path: Path):
    loaded = tf.saved_model.load(str(path))

    def run(image: np.ndarray) -> np.ndarray:
        return np.asarray(loaded.serve(tf.constant(image[None], tf.uint8)))[0]

    return run


def _tflite_runner(path: Path):
    import warnings

    with warnings.catch_warnings():
        # TF >= 2.20 points users to ai_edge_litert; the TF interpreter is what we check against
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    interpreter.allocate_tensors()

    def run(image: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(inp["index"], image[None].astype(np.uint8))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(out["index"]))[0]

    return run


_WORKER = "import sys; from bench.deploy.verify import _main; sys.exit(_main(sys.argv[1:]))"


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "check":
        print("usage: python -m bench.deploy.verify check EXPORT_DIR RUN_DIR", file=sys.stderr)
        return 2
    result = _check_in_process(Path(argv[1]), Path(argv[2]))
    print(json.dumps(result))
    return 0
