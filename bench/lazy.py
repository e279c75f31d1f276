"""Lazy re-exports for the stage sub-packages.

``from bench.search import make_tuner`` should not import TensorFlow when a user only
runs ``bench scan``; a sub-package's ``__init__`` therefore names what it re-exports and
from which module, and the module is imported on first access (PEP 562).
"""

from __future__ import annotations

import importlib
import sys


def reexport(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__, __all__)`` for ``package`` re-exporting ``names`` (name -> module)."""

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(names) | set(vars(sys.modules[package])))

    return __getattr__, __dir__, sorted(names)
