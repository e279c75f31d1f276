"""What every command shares on the terminal: the stderr console, TensorFlow imported
without its start-up chatter, and a scan with its progress shown."""

from __future__ import annotations

import os
import sys

from rich.console import Console

#: The console progress and messages go to (stderr: stdout carries results).
console = Console(stderr=True)


def quiet_tensorflow() -> None:
    """Import TensorFlow and initialise its devices with C++ start-up chatter hidden.

    TensorFlow prints CUDA-probing lines on stderr before its log level applies; they
    alarm users on CPU machines. Python-level errors still surface as exceptions.
    """
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
            tf.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    freeze_imported()


def freeze_imported() -> None:
    """Leave what is in memory now (imported modules: TensorFlow's are 400,000 objects) out
    of every later garbage collection (``gc.freeze``): a full collection, which Keras'
    ``clear_session`` runs after every backbone and fold, then walks only what the command
    made since, not a quarter of a second of module objects that live as long as the process."""
    import gc

    gc.collect()  # nothing collectable is kept out
    gc.freeze()


def scan_with_progress(fn, *args, **kwargs):
    """``fn(*args, progress=..., **kwargs)`` (a scan) with its progress on :data:`console`."""
    from bench.progress import with_scan_progress

    return with_scan_progress(console, fn, *args, **kwargs)
