"""Data checked against a model before any step runs: the shape of one example, real and
finite values, the likelihood's range (``model.likelihood_head.check_data``), and a
conditional model's ``y``. Duck-typed: the model gives ``data_shape``, ``likelihood_head``
and ``condition``.

NaN marks a missing value, allowed only when the model's likelihood head declares
``handles_missing = True`` (it leaves missing entries out of ``log_prob``, as kvae.tables'
mixed head does) and its encoder does too (it reads the mask); infinities never."""

import numpy as np
import tensorflow as tf

from kvae.errors import DataError
from kvae.training.arrays import is_array

__all__ = ["check_condition", "check_data", "handles_missing"]


def check_data(model, x, name="x"):
    """Raise DataError unless ``x`` fits ``model``: shape, finite, the likelihood's range.

    Arrays are checked whole; for a ``tf.data.Dataset`` the element shape is checked and
    the values of its first batch."""
    if x is None:
        raise DataError(
            f"Expected {name} to be data of shape (n, *{model.data_shape}). Received: None."
        )
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        _check_shape(model, tuple(spec.shape), name)
        for element in x.take(1):
            batch = element[0] if isinstance(element, tuple) else element
            _check_values(model, np.asarray(batch), name)
        return
    if isinstance(x, (tuple, list, dict)) or not hasattr(x, "shape"):
        return  # Keras handles the other input types (generators, PyDataset) itself.
    arr = np.asarray(x)
    _check_shape(model, arr.shape, name)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(
            f"Expected real numbers (an integer or floating dtype) in {name}. "
            f"Received: dtype={arr.dtype}."
        )
    _check_values(model, arr, name)


def check_condition(model, x, y):
    """A conditional model's ``y`` must match ``x`` (before any work); an unconditional
    model takes no ``y`` but ``x`` itself (``fit(x, x)``, the autoencoder habit)."""
    if model.condition is None:
        if y is not None and y is not x:
            what = f"shape={tuple(y.shape)}" if hasattr(y, "shape") else type(y).__name__
            raise DataError(
                "Expected no `y` for an unconditional VAE (it reconstructs x; labels would "
                f"be ignored). Received: y with {what}. Drop y, or make the model "
                "conditional on it: kvae.VAE(condition=num_classes) for class labels, "
                "condition={'dim': D} for vectors."
            )
        return
    if is_array(x):
        model.condition.check(None if y is None else np.asarray(y), int(x.shape[0]))


def _check_shape(model, shape, name):
    data_shape = model.data_shape
    if tuple(shape[1:]) != data_shape:
        hint = ""
        if None not in shape and int(np.prod(shape[1:])) == int(np.prod(data_shape)):
            hint = f" Reshape it with x.reshape(-1, {', '.join(map(str, data_shape))})."
        raise DataError(
            f"Expected {name} of shape (n, {', '.join(map(str, data_shape))}), the "
            f"model's data_shape. Received: {name}.shape={tuple(shape)}.{hint}"
        )


def _check_values(model, arr, name):
    if arr.size == 0:
        raise DataError(f"Expected at least one example in {name}. Received: {arr.shape}.")
    finite = np.isfinite(arr)
    if handles_missing(model):
        finite |= np.isnan(arr)
    if not np.all(finite):
        bad = int(np.size(arr) - np.count_nonzero(finite))
        raise DataError(
            f"Expected finite values in {name}. Received: {bad} NaN or infinite values. "
            f"Clean or impute the data before training, or, for a table with missing "
            f"values, use kvae.tables (a likelihood that handles missing values)."
        )
    model.likelihood_head.check_data(arr, name)


def handles_missing(model):
    """True when both the likelihood head and the encoder declare they handle NaN (missing
    values: the encoder reads the mask, the head leaves them out of ``log_prob``)."""
    return all(
        getattr(part, "handles_missing", False) is True
        for part in (model.likelihood_head, model.encoder)
    )
