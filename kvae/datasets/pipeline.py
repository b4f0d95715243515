"""kvae's one input pipeline: ``make_dataset``, a fast ``tf.data`` pipeline of image batches,
and ``binarize_static``, its one binariser. ``VAE.fit`` (array data), ``kvae train`` (also under a
distribution strategy) and ``kvae.distribute.distribute_dataset`` all build their batches here.

Each pass (epoch) draws one permutation of the indices with a stateless shuffle, and each
batch is one slice of that permutation and one gather of rows: the pipeline handles one
element per batch, not one per example. The rows are gathered from the caller's numpy array
itself (``tf.numpy_function``, one small copy per batch on tf.data's thread), so TensorFlow
holds no second copy of the data set (measured on MNIST: ~190 MB less peak memory than a
captured tensor, no slower); with ``in_graph=True`` (kvae's choice under a distribution
strategy, whose input pipelines may be rewritten or placed elsewhere) the data is held once
in a host variable and gathered in the graph. Measured on MNIST (60,000 x 28x28x1, batch 128,
2 busy CPU cores), CPU time per epoch: this design 0.07 s;
``from_tensor_slices(x).shuffle(n).batch(128)`` 0.13 s.

``pad=True`` tops the last batch of each pass up to ``batch_size`` with repeated rows of
weight 0 and yields Keras' ``(x, y, sample_weight)`` triples (y is x): every step then has one
shape (one XLA compilation) and each pass still weighs every example exactly once.

A conditional VAE's conditions (class labels or vectors) go through the same pipeline:
``make_dataset(x, y=labels)`` gathers each batch's rows of ``y`` with the same indices as its
rows of ``x``, and yields ``(x, y)`` pairs, or ``(x, y, sample_weight)`` triples with ``pad``
or ``sample_weight``. Binarisation touches ``x`` only.

Binarisation turns grey levels p into Bernoulli(p) draws (0/1), the usual treatment of MNIST
for a Bernoulli likelihood:

* ``"static"``: one draw per pixel, made once in numpy by :func:`binarize_static`; every epoch sees
  the same binary images.
* ``"dynamic"``: a fresh draw each time a batch is produced, made inside the pipeline with
  stateless random ops. Their seeds come from ``Dataset.random(seed,
  rerandomize_each_iteration=True)``, so every epoch (each new iterator, or each pass of
  ``repeat=True``) draws anew, and two pipelines made with the same seed give the same stream.

The pipeline runs without tf.data's autotuning: two batches are made at a time and
``prefetch`` batches are kept ready (``VAE.fit`` asks for one compiled call's worth, within
``PREFETCH_BYTES``; see :func:`prefetch_for`). Autotuning starts a thread per iterator
whose wait between rounds grows to 60 s while the iterator lives, and in TensorFlow 2.21
deleting the iterator on a busy CPU sometimes waits out that wait: measured with 3 processes
loading 2 cores, 3 of 8 iterators of an autotuned map-and-prefetch pipeline that had lived
100 s took 42-60 s to delete; 0 of 8 without autotuning, and 0 of 8 of this pipeline's.
Deleting one is what ends every ``fit``. With these fixed sizes ``fit`` is as fast as with
autotuning (all of MNIST at batch 128, 10 rounds alternating the two in one process: median
ratio 1.02, range 0.95-1.30).
"""

import os

import numpy as np

from kvae._choices import BINARIZE
from kvae.datasets._arrays import to_float
from kvae.errors import ConfigError, DataError

__all__ = ["PREFETCH_BYTES", "binarize_static", "make_dataset", "prefetch_for"]

_STATIC_CHUNK = 8192  # rows per numpy draw, to keep the temporary uniform array small
_PARALLEL_BATCHES = 2  # batches made at a time (the row gather holds Python's lock)
PREFETCH_BYTES = 64 * 2**20  # most memory prefetch_for lets ready batches take


def binarize_static(x, seed, name="x"):
    """One Bernoulli(x) draw per value of ``x`` (in [0, 1]) as float32 0/1, fixed by ``seed``.

    Raises DataError, naming ``name``, when x has values outside [0, 1]."""
    x = np.asarray(x, np.float32)
    check_unit_interval(x, name)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB1]))
    out = np.empty(x.shape, np.float32)
    for start in range(0, len(x), _STATIC_CHUNK):
        block = x[start : start + _STATIC_CHUNK]
        out[start : start + _STATIC_CHUNK] = rng.random(block.shape, dtype=np.float32) < block
    return out


def make_dataset(
    x,
    batch_size=128,
    *,
    shuffle=True,
    binarize=None,
    seed=None,
    drop_remainder=False,
    repeat=False,
    pad=False,
    sample_weight=None,
    in_graph=False,
    prefetch=2,
    y=None,
    missing=False,
):
    """A ``tf.data.Dataset`` of float32 batches of ``x``, prefetched.

    Args:
        x: array of examples, shape (n, ...): float data are used as they are (cast to
            float32), uint8 pixels are divided by 256.
        batch_size: examples per batch, >= 1.
        shuffle: reshuffle the examples on every pass (each epoch).
        binarize: None, ``"static"`` or ``"dynamic"`` (see the module docstring). Needs x in
            [0, 1].
        seed: integer seed for the shuffle and the binarisation; None draws one from
            numpy's global generator (so ``keras.utils.set_random_seed`` fixes it too).
        drop_remainder: drop the last, smaller batch of each pass.
        repeat: repeat forever (each pass reshuffled and, for "dynamic", redrawn).
        pad: top the last batch up with weight-0 rows (see the module docstring); the
            elements are then ``(x, x, weight)``.
        sample_weight: optional weights, shape (n,); the elements are then
            ``(x, x, weight)``.
        in_graph: gather the rows in the graph from a host variable instead of from the
            numpy array (see the module docstring).
        prefetch: batches kept ready ahead of the consumer, >= 1 (``prefetch_for``
            sizes it for a consumer that takes many batches at once).
        y: optional conditions of the examples (a conditional VAE's class labels or
            vectors), shape (n, ...): each batch carries the rows of ``y`` that match its
            rows of ``x``. Integer labels keep their dtype, other numbers become float32.
        missing: allow NaN in ``x`` as missing values (a table's, for a model whose
            likelihood leaves them out: kvae.tables); refused otherwise.

    Returns:
        A ``tf.data.Dataset`` yielding float32 tensors of shape (batch, ...), or
        ``(x, x, weight)`` triples with ``pad`` or ``sample_weight``. With ``y``: ``(x, y)``
        pairs, or ``(x, y, weight)`` triples with ``pad`` or ``sample_weight``.
    """
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    prefetch = _check_int("prefetch", prefetch, minimum=1)
    if not (binarize is None or (isinstance(binarize, str) and binarize in BINARIZE)):
        raise ConfigError(
            "Expected `binarize` to be one of None, 'static', 'dynamic'. "
            f"Received: binarize={binarize!r}"
        )
    if seed is not None:
        seed = _check_int("seed", seed, minimum=0)
    if pad and drop_remainder:
        raise ConfigError("Expected at most one of `pad` and `drop_remainder`. Received: both.")
    x = to_float(x, "x", missing=missing)
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"Expected `x` of shape (n, ...) with n >= 1. Received: x.shape={x.shape}")
    n = len(x)
    if drop_remainder and batch_size > n:
        raise ConfigError(
            f"Expected `batch_size` <= the number of examples ({n}) with drop_remainder=True "
            f"(otherwise no batch is produced). Received: batch_size={batch_size}"
        )
    y = None if y is None else _conditions(y, n)
    weights = None
    if sample_weight is not None:
        weights = np.asarray(sample_weight, np.float32)
        if weights.shape != (n,):
            raise DataError(
                f"Expected `sample_weight` of shape ({n},), one weight per example. "
                f"Received: sample_weight.shape={weights.shape}."
            )
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    epoch_seed, key, static_seed = (
        int(s) for s in np.random.SeedSequence(seed).generate_state(3, dtype=np.uint32)
    )
    if binarize == "static":
        x = binarize_static(x, static_seed)
    elif binarize == "dynamic":
        check_unit_interval(x, "x")
    return _pipeline(
        x,
        batch_size,
        shuffle=shuffle,
        dynamic=binarize == "dynamic",
        epoch_seed=epoch_seed,
        key=key,
        drop_remainder=drop_remainder,
        repeat=repeat,
        pad=pad,
        weights=weights,
        in_graph=in_graph,
        prefetch=prefetch,
        y=y,
    )


def _conditions(y, n):
    """``y`` as an array of ``n`` rows: integer (or boolean) labels as they are, any other
    numbers as float32."""
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != n:
        raise DataError(
            f"Expected `y` to hold one condition per example ({n}). Received: y of shape {y.shape}."
        )
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return y
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(f"Expected `y` of numbers. Received: y of dtype {y.dtype}.")
    return y.astype(np.float32, copy=False)


def prefetch_for(batches, batch_size, example_shape):
    """Batches to keep ready for a consumer that takes ``batches`` at once (the fused
    training loop takes one compiled call's batches together): that many, but at most
    ``PREFETCH_BYTES`` of float32 batches, and at least 2."""
    batch_bytes = 4 * batch_size * int(np.prod(example_shape, dtype=np.int64))
    return max(2, min(int(batches), PREFETCH_BYTES // max(batch_bytes, 1)))


def check_unit_interval(x, name):
    """Raise DataError unless every value of ``x`` is in [0, 1] (binarisation needs it)."""
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if lo < 0 or hi > 1:
        raise DataError(
            f"Expected {name} in [0, 1] to binarize it (as Bernoulli probabilities). "
            f"Received: values from {lo:g} to {hi:g}. Rescale the data, or set binarize to None."
        )


def _row_gatherer(values, in_graph, name="kvae_input_data"):
    """rows -> values[rows] as a tensor of values' dtype (see the module docstring)."""
    import tensorflow as tf

    values = np.ascontiguousarray(values)
    if not in_graph:

        def take(rows):
            return values[rows]

        dtype = tf.as_dtype(values.dtype)
        return lambda rows: tf.numpy_function(take, [rows], dtype, stateful=False)
    # A variable, not a tensor: a tensor captured by a tf.data function is copied again into
    # each iterator.
    with tf.init_scope(), tf.device("/CPU:0"):
        data = tf.Variable(values, trainable=False, name=name)
    return lambda rows: tf.gather(data, rows)


def _pipeline(
    x,
    batch_size,
    *,
    shuffle,
    dynamic,
    epoch_seed,
    key,
    drop_remainder,
    repeat,
    pad,
    weights,
    in_graph,
    prefetch,
    y,
):
    import tensorflow as tf

    n = len(x)
    if pad:
        batch_size = min(batch_size, n)
    n_batches = n // batch_size if drop_remainder else -(-n // batch_size)
    padding = n_batches * batch_size - n if pad else 0
    full = drop_remainder or pad  # every batch has batch_size rows: say so, for XLA
    gather = _row_gatherer(np.asarray(x, np.float32), in_graph)
    gather_y = None if y is None else _row_gatherer(y, in_graph, "kvae_input_conditions")
    triples = pad or weights is not None
    weight = tf.constant(np.ones(n, np.float32) if weights is None else weights)
    key = tf.constant(key, tf.int64)
    example_shape = tuple(x.shape[1:])

    def one_pass(r):
        # r: this pass's random int64; the two stateless seeds of the pass derive from it.
        shuffle_seed, draw_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.stack([r, key]), num=2)
        )
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=shuffle_seed)
        pass_weights = tf.concat([tf.gather(weight, order), tf.zeros([padding])], axis=0)
        order = tf.concat([order, order[:padding]], axis=0)

        def batch(b):
            rows = slice(b * batch_size, (b + 1) * batch_size)
            xb = gather(order[rows])
            xb = tf.ensure_shape(xb, ((batch_size if full else None), *example_shape))
            if dynamic:
                seed = tf.random.experimental.stateless_fold_in(draw_seed, b)
                u = tf.random.stateless_uniform(tf.shape(xb), seed=seed, dtype=xb.dtype)
                xb = tf.cast(u < xb, xb.dtype)
            yb = xb
            if gather_y is not None:
                yb = tf.ensure_shape(gather_y(order[rows]), (xb.shape[0], *y.shape[1:]))
            if not triples:
                return xb if gather_y is None else (xb, yb)
            return xb, yb, tf.ensure_shape(pass_weights[rows], xb.shape[:1])

        parallel = min(_PARALLEL_BATCHES, os.cpu_count() or 1)
        return tf.data.Dataset.range(n_batches).map(batch, num_parallel_calls=parallel)

    # One fresh random number per pass (per new iterator, and per repetition): each epoch is
    # shuffled and binarised anew, yet the stream of passes is fixed by epoch_seed.
    passes = tf.data.Dataset.random(seed=epoch_seed, rerandomize_each_iteration=True).take(1)
    ds = passes.flat_map(one_pass).apply(tf.data.experimental.assert_cardinality(n_batches))
    if repeat:
        ds = ds.repeat()
    options = tf.data.Options()
    options.autotune.enabled = False  # no autotuning thread: see the module docstring
    return ds.prefetch(prefetch).with_options(options)


def _check_int(name, value, *, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(
            f"Expected `{name}` to be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)
