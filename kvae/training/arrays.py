"""Which data ``fit`` feeds itself: in-memory arrays, unless an option needs Keras' own
array handling; and ``validation_split`` done on arrays as Keras does it."""

import math

import numpy as np
import tensorflow as tf

from kvae.datasets.pipeline import binarize_static
from kvae.errors import ConfigError

__all__ = ["fast_path_ok", "is_array", "split_validation"]


def is_array(x):
    """A numpy array or a tensor with a batch axis."""
    return isinstance(x, (np.ndarray, tf.Tensor)) and len(x.shape) >= 1


def fast_path_ok(x, y, kwargs, conditional=False):
    """kvae feeds array data itself unless an option needs Keras' own array handling (a
    conditional VAE's ``y`` goes through kvae's pipeline with ``x``)."""
    if y is not None and y is not x and not conditional:
        return False
    if kwargs.get("class_weight") is not None:
        return False
    if kwargs.get("steps_per_epoch") is not None:
        return False
    weights = kwargs.get("sample_weight")
    return weights is None or (isinstance(weights, np.ndarray) and weights.shape == x.shape[:1])


def split_validation(x, y, kwargs, binarize=None):
    """``(x, y)`` of the training part after ``validation_split`` held out the last
    fraction of the arrays, as Keras does (before any shuffling; ``sample_weight`` split
    alike). The held-out part becomes ``kwargs["validation_data"]``, binarised once
    (``binarize_static``) when the training data are binarised, so the validation loss is
    measured on binary images too. Keras' rule: ``validation_data``, when given, wins."""
    fraction = kwargs.pop("validation_split")
    if kwargs.get("validation_data") is not None:
        return x, y
    n = int(x.shape[0])
    split_at = int(math.floor(n * (1.0 - float(fraction))))
    if not 0 < split_at < n:
        raise ConfigError(
            f"Expected `validation_split` to hold out between 1 and {n - 1} of the {n} "
            f"examples. Received: validation_split={fraction!r} ({n - split_at} examples)."
        )
    weights = kwargs.get("sample_weight")
    held_out = np.asarray(x[split_at:], np.float32)
    if binarize is not None:
        held_out = binarize_static(held_out, int(np.random.randint(0, 2**31 - 1)), "x")
    kwargs["validation_data"] = (
        held_out,
        None if y is None else y[split_at:],
        None if weights is None else np.asarray(weights)[split_at:],
    )
    if weights is not None:
        kwargs["sample_weight"] = np.asarray(weights)[:split_at]
    return x[:split_at], None if y is None else y[:split_at]
