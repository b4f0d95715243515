"""``make_dataset``: a fast ``tf.data`` pipeline of image batches for a VAE.

The images stay in one tensor. Each pass (epoch) draws one permutation of the indices with a
stateless shuffle, and each batch is one slice of that permutation and one ``tf.gather``: the
pipeline handles one element per batch, not one per example. Measured on MNIST (60,000 x
28x28x1, batch 128, 2 busy CPU cores, one process, variants interleaved), CPU time per epoch:
this design 0.07 s; ``from_tensor_slices(x).shuffle(n).batch(128)`` 0.13 s (and its first
epoch fills a 60,000-image shuffle buffer); ``Dataset.range(n).shuffle(n).batch(128)`` of
indices + gather 0.13 s. With dynamic binarisation: 0.24 s against 0.33 s for the
``from_tensor_slices`` pipeline (the Bernoulli draws themselves cost most of it).

Binarisation turns grey levels p into Bernoulli(p) draws (0/1), the usual treatment of MNIST
for a Bernoulli likelihood:

* ``"static"``: one draw per pixel, made once in numpy with the seed; every epoch sees the
  same binary images.
* ``"dynamic"``: a fresh draw each time a batch is produced, made inside the pipeline with
  stateless random ops. Their seeds come from ``Dataset.random(seed,
  rerandomize_each_iteration=True)``, so every epoch (each new iterator, or each pass of
  ``repeat=True``) draws anew, and two pipelines made with the same seed give the same stream.
"""

import numpy as np

from kvae.datasets._arrays import to_float
from kvae.errors import ConfigError, DataError

BINARIZE = (None, "static", "dynamic")
_STATIC_CHUNK = 8192  # rows per numpy draw, to keep the temporary uniform array small


def make_dataset(
    x,
    batch_size=128,
    *,
    shuffle=True,
    binarize=None,
    seed=None,
    drop_remainder=False,
    repeat=False,
):
    """A ``tf.data.Dataset`` of float32 batches of ``x`` (no labels), prefetched.

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

    Returns:
        A ``tf.data.Dataset`` yielding float32 tensors of shape (batch, ...).
    """
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    if not (binarize is None or (isinstance(binarize, str) and binarize in BINARIZE)):
        raise ConfigError(
            "Expected `binarize` to be one of None, 'static', 'dynamic'. "
            f"Received: binarize={binarize!r}"
        )
    if seed is not None:
        seed = _check_int("seed", seed, minimum=0)
    x = to_float(x, "x")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"Expected `x` of shape (n, ...) with n >= 1. Received: x.shape={x.shape}")
    n = len(x)
    if drop_remainder and batch_size > n:
        raise ConfigError(
            f"Expected `batch_size` <= the number of examples ({n}) with drop_remainder=True "
            f"(otherwise no batch is produced). Received: batch_size={batch_size}"
        )
    if binarize is not None:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"Expected x in [0, 1] to binarize it (as Bernoulli probabilities). "
                f"Received: min={lo}, max={hi}. Rescale x, or pass binarize=None."
            )

    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    epoch_seed, key, static_seed = (
        int(s) for s in np.random.SeedSequence(seed).generate_state(3, dtype=np.uint32)
    )
    if binarize == "static":
        x = _static_binarize(x, static_seed)
    return _pipeline(
        x, batch_size, shuffle, binarize == "dynamic", epoch_seed, key, drop_remainder, repeat
    )


def _pipeline(x, batch_size, shuffle, dynamic, epoch_seed, key, drop_remainder, repeat):
    import tensorflow as tf

    n = len(x)
    n_batches = n // batch_size if drop_remainder else -(-n // batch_size)
    data = tf.convert_to_tensor(x)
    key = tf.constant(key, tf.int64)

    def one_pass(r):
        # r: this pass's random int64; the two stateless seeds of the pass derive from it.
        shuffle_seed, draw_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.stack([r, key]), num=2)
        )
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=shuffle_seed)

        def batch(b):
            xb = tf.gather(data, order[b * batch_size : (b + 1) * batch_size])
            if dynamic:
                seed = tf.random.experimental.stateless_fold_in(draw_seed, b)
                u = tf.random.stateless_uniform(tf.shape(xb), seed=seed, dtype=xb.dtype)
                xb = tf.cast(u < xb, xb.dtype)
            return xb

        return tf.data.Dataset.range(n_batches).map(batch, num_parallel_calls=tf.data.AUTOTUNE)

    # One fresh random number per pass (per new iterator, and per repetition): each epoch is
    # shuffled and binarised anew, yet the stream of passes is fixed by epoch_seed.
    passes = tf.data.Dataset.random(seed=epoch_seed, rerandomize_each_iteration=True).take(1)
    ds = passes.flat_map(one_pass).apply(tf.data.experimental.assert_cardinality(n_batches))
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)


def _check_int(name, value, *, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(
            f"Expected `{name}` to be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def _static_binarize(x, seed):
    rng = np.random.default_rng(seed)
    out = np.empty(x.shape, np.float32)
    for start in range(0, len(x), _STATIC_CHUNK):
        block = x[start : start + _STATIC_CHUNK]
        out[start : start + _STATIC_CHUNK] = rng.random(block.shape, dtype=np.float32) < block
    return out
