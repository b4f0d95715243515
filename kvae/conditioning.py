"""Conditional VAEs (Sohn et al. 2015): ``kvae.VAE(..., condition=...)``.

With a condition y (a class label, one-hot encoded, or any vector) the model is

    q(z | x, y),   p(z) (or a learned p(z | y)),   p(x | z, y)

and kvae feeds y to the networks itself, so every registered encoder and decoder, kvae's
and plugins', works conditioned without change:

- the posterior head reads [flatten(encoder(x)), y]: the encoder's features with y appended;
- the decoder reads [z, y]: the code with y appended (a decoder builds on its first call,
  so it simply sees a wider input).

A condition is inert config data: ``{"num_classes": 10}`` (labels 0..9, one-hot encoded) or
``{"dim": 5}`` (any real vector of size 5). The shorthand ``condition=10`` means
``{"num_classes": 10}``.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.errors import ConfigError, DataError

tfd = tfp.distributions


class Condition:
    """What the condition is: class labels (``num_classes``) or a vector (``dim``)."""

    def __init__(self, num_classes=None, dim=None):
        if (num_classes is None) == (dim is None):
            raise ConfigError(
                "Expected a condition with exactly one of `num_classes` (class labels, one-hot "
                "encoded) or `dim` (a real vector), e.g. condition={'num_classes': 10}. "
                f"Received: num_classes={num_classes!r}, dim={dim!r}."
            )
        for name, value in (("num_classes", num_classes), ("dim", dim)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(
                    f"Expected condition `{name}` to be an integer >= 1 (>= 2 for classes). "
                    f"Received: {name}={value!r}"
                )
        if num_classes is not None and num_classes < 2:
            raise ConfigError(
                f"Expected condition `num_classes` >= 2. Received: num_classes={num_classes!r}"
            )
        self.num_classes = num_classes
        self.dim = num_classes if num_classes is not None else dim

    @property
    def is_classes(self):
        return self.num_classes is not None

    def get_config(self):
        return {"num_classes": self.num_classes} if self.is_classes else {"dim": self.dim}

    def __repr__(self):
        return f"Condition({self.get_config()})"

    # ----- data -------------------------------------------------------------------------
    def check(self, y, n, name="y"):
        """Raise DataError unless ``y`` is ``n`` conditions of this kind (numpy arrays)."""
        if y is None:
            raise DataError(
                f"Expected {name}: this VAE is conditional ({self.describe()}), so every call "
                f"needs the condition of each example. Received: {name}=None. Pass "
                f"fit(x, y), encode(x, y), sample(n, y=...)."
            )
        if isinstance(y, tf.data.Dataset) or not hasattr(y, "shape"):
            y = np.asarray(y)
        arr = np.asarray(y)
        if arr.ndim == 0 or len(arr) != n:
            raise DataError(
                f"Expected {name} to hold one condition per example ({n}). Received: "
                f"{name} of shape {arr.shape}."
            )
        if self.is_classes:
            flat = arr.reshape(len(arr), -1)
            if flat.shape[1] == self.num_classes and arr.ndim == 2 and flat.shape[1] != 1:
                ok = np.all((flat == 0) | (flat == 1)) and np.all(flat.sum(axis=1) == 1)
                if not ok:
                    raise DataError(
                        f"Expected {name} as labels of shape (n,) or one-hot rows of width "
                        f"{self.num_classes}. Received: rows that are not one-hot."
                    )
                return
            if flat.shape[1] != 1:
                raise DataError(
                    f"Expected {name} as integer labels of shape (n,) (or one-hot of width "
                    f"{self.num_classes}). Received: shape {arr.shape}."
                )
            if not np.all(np.isfinite(flat.astype("float64"))) or np.any(flat != np.round(flat)):
                raise DataError(f"Expected integer class labels in {name}. Received: {arr[:5]}...")
            bad = (flat < 0) | (flat >= self.num_classes)
            if np.any(bad):
                raise DataError(
                    f"Expected labels in {name} within 0..{self.num_classes - 1} "
                    f"(num_classes={self.num_classes}). Received: {int(bad.sum())} outside, "
                    f"e.g. {flat[bad][0]!r}."
                )
        else:
            if arr.reshape(len(arr), -1).shape[1] != self.dim or arr.ndim != 2:
                raise DataError(f"Expected {name} of shape (n, {self.dim}). Received: {arr.shape}.")
            if not np.all(np.isfinite(arr.astype("float64"))):
                raise DataError(f"Expected finite values in {name}.")

    def describe(self):
        return (
            f"num_classes={self.num_classes}" if self.is_classes else f"a vector of size {self.dim}"
        )

    def vector(self, y):
        """The condition as a float32 tensor [B, dim] (labels one-hot encoded)."""
        y = tf.convert_to_tensor(y)
        if self.is_classes:
            if y.shape.rank == 2 and y.shape[-1] == self.num_classes and self.num_classes != 1:
                return tf.cast(y, tf.float32)
            labels = tf.cast(tf.reshape(y, [-1]), tf.int32)
            return tf.one_hot(labels, self.num_classes, dtype=tf.float32)
        return tf.reshape(tf.cast(y, tf.float32), [-1, self.dim])

    def repeat(self, y, n):
        """``y`` for ``n`` samples: one label (or vector) repeated, or ``n`` of them."""
        if y is None:
            self.check(None, n)
        arr = np.asarray(y)
        single = arr.ndim == 0 if self.is_classes else arr.ndim == 1
        if single:
            arr = np.broadcast_to(arr, (n, *arr.shape))
        self.check(arr, n)
        return arr


def parse(condition):
    """None, an int (number of classes), a dict or a Condition -> a Condition or None."""
    if condition is None or isinstance(condition, Condition):
        return condition
    if isinstance(condition, bool):
        raise ConfigError(
            f"Expected condition to be None, an int or a dict. Received: {condition!r}"
        )
    if isinstance(condition, int):
        return Condition(num_classes=condition)
    if isinstance(condition, dict):
        unknown = sorted(set(condition) - {"num_classes", "dim"})
        if unknown:
            raise ConfigError(
                f"Expected condition keys 'num_classes' or 'dim'. Received: {unknown}."
            )
        return Condition(**condition)
    raise ConfigError(
        "Expected condition to be None, the number of classes (an int), {'num_classes': C} or "
        f"{{'dim': D}}. Received: condition={condition!r}"
    )


def features_with_condition(features, y_vec):
    """[flatten(features), y]: what the posterior head reads in a conditional VAE."""
    if len(features.shape) > 2:
        features = keras.ops.reshape(features, (keras.ops.shape(features)[0], -1))
    return keras.ops.concatenate([features, keras.ops.cast(y_vec, features.dtype)], axis=-1)


def code_with_condition(z, y_vec):
    """[z, y] for codes z [N, L] and conditions broadcast to [N, C]: the decoder's input."""
    return tf.concat([z, tf.cast(y_vec, z.dtype)], axis=-1)
