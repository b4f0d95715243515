"""Reading pickled numpy arrays without running code (private).

A pickle names functions that the loader calls, so an ordinary ``pickle.load`` of a hostile
file runs whatever it names (``os.system``, ...). :class:`NumpyArrayUnpickler` admits only the
four names needed to rebuild numpy arrays and refuses every other global before it is looked
up. It is a second line of defence: kvae also checks a file's sha256 before unpickling it.
"""

import hashlib
import io
import pickle
import zlib

import numpy as np

from kvae.errors import DataError


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as f  # numpy >= 2 (and 1.26's alias)
    except ImportError:  # pragma: no cover - older numpy
        from numpy.core.multiarray import _reconstruct as f
    return f


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays (and the tuples, lists, dicts holding them) only."""

    def find_class(self, module, name):
        make = _ALLOWED_GLOBALS.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(
                "Expected a pickle of numpy arrays only (allowed globals: "
                + ", ".join(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS)
                + f"). Received: global {module}.{name}. The file was not loaded."
            )
        return make()


def load(fileobj, *, what="the file"):
    """Unpickle numpy arrays from a binary file object; anything else raises DataError."""
    try:
        return NumpyArrayUnpickler(fileobj, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise DataError(f"Refused to unpickle {what}: {err}") from None
    except (
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        OSError,
        zlib.error,
    ) as err:
        raise DataError(
            f"Expected {what} to be a pickle of numpy arrays. Received: a file that could "
            f"not be read ({type(err).__name__}: {err})."
        ) from None


def loads(data, *, what="the data"):
    """:func:`load` from bytes."""
    return load(io.BytesIO(data), what=what)


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
