"""Trials trained together ahead of their turn (bench.search.cohort): the oracle's next
trials are guessed exactly, a head trained with others has the numbers it has alone,
and a search that trains its trials together writes the trials it writes one by one."""

from __future__ import annotations

import keras
import keras_tuner as kt
import numpy as np
import pytest

from bench.config import SearchConfig
from bench.search import head_training as H
from bench.search import kt_adapter
from bench.search.cohort import TrialsAhead
from bench.search.hypermodel import BenchHyperModel, TrialData
from bench.search.trainer import NonFiniteLoss
from bench.search.tuner import TrialSettings, make_tuner, trials_table


def _space(shape=(2, 2, 4)) -> kt.HyperParameters:
    data = TrialData({0: np.zeros((2, *shape))}, np.zeros(2, int), {0: np.zeros((2, *shape))}, np.zeros(2, int),
                     n_classes=2)
    space = kt.HyperParameters()
    BenchHyperModel([0], {0: shape}, data, top_factory=None, max_head_weights=1).build(space)
    return space


@pytest.mark.parametrize("kind, initial, expected", [("random", None, 11), ("bayesian", None, 11), ("bayesian", 4, 3)])
def test_the_dry_run_names_the_trials_the_oracle_then_creates(tmp_path, kind, initial, expected):
    """While the oracle draws at random, its next trials are known before they exist, and
    guessing them leaves its state as it was; Bayesian optimisation's draws stop being
    guessed where its Gaussian process takes over (``num_initial_points``)."""
    oracles = {"random": kt.oracles.RandomSearchOracle, "bayesian": kt.oracles.BayesianOptimizationOracle}
    kwargs = {"num_initial_points": initial} if initial else {}
    oracle = oracles[kind](objective=kt.Objective("score", "max"), max_trials=12, seed=7, hyperparameters=_space(),
                           **kwargs)
    oracle._set_project_dir(str(tmp_path), "p")
    trial = oracle.create_trial("tuner0")
    state = (oracle._seed_state, set(oracle._tried_so_far))
    guessed = kt_adapter.upcoming_trials(oracle, 20)
    assert (oracle._seed_state, oracle._tried_so_far) == state
    assert [n for n, _ in guessed] == list(range(1, 1 + expected))
    assert len({str(sorted(v.items())) for _, v in guessed}) == expected  # distinct trials, as the oracle keeps them
    rng = np.random.default_rng(0)
    for number, values in guessed:
        oracle.update_trial(trial.trial_id, {"score": float(rng.random())})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        trial = oracle.create_trial("tuner0")
        assert int(trial.trial_id) == number and trial.hyperparameters.values == values
    hyperband = kt.oracles.HyperbandOracle(objective=kt.Objective("score", "max"), max_epochs=9,
                                           hyperparameters=_space())
    assert kt_adapter.upcoming_trials(hyperband, 5) == []


def _rows(n=90, width=40, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, width)).astype(np.float32) + y[:, None] * 0.4
    return x[:70], y[:70], x[70:], y[70:]


def test_a_head_trained_with_others_has_the_numbers_it_has_alone():
    """Same batches, each head's own masks and stopping: the histories and weights of
    heads trained together equal those of each trained alone, bit for bit, also when one
    of them diverges (it alone fails) and another stops early."""
    x, y, xv, yv = _rows()
    width = x.shape[1]
    broken = H.initial_weights(width, [(8, 0.0)], 1, 4)
    broken[2][3, 0] = np.inf  # its loss is not a number from the first batch on
    members = [
        H.Member(H.initial_weights(width, [], 1, 1), [], 1e-7, 1),  # learns nothing: stops early
        H.Member(H.initial_weights(width, [(16, 0.3)], 1, 2), [0.3], 3e-3, 2),
        H.Member(H.initial_weights(width, [(8, 0.0), (4, 0.2)], 1, 3), [0.0, 0.2], 1e-3, 3),
        H.Member(broken, [0.0], 1e-3, 4),
    ]
    common = dict(n_classes=2, epochs=20, batch_size=16, patience=2, objective="val_accuracy", order_seed=5)
    together = H.train_together(members, x, y, xv, yv, **common)
    assert isinstance(together[3], NonFiniteLoss)
    assert len({len(t[0]["loss"]) for t in together[:3]}) > 1  # they stopped at different epochs
    for member, got in zip(members[:3], together[:3]):
        history, weights = H.train_rows(member.weights, member.rates, x, y, xv, yv, learning_rate=member.learning_rate,
                                        seed=member.seed, **common)
        assert got[0] == history
        for a, b in zip(got[1], weights):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(NonFiniteLoss, match="learning rate"):
        H.train_rows(broken, [0.0], x, y, xv, yv, learning_rate=1e-3, seed=4, **common)


def _search(tmp_path, name, monkeypatch, ahead: bool):
    x, y, xv, yv = _rows(n=120, width=48, seed=1)
    shape = (2, 2, 12)
    data = TrialData({0: x.reshape(-1, *shape)}, y, {0: xv.reshape(-1, *shape)}, yv, n_classes=2, order_seed=3)
    hypermodel = BenchHyperModel([0], {0: shape}, data, top_factory=None, max_head_weights=1)
    cfg = SearchConfig(max_trials=8, epochs=6, seed=3)
    if not ahead:
        monkeypatch.setattr(TrialsAhead, "result", lambda *args: None)
    trained = []
    real = H.train_together
    monkeypatch.setattr(H, "train_together", lambda members, *a, **k: trained.append(len(members)) or real(members, *a, **k))
    tuner = make_tuner(hypermodel, cfg, tmp_path / name, "tuner", TrialSettings(epochs=6, seed=3, tensorboard=False))
    tuner.search(verbose=0)
    monkeypatch.undo()
    keras.backend.clear_session()
    return trials_table(tuner), trained


def test_a_search_that_trains_its_trials_together_writes_the_trials_it_writes_one_by_one(tmp_path, monkeypatch):
    together, groups = _search(tmp_path, "together", monkeypatch, ahead=True)
    alone, singles = _search(tmp_path, "alone", monkeypatch, ahead=False)
    assert set(singles) == {1} and len(singles) == 8
    assert max(groups) > 1 and sum(groups) == 8  # every trial trained once, some of them together
    columns = ["trial", "status", "pooling", "dense_layers", "learning_rate", "val_auc", "val_loss", "best_epoch",
               "epochs_run"]
    assert together[columns].equals(alone[columns])
    assert (together["status"] == "completed").all()
    # each trial's seconds are its share of the time, not the whole group's
    assert together["seconds"].sum() < 2 * alone["seconds"].sum() + 1.0
