"""bench.report.suite_figures: the CD diagram, the Bayesian matrix and the scores heatmap
write plausible PNGs for a 5 x 3 suite, a 2 x 2 suite and a suite with a failed cell."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.evaluate.across_datasets import compare_across
from bench.report.figures import style
from bench.report.rendering import DPI
from bench.report.suite_figures import bayes_matrix, cd_diagram, scores_heatmap, write_png

FIVE_BY_THREE = np.array([[0.95, 0.93, 0.80], [0.91, 0.905, 0.82], [0.90, 0.897, 0.85], [0.88, 0.86, 0.81],
                          [0.84, 0.86, 0.79]])
CASES = {
    "5x3": (FIVE_BY_THREE, ["densenet121", "vgg16", "resnet50"]),
    "2x2": (np.array([[0.91, 0.88], [0.85, 0.86]]), ["densenet121", "vgg16"]),
    "nan": (np.where(np.eye(5, 3, 1, dtype=bool), np.nan, FIVE_BY_THREE), ["densenet121", "vgg16", "resnet50"]),
}


def draw(case: str, tmp_path):
    scores, models = CASES[case]
    datasets = [f"dataset {i}" for i in range(len(scores))]
    result = compare_across(datasets, models, scores)
    objectives = ["ROC AUC"] * (len(datasets) - 1) + ["Brier score, lower is better"]
    with style():
        figures = {
            "cd": cd_diagram(models, result.mean_ranks, result.nemenyi.p_values, result.nemenyi.cd),
            "bayes": bayes_matrix(models, result.bayes_matrix()),
            "heatmap": scores_heatmap(datasets, models, scores, scores - 0.03, scores + 0.02, objectives,
                                      ranks=result.ranks),
        }
        return {name: write_png(fig, tmp_path / f"{name}.png") for name, fig in figures.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_each_figure_writes_a_plausible_png(case, tmp_path):
    paths = draw(case, tmp_path)
    for name, path in paths.items():
        assert path == tmp_path / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 8_000, name
        with Image.open(path) as img:
            width, height = img.size
        assert 2 * DPI <= width <= 16 * DPI and 1.5 * DPI <= height <= 10 * DPI, (name, img.size)


def test_the_heatmap_marks_failed_cells_and_grows_with_the_datasets(tmp_path):
    scores = CASES["nan"][0]
    models = CASES["nan"][1]
    with style():
        fig = scores_heatmap([f"d{i}" for i in range(5)], models, scores, scores - 0.03, scores + 0.02,
                             ["ROC AUC"] * 5)
        texts = [t.get_text() for t in fig.axes[0].texts]
        small = scores_heatmap(["d0", "d1"], models, scores[:2], scores[:2], scores[:2], ["ROC AUC"] * 2)
    assert texts.count("failed") == int(np.isnan(scores).sum()) == 2
    assert "0.950\n[0.92, 0.97]" in texts
    assert fig.get_size_inches()[1] > small.get_size_inches()[1]
    # without ranks the colour is the estimate scaled within its row; without intervals just the estimate
    with style():
        plain = scores_heatmap(["d0"], ["a", "b"], [[0.9, 0.8]], [[np.nan, np.nan]], [[np.nan, np.nan]], ["ROC AUC"])
    assert "0.900" in [t.get_text() for t in plain.axes[0].texts]


def test_nothing_to_draw_and_misuse():
    assert cd_diagram(["a", "b"], [1.0, 2.0], np.ones((2, 2)), float("nan")) is None
    assert bayes_matrix(["a"], np.full((1, 1, 3), np.nan)) is None
    with pytest.raises(ValueError, match=r"Expected probabilities of shape \(2, 2, 3\)"):
        bayes_matrix(["a", "b"], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="Expected one objective label per dataset"):
        scores_heatmap(["d"], ["a"], [[0.9]], [[0.8]], [[1.0]], [])
