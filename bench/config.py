"""Search settings shared by the CLI, run.json and the search (no TensorFlow import)."""

from __future__ import annotations

from dataclasses import dataclass, fields

#: Validation objectives and their direction.
OBJECTIVES = {"val_auc": "max", "val_f1": "max", "val_accuracy": "max", "val_loss": "min"}
#: KerasTuner search algorithms ``--tuner`` accepts (bench.search maps them to classes).
TUNER_NAMES = ("bayesian", "random", "hyperband")


@dataclass
class SearchConfig:
    """How each backbone is searched; every field is also a ``bench run`` option."""

    tuner: str = "bayesian"
    max_trials: int = 10
    epochs: int = 10
    objective: str = "val_auc"
    batch_size: int = 32
    augment: bool = False
    aug_views: int = 4
    max_unfreeze: int = 2
    patience: int = 5
    class_weights: bool = True
    seed: int = 0
    tensorboard: bool = True

    def search_config(self) -> "SearchConfig":
        """Just the search settings (drops the fields a subclass adds)."""
        return SearchConfig(**{f.name: getattr(self, f.name) for f in fields(SearchConfig)})
