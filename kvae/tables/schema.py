"""The schema of a table: each column's kind, levels and standardisation constants.

A :class:`TableSchema` is inert data (frozen dataclasses, JSON round trip): inferred once
from the training table, written into the run (``schema.json``) and inside the likelihood
head's config, and used again by every later command, so new rows are read the same way.

Kinds, and the number each cell becomes in a table example (float32, NaN where missing):

- ``continuous``: ``(value - mean) / std`` (a Gaussian column);
- ``count``: the non-negative integer itself (a Poisson column);
- ``binary``: 0 or 1, the index of its level (a Bernoulli column);
- ``categorical``: 0 .. K-1, the index of its level (a Categorical column).

Inference: text -> categorical (binary with two levels); numbers with two distinct values
-> binary; integers with at most ``max_levels`` distinct values -> categorical; other
non-negative integers -> count; anything else -> continuous. An override (a schema file or
``kinds={"column": "kind"}``) sets a column's kind, and optionally its levels.
"""

import dataclasses
import math

import numpy as np

from kvae.errors import DataError

KINDS = ("continuous", "count", "binary", "categorical")
FORMAT = "kvae-table-schema/1"
MAX_LEVELS = 10  # integer columns with at most this many values are read as categorical


@dataclasses.dataclass(frozen=True)
class Column:
    """One column: ``kind`` (one of :data:`KINDS`), ``levels`` (binary and categorical:
    the values as text, in code order), ``mean`` and ``std`` (continuous)."""

    name: str
    kind: str
    levels: tuple = ()
    mean: float = 0.0
    std: float = 1.0

    @property
    def num_params(self):
        """How many numbers p(x_j|z) needs: K logits for a categorical, else 1."""
        return len(self.levels) if self.kind == "categorical" else 1

    def to_dict(self):
        out = {"name": self.name, "kind": self.kind}
        if self.levels:
            out["levels"] = list(self.levels)
        if self.kind == "continuous":
            out.update(mean=self.mean, std=self.std)
        return out


@dataclasses.dataclass(frozen=True)
class TableSchema:
    """The columns of a table, in the file's order."""

    columns: tuple

    @property
    def names(self):
        return [c.name for c in self.columns]

    @property
    def kinds(self):
        return [c.kind for c in self.columns]

    def __len__(self):
        return len(self.columns)

    def to_dict(self):
        return {"format": FORMAT, "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data):
        if isinstance(data, TableSchema):
            return data
        try:
            columns = tuple(
                Column(
                    name=str(c["name"]),
                    kind=_kind(c["kind"], c["name"]),
                    levels=tuple(str(v) for v in c.get("levels", ())),
                    mean=float(c.get("mean", 0.0)),
                    std=float(c.get("std", 1.0)),
                )
                for c in data["columns"]
            )
        except (KeyError, TypeError) as err:
            raise DataError(
                "Expected a table schema {'columns': [{'name': ..., 'kind': ...}, ...]}. "
                f"Received: {str(data)[:200]} ({type(err).__name__}: {err})."
            ) from None
        return cls(columns)


def _kind(kind, column, where=""):
    if kind not in KINDS:
        raise DataError(
            f"Expected the kind of column {column!r}{where} to be one of {list(KINDS)}. "
            f"Received: {kind!r}."
        )
    return kind


def canonical(text):
    """A cell's text as a level: numbers written one way ("1", "1.0" and " 1" are "1")."""
    text = str(text).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return repr(number)


def _numbers(values):
    """float64 of each text cell (NaN where it is not a number)."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except ValueError:
            pass
    return out


def _sorted_levels(values):
    levels = sorted({canonical(v) for v in values})
    numbers = _numbers(levels)
    if not np.isnan(numbers).any():
        levels = [lv for _, lv in sorted(zip(numbers, levels, strict=True))]
    return tuple(levels)


def infer(cells, source="the table", overrides=None, max_levels=MAX_LEVELS):
    """The :class:`TableSchema` of ``cells`` ({column: list of text or None}, in order).

    ``overrides``: {column: kind, or {"kind": ..., "levels": [...]}}; a column it names
    must exist. Raises DataError (naming ``source``, the column and the row) for a column
    that is all missing, text in a column of numbers, or an unknown override."""
    overrides = dict(overrides or {})
    unknown = [name for name in overrides if name not in cells]
    if unknown:
        raise DataError(
            f"Expected the schema to name columns of {source}. Received: {unknown[0]!r}, which "
            f"is not a column (the columns are {list(cells)})."
        )
    columns = []
    for name, values in cells.items():
        spec = overrides.get(name)
        spec = {"kind": spec} if isinstance(spec, str) else dict(spec or {})
        kind = _kind(spec["kind"], name, " in the schema") if "kind" in spec else None
        columns.append(_infer_column(name, values, kind, spec.get("levels"), source, max_levels))
    return TableSchema(tuple(columns))


def _infer_column(name, values, kind, levels, source, max_levels):
    present = [(i, v) for i, v in enumerate(values) if v is not None]
    if not present:
        raise DataError(
            f"Expected at least one value in column {name!r} of {source}. Received: a column "
            "that is missing in every row. Drop the column or fill some of it."
        )
    rows, texts = zip(*present, strict=True)
    numbers = _numbers(texts)
    is_text = np.isnan(numbers)
    if kind is None:
        if is_text.all() or is_text.mean() > 0.5:
            kind = "binary" if len({canonical(t) for t in texts}) == 2 else "categorical"
        elif is_text.any():
            _text_in_numbers(name, rows, texts, is_text, source)
        else:
            kind = _numeric_kind(numbers, max_levels)
    if kind in ("binary", "categorical"):
        found = _sorted_levels(texts)
        levels = tuple(canonical(v) for v in levels) if levels else found
        if kind == "binary" and len(levels) != 2:
            raise DataError(
                f"Expected two levels in binary column {name!r} of {source}. Received: "
                f"{len(levels)}: {list(levels)[:10]}. Declare it categorical."
            )
        return Column(name, kind, levels=levels)
    if is_text.any():
        _text_in_numbers(name, rows, texts, is_text, source)
    if kind == "count":
        _check_counts(name, rows, numbers, source)
        return Column(name, kind)
    std = float(np.std(numbers))
    return Column(name, kind, mean=float(np.mean(numbers)), std=std if std > 0 else 1.0)


def _numeric_kind(numbers, max_levels):
    distinct = np.unique(numbers)
    if len(distinct) == 2:
        return "binary"
    if np.all(distinct == np.round(distinct)):
        if len(distinct) <= max_levels:
            return "categorical"
        if distinct[0] >= 0:
            return "count"
    return "continuous"


def _text_in_numbers(name, rows, texts, is_text, source):
    first = int(np.argmax(is_text))
    raise DataError(
        f"Expected numbers in column {name!r} of {source}. Received: {texts[first]!r} in row "
        f"{rows[first] + 1} (the first cell that is not a number). Fix the cell, make it "
        "empty (missing), or declare the column categorical in the schema."
    )


def _check_counts(name, rows, numbers, source):
    bad = (numbers < 0) | (numbers != np.round(numbers))
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"Expected non-negative whole numbers in count column {name!r} of {source}. "
            f"Received: {numbers[first]:g} in row {rows[first] + 1}."
        )


def encode(schema, cells, source="the table", unknown="error"):
    """The table as float32 [rows, columns] in the schema's coding, NaN where missing.

    ``cells``: {column: list of text or None}; it must have the schema's columns (others
    are refused). ``unknown="missing"`` reads a level the schema does not know as missing
    instead of raising DataError (named with its row)."""
    expected, received = schema.names, list(cells)
    missing = [n for n in expected if n not in cells]
    extra = [n for n in received if n not in expected]
    if missing or extra:
        raise DataError(
            f"Expected the columns the model was trained on, {expected}, in {source}. "
            f"Received: missing {missing}, unexpected {extra}."
        )
    n = len(next(iter(cells.values()))) if cells else 0
    out = np.full((n, len(schema)), np.nan, np.float32)
    for j, col in enumerate(schema.columns):
        out[:, j] = _encode_column(col, cells[col.name], source, unknown)
    return out


def _encode_column(col, values, source, unknown):
    present = [(i, v) for i, v in enumerate(values) if v is not None]
    out = np.full(len(values), np.nan)
    if not present:
        return out
    rows, texts = (list(t) for t in zip(*present, strict=True))
    if col.kind in ("binary", "categorical"):
        index = {lv: k for k, lv in enumerate(col.levels)}
        for i, t in zip(rows, texts, strict=True):
            code = index.get(canonical(t))
            if code is None and unknown != "missing":
                raise DataError(
                    f"Expected a level of column {col.name!r} that training saw "
                    f"({list(col.levels)[:20]}). Received: {t!r} in row {i + 1} of {source}. "
                    "Pass unknown='missing' (--unknown missing) to read unseen levels as missing."
                )
            out[i] = np.nan if code is None else code
        return out
    numbers = _numbers(texts)
    is_text = np.isnan(numbers)
    if is_text.any():
        _text_in_numbers(col.name, rows, texts, is_text, source)
    if col.kind == "count":
        _check_counts(col.name, rows, numbers, source)
    else:
        numbers = (numbers - col.mean) / col.std
    out[rows] = numbers
    return out


def decode(schema, x):
    """Coded values [rows, columns] back to cells {column: list} in the data's units:
    levels by name (text), counts as ints, continuous values unstandardised (floats). NaN
    stays missing (None)."""
    x = np.asarray(x, np.float64)
    cells = {}
    for j, col in enumerate(schema.columns):
        v = x[:, j]
        if col.kind in ("binary", "categorical"):
            k = np.clip(np.round(np.nan_to_num(v)), 0, len(col.levels) - 1).astype(int)
            cells[col.name] = [
                None if np.isnan(a) else col.levels[c] for a, c in zip(v, k, strict=True)
            ]
        elif col.kind == "count":
            cells[col.name] = [None if np.isnan(a) else int(round(a)) for a in v]
        else:
            cells[col.name] = [None if np.isnan(a) else float(a * col.std + col.mean) for a in v]
    return cells
