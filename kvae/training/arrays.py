"""Which data ``fit`` feeds itself: in-memory arrays, unless an option needs Keras' own
array handling."""

import numpy as np
import tensorflow as tf

__all__ = ["fast_path_ok", "is_array"]


def is_array(x):
    """A numpy array or a tensor with a batch axis."""
    return isinstance(x, (np.ndarray, tf.Tensor)) and len(x.shape) >= 1


def fast_path_ok(x, y, kwargs, conditional=False):
    """kvae feeds array data itself unless an option needs Keras' own array handling (a
    conditional VAE's ``y`` goes through kvae's pipeline with ``x``)."""
    if y is not None and y is not x and not conditional:
        return False
    if kwargs.get("validation_split") or kwargs.get("class_weight") is not None:
        return False
    if kwargs.get("steps_per_epoch") is not None:
        return False
    weights = kwargs.get("sample_weight")
    return weights is None or (isinstance(weights, np.ndarray) and weights.shape == x.shape[:1])
