"""Can a randomly initialised backbone see the demo's lesions? (docs/data.md, the demo data)

    .venv/bin/python benchmarks/demo_learnability.py [--n 100] [--backbones a,b,...]

For the demo generator's subtle lesions (what ``benchmarks/copies.py`` draws) and
its conspicuous ones (the demo data), renders ``n`` images per class at 128 px, resizes
them to 96 px as ``bench run --image-size 96`` does, builds each backbone with random
weights and data-initialised BatchNorm (``calibrate_batchnorm``, as ``--weights none``
does), and prints the 5-fold cross-validated AUC of a logistic regression on the
average-pooled and max-pooled final features. No test split and no search: it measures
what the random features carry, which bounds what a frozen search can find.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _docs, also when loaded by a test

from PIL import Image  # noqa: E402

from _docs import add_option, recording  # noqa: E402


DEFAULT_BACKBONES = "densenet121,vgg16,mobilenet_v2,efficientnet_b0,resnet50,xception"


def images(n: int, conspicuous: bool, size: int = 128, image_size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    from bench.data.phantom import render_slice

    x, y = [], []
    for label in (0, 1):
        for index in range(n):
            pixels = render_slice(np.random.default_rng([0, label, index]), size, bool(label), conspicuous=conspicuous)
            rgb = Image.fromarray(pixels).convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            x.append(np.asarray(rgb))
            y.append(label)
    return np.stack(x), np.array(y)


def random_features(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import keras

    import backbones
    from bench.forward import predict_batch
    from bench.layers import BackbonePreprocess
    from bench.search.source import CALIBRATION_IMAGES, calibrate_batchnorm

    record = backbones.get(name)
    keras.utils.set_random_seed(0)
    model = record.build(weights=None, image_size=x.shape[1])
    calibrate_batchnorm(model, record.preprocessing, x[:: max(1, len(x) // CALIBRATION_IMAGES)][:CALIBRATION_IMAGES])
    inputs = np.asarray(BackbonePreprocess(record.preprocessing)(x.astype("float32")))
    maps = np.concatenate([predict_batch(model, inputs[i:i + 32]) for i in range(0, len(inputs), 32)])
    return maps.mean(axis=(1, 2)), maps.max(axis=(1, 2))


def cv_auc(features: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(model, features, y, cv=folds, scoring="roc_auc").mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="images per class")
    parser.add_argument("--backbones", default=DEFAULT_BACKBONES)
    add_option(parser)
    args = parser.parse_args()
    with recording("demo_learnability", args.write_docs):
        print(f"{'lesions':10s} {'backbone':16s} {'CV AUC avg':>10s} {'CV AUC max':>10s}  seconds")
        for label, conspicuous in (("subtle", False), ("demo", True)):
            x, y = images(args.n, conspicuous)
            for name in args.backbones.split(","):
                start = time.perf_counter()
                avg, top = random_features(name, x)
                print(f"{label:10s} {name:16s} {cv_auc(avg, y):10.3f} {cv_auc(top, y):10.3f}  "
                      f"{time.perf_counter() - start:.0f}", flush=True)


if __name__ == "__main__":
    main()
