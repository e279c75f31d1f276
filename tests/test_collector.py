"""Built backbones kept out of the garbage collector under --cv (bench.collector)."""

from __future__ import annotations

import gc
import weakref

from bench.collector import KeptBackbones


class Node:
    pass


def test_what_is_kept_skips_collections_and_is_collected_once_released():
    """A backbone dropped in a reference cycle while frozen is not walked by the folds'
    collections, and its memory comes back when the run releases what it kept."""
    node = Node()
    node.cycle = node  # Keras layers and models reference each other like this
    alive = weakref.ref(node)
    kept = KeptBackbones()
    kept.keep()
    del node
    gc.collect()
    assert alive() is not None  # frozen: a fold's full collection does not walk it
    kept.release()
    assert alive() is None  # released: collected
    assert gc.get_freeze_count() > 0  # what lives on (imported modules) is frozen again
    after = Node()
    after.cycle = after
    gone = weakref.ref(after)
    del after
    gc.collect()
    assert gone() is None  # garbage made after a release is collected as usual
