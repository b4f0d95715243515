"""Evaluation over a ``tf.data.Dataset``: the real rows of each batch, gathered into chunks
of a fixed number of examples, so that a data set streamed from disk is evaluated batch by
batch and never held whole.

Elements are ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, weight)``: kvae's padded batches
(:func:`kvae.datasets.image_dataset`, :func:`kvae.datasets.make_dataset` with ``pad=True``)
top up the last batch with rows of weight 0, which are left out here. ``y`` is kept only
when asked for (a conditional model's conditions); otherwise it is ignored, as a VAE ignores
it in ``fit``.

A chunk of ``size`` rows starts at a multiple of ``size`` in the whole data set, as the
array paths' batches do, so an estimate seeded by its batch's first index (IWAE, the
posterior moments of a flow) gives the same numbers on the stream as on the same examples
as one array, batch for batch. At most ``size`` plus one stream batch of rows are held.
"""

import numpy as np

from kvae.errors import ConfigError, DataError

__all__ = [
    "chunks",
    "first_examples",
    "is_stream",
    "limited",
    "no_y_with_a_dataset",
    "num_rows_bound",
]


def is_stream(data):
    """True for a ``tf.data.Dataset`` (the evaluation functions stream it)."""
    import tensorflow as tf

    return isinstance(data, tf.data.Dataset)


def no_y_with_a_dataset(y):
    """Refuse a ``y`` given beside a dataset, whose elements carry the conditions."""
    if y is not None:
        raise ConfigError(
            "Expected y=None with a dataset: a conditional model's conditions are the "
            "elements' y, (x, y) or (x, y, weight). Received: y as well."
        )


def _parts(element):
    """``(x, y, weight)`` of an element, as Keras' ``fit`` reads it (None where absent)."""
    import keras

    if isinstance(element, dict):
        raise DataError(
            "Expected dataset elements x, (x, y) or (x, y, weight). Received: a dict with keys "
            f"{sorted(element)}. Map the dataset to tuples first."
        )
    return keras.utils.unpack_x_y_sample_weight(element)


def _rows(data, with_y):
    """``(x, y)`` numpy of each batch's real rows (weight > 0); y None unless ``with_y``."""
    for element in data:
        x, y, w = _parts(element)
        x = np.asarray(x, np.float32)
        keep = None if w is None else np.asarray(w).reshape(-1) > 0
        if keep is not None:
            x = x[keep]
        if with_y:
            if y is None:
                raise DataError(
                    "Expected (x, y) or (x, y, weight) elements: a conditional model takes its "
                    "conditions y from the dataset. Received: elements without y."
                )
            y = np.asarray(y)
            y = y if keep is None else y[keep]
        else:
            y = None
        yield x, y


def chunks(data, size, *, with_y=False, limit=None):
    """``(start, x, y)`` numpy chunks of ``size`` real rows of ``data`` (the last may be
    shorter), ``start`` the index of the chunk's first example; at most ``limit`` rows in
    all. ``y``: the rows' y when ``with_y`` (else None)."""
    xs, ys, held, start = [], [], 0, 0
    for bx, by in _rows(data, with_y):
        room = len(bx) if limit is None else limit - start - held
        xs.append(bx[:room])
        ys.append(None if by is None else by[:room])
        held += len(xs[-1])
        while held >= size:
            cx = np.concatenate(xs)
            cy = np.concatenate(ys) if with_y else None
            yield start, cx[:size], (None if cy is None else cy[:size])
            xs, ys = [cx[size:]], [None if cy is None else cy[size:]]
            start, held = start + size, held - size
        if limit is not None and start + held >= limit:
            break
    if held:
        yield start, np.concatenate(xs), (np.concatenate(ys) if with_y else None)


def first_examples(data, n, *, with_y=False):
    """``(x, y)``: the first ``n`` real rows of ``data`` as numpy arrays (a bounded subset,
    for the steps that take arrays: the gaps, pictures)."""
    for _, x, y in chunks(data, n, with_y=with_y, limit=n):
        return x, y
    raise DataError("Expected a dataset with at least one example. Received: an empty one.")


def _x_spec(spec):
    """The ``TensorSpec`` of x in a dataset's element spec."""
    return spec[0] if isinstance(spec, tuple) else spec


def limited(data, n):
    """``data`` with only its first ``n`` real examples: unbatched, padding dropped, taken,
    and batched again in batches of the same size (the last one shorter)."""

    if n is None:
        return data
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"Expected max_examples to be an integer >= 1. Received: {n!r}.")
    spec = data.element_spec
    first = _x_spec(spec)
    batch = first.shape[0] if first.shape.rank else None
    rows = data.unbatch()
    if isinstance(spec, tuple) and len(spec) == 3:
        rows = rows.filter(lambda x, y, w: w > 0)
    return rows.take(int(n)).batch(int(batch or n))


def num_rows_bound(data):
    """An upper bound of the rows of ``data`` (batches times the static batch size), for a
    progress bar; None when unknown."""
    cardinality = int(data.cardinality())
    first = _x_spec(data.element_spec)
    if cardinality < 0 or not first.shape.rank or first.shape[0] is None:
        return None
    return cardinality * int(first.shape[0])
