"""The naive baseline of ``search_speed.py``: bench's trials without the feature cache.

A :class:`NaiveHyperModel` has bench's search space, head and two-phase fit (inherited from
:class:`bench.search.hypermodel.BenchHyperModel`), but its model takes images::

    image -> BackbonePreprocess -> backbone (BatchNorm in inference mode) -> head

so the backbone's forward pass runs in every epoch. Trained by bench's own loop
(:func:`bench.search.trainer.train`) inside bench's own trial loop (a tuner from
:func:`bench.search.tuner.make_tuner`), so its timings land in ``bench_trial.json`` exactly
as a cached trial's do.
"""

from __future__ import annotations

import keras
import numpy as np

from bench.evaluate.final import set_trainable
from bench.layers import BackbonePreprocess
from bench.search.hypermodel import BenchHyperModel
from bench.search.trainer import train


class NaiveHyperModel(BenchHyperModel):
    """``cached``'s search space on raw images; ``source`` is the run's
    :class:`bench.search.source.BackboneSource` (the exact backbone weights of the run).

    Unfreeze depth N > 0 trains as bench does: phase 1 the head alone (here: the whole
    backbone frozen), phase 2 the top N blocks and the head at a tenth of the learning rate.
    """

    def __init__(self, cached: BenchHyperModel, source, images_train: np.ndarray, images_val: np.ndarray):
        super().__init__(cached.depths, cached.feature_shapes, cached.data, cached.top_factory)
        self.source, self.images_train, self.images_val = source, images_train, images_val
        self._model = self._base = None

    def build(self, hp) -> keras.Model:
        # bench's build declares every hyperparameter and creates the head first, so with the
        # same trial seed the head starts from the same weights as the cached trial's head.
        cached = super().build(hp)
        if cached is None:  # the tuner discovering the search space: declarations only
            return None
        depth = hp.get("unfreeze")
        head = cached if depth == 0 else cached.get_layer("head")
        base = self.source.base()  # original weights restored, whatever an earlier trial tuned
        set_trainable(base, None)
        size = self.source.image_size
        inputs = keras.Input((size, size, 3), name="image")
        x = BackbonePreprocess(self.source.record.preprocessing, name="preprocess")(inputs)
        self._model = keras.Model(inputs, head(base(x, training=False)), name=f"naive_depth{depth}")
        self._base = base
        return self._model

    def fit_rows(self, hp, **kwargs):
        """Never: the naive model trains on images, with its backbone inside (``fit``)."""
        return None

    def _train(self, model, depth, pooling, lr, epochs, initial_epoch, seed):
        # BenchHyperModel.fit hands over the head alone for phase 1 (on cached features) and
        # the whole model for phase 2; here both phases train the image model, with the
        # backbone frozen below the cut of ``depth`` (all of it at depth 0).
        set_trainable(self._base, self.source.record.cut_layer(depth) if depth else None)
        d = self.data
        return train(
            self._model, self.images_train, d.y_train, self.images_val, d.y_val, n_classes=d.n_classes,
            learning_rate=lr, epochs=epochs, batch_size=d.batch_size, class_weight=d.class_weight,
            objective=d.objective, patience=d.patience, seed=seed, initial_epoch=initial_epoch,
        )

    def release(self) -> None:
        """Drop the last model (the backbone stays cached in ``source``)."""
        self._model = self._base = None
