"""Reading tables: CSV (pandas) and Parquet (pandas with pyarrow), or a DataFrame in
memory, as text cells {column: [text or None]} in the file's column order.

Missing: empty cells, NaN and pandas' usual "NA" spellings ("NA", "N/A", "n/a", "NaN",
"nan", "null", "NULL", "None", "#N/A", "<NA>", ...) become None, kept as missing (never
filled). pandas and pyarrow are the ``tables`` extra: ``pip install kvae[tables]``.
"""

import os

from kvae.errors import ConfigError, DataError

SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def is_table_path(value):
    """True for a path (str or PathLike) whose suffix is a table's."""
    return isinstance(value, (str, os.PathLike)) and os.fspath(value).lower().endswith(SUFFIXES)


def pandas():
    """The pandas module, or ConfigError saying how to install it."""
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError(
            "Expected pandas for tables (CSV and Parquet files). Received: pandas is not "
            'installed. Install kvae with its tables extra: pip install "kvae[tables]".'
        ) from None
    return pd


def read_cells(table):
    """``(cells, source)``: {column: list of text or None} and a name for messages.

    ``table``: a path to a .csv/.tsv/.parquet file, or a pandas DataFrame. Raises
    DataError for a file with no rows or no columns, or with repeated column names."""
    pd = pandas()
    if isinstance(table, pd.DataFrame):
        frame, source = table, "the DataFrame"
    elif is_table_path(table):
        path = os.fspath(table)
        source = repr(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(2, "No such table file", path)
        frame = _read_file(pd, path)
    else:
        raise DataError(
            "Expected a table: a path ending in .csv, .tsv or .parquet, or a pandas DataFrame. "
            f"Received: {table!r:.100}."
        )
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise DataError(f"Expected distinct column names in {source}. Received: {names}.")
    if len(frame) == 0 or not names:
        raise DataError(
            f"Expected at least one row and one column in {source}. Received: "
            f"{len(frame)} rows and {len(names)} columns."
        )
    cells = {}
    for name, column in zip(names, frame.columns, strict=True):
        values = frame[column].tolist()
        cells[name] = [None if _missing(pd, v) else str(v) for v in values]
    return cells, source


def _read_file(pd, path):
    try:
        if path.lower().endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        sep = "\t" if path.lower().endswith(".tsv") else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=True, skipinitialspace=True)
    except ImportError as err:
        raise ConfigError(
            f"Expected pyarrow to read the Parquet file {path!r}. Received: {err}. Install "
            'kvae with its tables extra: pip install "kvae[tables]".'
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(
            f"Expected a header and rows in {path!r}. Received: an empty file."
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"Expected a readable table in {path!r}. Received: {err}") from None


def _missing(pd, value):
    if value is None:
        return True
    try:
        return bool(pd.isna(value)) or (isinstance(value, str) and not value.strip())
    except (TypeError, ValueError):
        return False


def frame(cells):
    """Cells {column: list} as a pandas DataFrame (None as missing), columns in order."""
    return pandas().DataFrame(cells)
