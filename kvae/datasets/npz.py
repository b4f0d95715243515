"""Load a data set from an ``.npz`` file.

Two layouts are accepted (read with ``allow_pickle=False``, so an npz never runs code):

* Keras layout: ``x_train``, ``x_test`` and, optionally, ``y_train`` and ``y_test`` (both or
  neither), as written by ``np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)``
  and as found in ``~/.keras/datasets/mnist.npz``.
* One array: ``x`` and, optionally, ``y``. The file is split deterministically: a
  ``test_fraction`` (default 0.1) of the examples, evenly spaced through the file (with 0.1,
  every 10th example: indices 9, 19, 29, ...), is the test set, the rest the training set; both
  keep the file's order. Evenly spaced rather than "the last 10%" so that a file sorted by class
  still gets every class in both parts, and no random generator is involved, so the split is
  the same on every machine and numpy version. ``test_fraction=0`` gives an empty test set.

Images: uint8 pixels are divided by 256 (values in [0, 1)), bool becomes 0/1, float data are
kept as they are (cast to float32, never rescaled: values in [0, 1] for Bernoulli-type
likelihoods, any real values for a Gaussian one). (n, H, W) images get a channel axis,
(n, H, W, C) images and (n, D) flat vectors are kept. Labels become int64; None when the file
has none.
"""

import os
import zipfile

import numpy as np

from kvae.datasets._arrays import check_same_shape, to_images, to_labels
from kvae.errors import ConfigError, DataError

_KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path, *, test_fraction=0.1):
    """Load ``((x_train, y_train), (x_test, y_test))`` from an npz file (see the module doc).

    Args:
        path: path to an ``.npz`` file in the Keras layout or the ``x``/``y`` layout.
        test_fraction: share of examples held out as the test set for the ``x``/``y``
            layout, in [0, 1). Ignored for the Keras layout, which has its own split.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        ok = False
    else:
        ok = 0 <= test_fraction < 1
    if not ok:
        raise ConfigError(
            "Expected `test_fraction` to be a number in [0, 1). "
            f"Received: test_fraction={test_fraction!r}"
        )
    path = _check_npz_path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = sorted(z.files)
            if "x_train" in keys or "x_test" in keys:
                arrays = _read(z, path, ("x_train", "x_test"), ("y_train", "y_test"))
                return _keras_layout(*arrays)
            if "x" in keys:
                x, y = _read(z, path, ("x",), ("y",))
                return _split(x, y, test_fraction)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        # e.g. an object array (which would need pickle), or a truncated file
        raise DataError(
            f"Expected an npz of plain numeric arrays. Received: {path!r}, which could not "
            f"be read ({type(err).__name__}: {err}). Save numeric arrays with np.savez."
        ) from None
    raise DataError(
        "Expected an npz with keys x_train, x_test (optionally y_train, y_test), or x "
        f"(optionally y). Received: keys {keys} in {path!r}. Save it with, e.g., "
        "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) or np.savez(path, x=...)."
    )


def _check_npz_path(path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise DataError(
            f"Expected a path to an .npz file. Received: path={path!r} of type "
            f"{type(path).__name__}."
        ) from None
    if not os.path.isfile(path):
        raise DataError(
            f"Expected a path to an existing .npz file. Received: path={path!r}, "
            f"{'a directory' if os.path.isdir(path) else 'which does not exist'}. "
            "Check the path, or pass a registered data set name (kvae.datasets.names())."
        )
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith(b"PK"):
        kind = (
            "an .npy file (save several arrays with np.savez instead)"
            if magic.startswith(b"\x93NUMPY")
            else "a gzip file; kvae does not unpickle files from arbitrary paths, since a "
            "pickle can run code: convert it with np.savez"
            if magic.startswith(b"\x1f\x8b")
            else f"not a zip archive (first bytes {magic!r})"
        )
        raise DataError(f"Expected an .npz file (a zip archive). Received: {path!r}, {kind}.")
    return path


def _read(z, path, required, labels):
    keys = sorted(z.files)
    missing = [k for k in required if k not in keys]
    if missing:
        raise DataError(
            f"Expected keys {list(required)} in {path!r}. Received: keys {keys} "
            f"(missing: {missing}). Save all of them with np.savez."
        )
    present = [k for k in labels if k in keys]
    if present and len(present) != len(labels):
        raise DataError(
            f"Expected either all of {list(labels)} or none of them in {path!r}. "
            f"Received: keys {keys}. Save labels for every split, or none."
        )
    return [z[k] for k in required] + [z[k] if k in keys else None for k in labels]


def _keras_layout(x_train, x_test, y_train, y_test):
    x_train, x_test = to_images(x_train, "x_train"), to_images(x_test, "x_test")
    check_same_shape(x_train, x_test)
    y_train = to_labels(y_train, len(x_train), "y_train")
    y_test = to_labels(y_test, len(x_test), "y_test")
    return (x_train, y_train), (x_test, y_test)


def _holdout_mask(n, test_fraction):
    """Boolean mask of the ``floor(n * test_fraction)`` evenly spaced test examples."""
    k = np.floor(np.arange(n + 1) * test_fraction).astype(np.int64)
    return np.diff(k) > 0


def _split(x, y, test_fraction):
    x = to_images(x, "x")
    y = to_labels(y, len(x), "y")
    test = _holdout_mask(len(x), test_fraction)
    train = ~test
    return (x[train], None if y is None else y[train]), (
        x[test],
        None if y is None else y[test],
    )
