"""The CSV tables bench writes and reads back (predictions, trials, leaderboards) as
pandas frames whose file and class names may not be valid UTF-8."""

from __future__ import annotations

from pathlib import Path


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
