"""Array conventions shared by kvae's data loaders (private).

Images: float32, shape (n, H, W, C) or (n, D) for flat vectors. uint8 pixels are divided by
256 (the MNIST convention: values in [0, 1), exactly representable), bool becomes 0/1, other
floats are cast to float32 without rescaling. Labels: int64, one per example.
"""

import numpy as np

from kvae.errors import DataError


def to_float(x, name, missing=False):
    """``x`` as float32 with the dtype rules of the module docstring; shape unchanged.
    NaN (a missing value) is refused unless ``missing``; infinities always."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(256)
    elif x.dtype == np.bool_:
        x = x.astype(np.float32)
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
        finite = np.isfinite(x) | (np.isnan(x) if missing else False)
        if not finite.all():
            raise DataError(
                f"Expected `{name}` to hold finite values. Received: {name} with "
                f"{int(np.size(x) - finite.sum())} NaN or inf values. "
                "Remove or replace them before training."
            )
    else:
        raise DataError(
            f"Expected `{name}` as uint8 pixels (divided by 256) or floats (kept as they are). "
            f"Received: {name}.dtype={x.dtype}. If these are 0..255 pixels, convert them "
            "with x.astype('uint8'); to keep the values, use x.astype('float32')."
        )
    return x


def to_images(x, name):
    """``x`` as float32 images (see the module docstring); ``name`` is used in messages."""
    x = to_float(x, name)
    if x.ndim == 3:  # (n, H, W): one channel
        x = x[..., np.newaxis]
    elif x.ndim not in (2, 4):
        raise DataError(
            f"Expected `{name}` of shape (n, H, W), (n, H, W, C) or (n, D). "
            f"Received: {name}.shape={x.shape}."
        )
    return x


def to_labels(y, n, name):
    """``y`` as an int64 array of ``n`` labels, or None when ``y`` is None."""
    if y is None:
        return None
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        y = y.astype(np.int64)
    elif np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.rint(y)):
        y = y.astype(np.int64)
    else:
        raise DataError(
            f"Expected `{name}` as integer class labels. Received: {name}.dtype={y.dtype}. "
            "Save integer labels, or leave the labels out of the file."
        )
    if y.ndim < 1 or len(y) != n:
        raise DataError(
            f"Expected `{name}` with one label per example ({n}). Received: {name}.shape={y.shape}."
        )
    return y


def check_same_shape(x_train, x_test):
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            "Expected train and test examples of the same shape. Received: "
            f"x_train.shape={x_train.shape}, x_test.shape={x_test.shape}."
        )
