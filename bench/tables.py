"""The CSV tables bench writes and reads back (predictions, trials, leaderboards, groups) as
pandas frames whose file and class names may not be valid UTF-8.

Every CSV bench writes goes through :func:`write_csv` (or :func:`rows_csv_text`), which
keeps a spreadsheet from running a text cell as a formula, as OWASP advises for CSV
injection: a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
gets a leading ``'`` (a file named ``=HYPERLINK(...).png`` is shown as text). Numbers are
written as they are (``-0.5`` stays a number); a text cell that is a number as written
(``-3``) is left too, since a spreadsheet reads it as that number and runs nothing. A text
cell starting with ``'`` followed by one of those characters or another ``'`` gets one
more ``'``, so :func:`unquote_cell` (used by every reader of bench's CSVs) gives back
exactly the text written.
"""

from __future__ import annotations

import re
from pathlib import Path

#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def quote_cell(value):
    """``value`` as written to a CSV cell: text a spreadsheet would run gets a leading ``'``."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    if value[0] == "'" and value[1:2] and value[1:2] in (*FORMULA_START, "'"):
        return "'" + value
    return value


def unquote_cell(value):
    """The text :func:`quote_cell` was given, from the cell it wrote."""
    if isinstance(value, str) and value[:1] == "'" and value[1:2] and value[1:2] in (*FORMULA_START, "'"):
        return value[1:]
    return value


def csv_text(frame) -> str:
    """``frame`` as CSV text (no index), text cells quoted with :func:`quote_cell`."""
    import pandas as pd

    out = frame.copy()
    for i in range(out.shape[1]):
        column = out.iloc[:, i]
        if column.dtype == object or pd.api.types.is_string_dtype(column):
            # a list, not Series.map: pandas would infer a string dtype that refuses names
            # that are not valid UTF-8 (surrogate escapes)
            out.isetitem(i, pd.Series([quote_cell(v) for v in column], index=column.index, dtype=object))
    return out.to_csv(index=False)


def rows_csv_text(rows) -> str:
    """Rows (lists of cells, header first) as CSV text, text cells quoted with :func:`quote_cell`."""
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([quote_cell(c) for c in row] for row in rows)
    return buffer.getvalue()


def write_csv(path: Path, frame) -> None:
    """Write ``frame`` to ``path`` as :func:`csv_text`, atomically (file names that are not
    UTF-8 as their own bytes)."""
    from bench.atomic import write_text_atomic

    write_text_atomic(Path(path), csv_text(frame))


#: Text columns of the per-image CSVs bench writes (test/val predictions).
PREDICTION_TEXT_COLUMNS = ("file", "label", "prediction")
#: Text columns of oof_predictions.csv.
OOF_TEXT_COLUMNS = (*PREDICTION_TEXT_COLUMNS, "group")
#: Text columns of trials.csv.
TRIALS_TEXT_COLUMNS = ("trial", "message")


def text_frame(columns: dict):
    """A DataFrame whose column names and text values may hold file or class names that
    are not valid UTF-8.

    pandas' default string dtype (pyarrow) refuses the surrogates that stand for such
    bytes; here names and text columns are plain Python objects, and bench's CSV writers
    encode them back to the original bytes (surrogateescape).
    """
    import pandas as pd

    values = {}
    for i, column in enumerate(columns.values()):
        column = list(column)
        text = any(isinstance(v, (str, list, dict)) for v in column)
        values[i] = pd.Series(column, dtype=object) if text else pd.Series(column)
    frame = pd.DataFrame(values)
    frame.columns = pd.Index(list(columns), dtype=object)
    return frame


def probability_matrix(table, classes) -> "object":
    """(N, n_classes) float array from a prediction table's ``prob_<class>`` columns.

    Column by column: selecting a list of names would build a pandas string index,
    which refuses class names that are not valid UTF-8.
    """
    import numpy as np

    return np.column_stack([np.asarray(table[f"prob_{c}"], dtype=np.float64) for c in classes])


def records_frame(rows: list[dict]):
    """:func:`text_frame` from records (one dict per row; missing keys become NaN)."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    return text_frame({name: [row.get(name, float("nan")) for row in rows] for name in names})


def read_table(path: Path, text_columns=PREDICTION_TEXT_COLUMNS):
    """Read a CSV bench wrote; names that are not valid UTF-8 come back unchanged.

    Columns in ``text_columns`` stay text; the others become numbers or booleans where
    every value parses (as ``pandas.read_csv`` would do).
    """
    import pandas as pd

    raw = pd.read_csv(path, header=None, dtype=object, encoding="utf-8", encoding_errors="surrogateescape")
    if raw.empty:
        return pd.DataFrame()
    names = list(raw.iloc[0])
    body = raw.iloc[1:].reset_index(drop=True)
    # column by column into object columns: DataFrame.map would infer a string dtype that
    # refuses names that are not valid UTF-8 (surrogate escapes)
    body = pd.DataFrame({c: pd.Series([unquote_cell(v) for v in body[c]], dtype=object) for c in body.columns})
    columns = {}
    for i, name in enumerate(names):
        column = body[i]
        if name not in text_columns:
            present = column.dropna()
            if len(present) and present.isin(["True", "False"]).all():
                column = column.map({"True": True, "False": False})
            else:
                try:
                    column = pd.to_numeric(column)
                except (ValueError, TypeError):
                    pass
        columns[name] = column
    return text_frame(columns)
