"""Tables in and out: a file (or DataFrame) -> coded float32 arrays and its schema; filled
tables and scores written back as CSV, atomically (nothing is ever written half)."""

import json
import os

import numpy as np

from kvae import _files
from kvae.errors import DataError
from kvae.tables import read
from kvae.tables import schema as schemas

SCHEMA_FILE = "schema.json"


def read_table(table, schema=None, *, kinds=None, unknown="error"):
    """``(x, schema)``: the table as float32 [rows, columns] in the schema's coding (NaN
    where missing) and its :class:`~kvae.tables.TableSchema`.

    Args:
        table: a .csv, .tsv or .parquet path, or a pandas DataFrame.
        schema: None (infer it from this table), a TableSchema (a trained model's: new rows
            are read the same way), or a path to a schema file (JSON or YAML) whose
            ``columns`` map names to kinds (or to ``{"kind": ..., "levels": [...]}``)
            for the inference to follow.
        kinds: {column: kind} overrides, as in a schema file.
        unknown: with a given TableSchema, ``"error"`` (DataError naming the row) or
            ``"missing"`` for a level that training never saw.
    """
    if unknown not in ("error", "missing"):
        raise DataError(f"Expected unknown='error' or 'missing'. Received: unknown={unknown!r}.")
    cells, source = read.read_cells(table)
    if isinstance(schema, schemas.TableSchema):
        return schemas.encode(schema, cells, source, unknown), schema
    overrides = dict(load_overrides(schema) if schema is not None else {})
    overrides.update(kinds or {})
    resolved = schemas.infer(cells, source, overrides)
    return schemas.encode(resolved, cells, source), resolved


def load_overrides(path):
    """The {column: kind or {kind, levels}} of a schema file (JSON, or YAML by suffix)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            if path.lower().endswith((".yaml", ".yml")):
                import yaml

                data = yaml.safe_load(f)
            else:
                data = json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(f"Expected a readable schema file {path!r}. Received: {err}") from None
    columns = data.get("columns") if isinstance(data, dict) else None
    if isinstance(columns, list):  # a resolved schema (schema.json of a run)
        columns = {c.get("name"): {k: v for k, v in c.items() if k != "name"} for c in columns}
    if not isinstance(columns, dict):
        raise DataError(
            f"Expected the schema file {path!r} to hold {{'columns': {{name: kind, ...}}}}. "
            f"Received: {str(data)[:200]}."
        )
    return {str(k): v for k, v in columns.items()}


def save_schema(schema, run_dir):
    """Write ``schema`` into a run directory as schema.json (atomically)."""
    _files.write_json(os.path.join(os.fspath(run_dir), SCHEMA_FILE), schema.to_dict())


def load_schema(run_dir):
    """The TableSchema a run wrote (FileNotFoundError if it has none)."""
    return schemas.TableSchema.from_dict(
        _files.read_json(os.path.join(os.fspath(run_dir), SCHEMA_FILE))
    )


def to_frame(schema, x):
    """Coded values [rows, columns] -> a DataFrame in the data's units, the schema's column
    order and names; levels by name, counts as integers, missing as empty."""
    pd = read.pandas()
    cells = schemas.decode(schema, x)
    frame = pd.DataFrame(cells, columns=schema.names)
    for col in schema.columns:
        if col.kind == "count":
            frame[col.name] = frame[col.name].astype("Int64")
    return frame


def filled_frame(schema, cells, filled):
    """The table ``cells`` (as read: text) with its missing cells replaced by the coded
    values ``filled`` [rows, columns] in the data's units: observed cells stay exactly as
    they were written, in the schema's column order."""
    pd = read.pandas()
    decoded = schemas.decode(schema, filled)
    out = {}
    for name in schema.names:
        out[name] = [d if c is None else c for c, d in zip(cells[name], decoded[name], strict=True)]
    return pd.DataFrame(out, columns=schema.names)


def read_with_schema(table, schema, unknown="error"):
    """``(x, cells)``: a table read with a trained model's ``schema`` (its coded rows, NaN
    where missing, and its text cells)."""
    cells, source = read.read_cells(table)
    return schemas.encode(schema, cells, source, unknown), cells


def write_csv(frame, path):
    """A DataFrame as CSV at ``path``, atomically (a temporary file, then renamed)."""
    _files.check_writable(path, what="table")
    with _files.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def split_rows(x, fraction, seed):
    """(train, test): a random ``fraction`` of the rows held out (at least one each)."""
    n = len(x)
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, int(round(n * fraction))), n - 1) if n > 1 else 0
    return x[order[n_test:]], x[order[:n_test]]
