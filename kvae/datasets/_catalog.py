"""Data sets by name or path (private; the public face is kvae.datasets.load / names).

Names are the ``datasets`` group of :mod:`kvae.registry` (entry points ``kvae.datasets``,
kvae's own "mnist" and "digits" among them, plus in-process registrations). A loader is
called with the keyword arguments given to :func:`load` and must return ``((x_train,
y_train), (x_test, y_test))``.
"""

import difflib
import os

import numpy as np

from kvae import registry
from kvae.errors import ConfigError, DataError, PluginError, UnknownComponentError

GROUP = "datasets"


def names():
    """Sorted names of the registered data sets (for :func:`load`)."""
    return sorted(registry.names(GROUP))


def _unknown(name, known, cause=None):
    by_lower = {k.lower(): k for k in known}
    wanted = str(name).lower()
    close = difflib.get_close_matches(wanted, by_lower, n=1) or difflib.get_close_matches(
        wanted.rpartition(":")[2], by_lower, n=1
    )
    close = [by_lower[c] for c in close]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    err = UnknownComponentError(
        f"Expected a registered data set name (one of {known}) or a path to an .npz file. "
        f"Received: name_or_path={name!r}, which is neither.{hint} Register a data set through "
        f"the 'kvae.{GROUP}' entry-point group, or pass an existing .npz path."
    )
    err.__cause__ = cause
    return err


def _loader(name):
    try:
        return registry.get(GROUP, name)
    except UnknownComponentError as err:
        raise _unknown(name, names(), err) from err
    except ConfigError as err:
        known = names()
        if any(k.endswith(":" + name) for k in known):
            raise  # ambiguous: the registry's message says which qualified name to write
        raise _unknown(name, known, err) from err  # not a valid name, e.g. "MNIST"


def _looks_like_path(value):
    if not isinstance(value, str):
        return True  # os.PathLike
    return value.endswith(".npz") or os.sep in value or (os.altsep or os.sep) in value


def load(name_or_path, **kwargs):
    """Load a data set as ``((x_train, y_train), (x_test, y_test))``.

    Args:
        name_or_path: a registered name (see :func:`names`; "mnist" and "digits" ship with
            kvae) or a path to an ``.npz`` file (see :func:`kvae.datasets.load_npz`).
            A string ending in ``.npz`` or holding a path separator is a path.
        **kwargs: passed to the data set's loader (or to ``load_npz``).

    Returns:
        x arrays are float32 of shape (n, H, W, C) (or (n, D) for flat data); y arrays int64,
        or None when the data set has no labels.
    """
    from kvae.datasets.npz import load_npz

    if not isinstance(name_or_path, (str, os.PathLike)):
        raise DataError(
            "Expected a data set name or a path to an .npz file. "
            f"Received: name_or_path={name_or_path!r} of type {type(name_or_path).__name__}."
        )
    from kvae.tables.read import is_table_path

    if is_table_path(name_or_path):  # a CSV, TSV or Parquet table: kvae.tables reads it
        from kvae.tables import load_split

        return load_split(name_or_path, **kwargs)[0]
    if _looks_like_path(name_or_path):
        return load_npz(name_or_path, **kwargs)
    try:
        loader = _loader(name_or_path)
    except UnknownComponentError:
        if os.path.isfile(name_or_path):  # a file without .npz suffix in the working folder
            return load_npz(name_or_path, **kwargs)
        raise
    return _check_result(name_or_path, loader(**kwargs))


def _check_result(name, result):
    try:
        (x_train, y_train), (x_test, y_test) = result
    except (TypeError, ValueError):
        raise PluginError(
            f"Expected the loader of data set {name!r} to return ((x_train, y_train), "
            f"(x_test, y_test)). Received: {type(result).__name__}."
        ) from None
    for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if not isinstance(x, np.ndarray) or x.ndim < 2:
            raise PluginError(
                f"Expected x_{part} of data set {name!r} as a numpy array of shape (n, ...). "
                f"Received: {type(x).__name__} {getattr(x, 'shape', '')}."
            )
        if y is not None and len(y) != len(x):
            raise PluginError(
                f"Expected one label per example in the {part} split of data set {name!r}. "
                f"Received: {len(x)} examples and {len(y)} labels."
            )
    return result
