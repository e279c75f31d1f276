"""What a run records about where it ran: library versions and the machine."""

from __future__ import annotations

import os
import platform
from importlib import metadata

VERSIONED_PACKAGES = (
    "bench", "tensorflow", "keras", "keras-tuner", "numpy", "pandas", "scikit-learn",
    "scipy", "pillow", "imagehash", "seaborn", "matplotlib", "typer",
)


def library_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def machine_info() -> dict[str, str | int]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count() or 0,
    }
