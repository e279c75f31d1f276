"""Matplotlib figures to PNG bytes: one at a time, or a report's all together in two processes.

A figure is drawn (its artists made) where the report builds it; rendering it to PNG
(Agg's rasterising and the PNG encoding) is most of its cost. Inside :func:`rendered_together`
:func:`as_figure` only notes each figure, and on the way out they are rendered: where the
platform has ``os.fork``, every other figure in a forked copy of the process, which sends
its PNG bytes back through a pipe, while this one renders the rest. The copy runs nothing
but matplotlib and exits without cleaning up (``os._exit``); if it fails, this process
renders its figures too. The bytes are the same either way.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
from collections.abc import Iterator

#: Resolution of the saved PNGs. Figures are sized in inches for a ~900 px column.
DPI = 130

#: inside rendered_together: (Figure, (matplotlib figure, the rcParams it was drawn under)) to render
_pending: list | None = None


def png(fig) -> bytes:
    """PNG bytes of ``fig`` (no timestamp or software tag, so rebuilding gives the same file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def as_figure(key: str, fig, title: str, caption: str):
    """A drawn matplotlib figure as the report's :class:`~bench.report.formatting.Figure`
    (PNG bytes and size), then cleared; None stays None (a figure with nothing to show).
    Inside :func:`rendered_together` its bytes come when the block ends."""
    from bench.report.formatting import Figure

    if fig is None:
        return None
    w, h = fig.get_size_inches()
    if _pending is not None:
        import matplotlib

        made = Figure(key, title, caption, b"", float(w), float(h))
        _pending.append((made, (fig, dict(matplotlib.rcParams))))  # rendered in the style it was drawn in
        return made
    made = Figure(key, title, caption, png(fig), float(w), float(h))
    fig.clear()
    return made


@contextlib.contextmanager
def rendered_together() -> Iterator[None]:
    """Figures made by :func:`as_figure` inside the block get their PNG bytes as it ends,
    rendered by :func:`render_all`."""
    global _pending
    outer, _pending = _pending, []
    try:
        yield
        pending = _pending
    finally:
        _pending = outer
    for (made, (fig, _)), data in zip(pending, render_all([styled for _, styled in pending])):
        made.data = data
        fig.clear()


def _png_styled(styled: tuple) -> bytes:
    """:func:`png` of a ``(figure, rcParams)`` pair, under the settings it was drawn with
    (tick locators and text read some of them when the figure is rendered)."""
    import matplotlib

    fig, rc = styled
    with matplotlib.rc_context(rc):
        return png(fig)


def render_all(figs: list) -> list[bytes]:
    """PNG bytes of every ``(figure, rcParams)`` of ``figs``, every other one in a forked
    process where the platform can fork (see the module docstring)."""
    if len(figs) < 2 or not hasattr(os, "fork"):
        return [_png_styled(f) for f in figs]
    theirs_figs = figs[1::2]
    read, write = os.pipe()
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns of forking a threaded process; the copy only draws
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return [_png_styled(f) for f in figs]
    if pid == 0:  # the copy: render, send, leave at once
        status = 1
        try:
            os.close(read)
            with os.fdopen(write, "wb") as out:
                out.write(pickle.dumps([_png_styled(f) for f in theirs_figs]))
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    mine = [_png_styled(f) for f in figs[0::2]]
    with os.fdopen(read, "rb") as answer:
        sent = answer.read()
    _, status = os.waitpid(pid, 0)
    try:
        theirs = pickle.loads(sent) if status == 0 else None
    except (pickle.UnpicklingError, EOFError, ValueError):
        theirs = None
    if not isinstance(theirs, list) or len(theirs) != len(theirs_figs):
        theirs = [_png_styled(f) for f in theirs_figs]
    out = [None] * len(figs)
    out[0::2], out[1::2] = mine, theirs
    return out
