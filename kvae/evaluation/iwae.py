"""Importance sampling from q(z|x) (Burda et al. 2016), with a standard error per example.

With w_k = p(x, z_k) / q(z_k|x), z_k ~ q(z|x), k = 1..K, the estimate is
log((1/K) sum_k w_k), a stochastic lower bound of log p(x) (Jensen). Its standard error by
the delta method is sd(w) / (sqrt(K) mean(w)), i.e.

    se = sqrt((K sum w^2 / (sum w)^2 - 1) / (K - 1)),

computed from the two log-sums logsumexp(log w) and logsumexp(2 log w), so any K runs in
chunks with one [2, B] summary per chunk (no [K, B] tensor is kept).
"""

import numpy as np
import tensorflow as tf

from kvae import _compile_mode, objectives
from kvae._checks import positive_int
from kvae._progress import Progress
from kvae.errors import ConfigError
from kvae.evaluation.joint import DECODER_ROWS
from kvae.evaluation.result import LogLikelihood

__all__ = ["iwae_log_likelihood"]


def _sums_fn(model):
    """A compiled ``(x, seed, start, s, chunks, y) -> [2, B]``: logsumexp of log w and of
    2 log w over ``chunks`` chunks of ``s`` samples, chunk i drawn with the seed
    ``fold_in(seed, start + i * s)``.

    The chunks run in one XLA while-loop, the encoder once per call: issuing one compiled
    call per chunk (and encoding again each time) ran about 25% slower at 40 samples x 100
    examples per chunk (scripts/benchmark_loglik.py).
    """
    fn = getattr(model, "_kvae_iwae_sums_fn", None)
    if fn is None:

        def sums(x, seed, start, s, chunks, y=None):
            # y: a conditional model's conditions (kvae.VAE(condition=...)), else None.
            q = model.encode(x) if y is None else model.encode(x, y)
            decode = model.decode if y is None else (lambda z: model.decode(z, y))
            target = model.likelihood_head.prepare(x)
            prior = model.prior_distribution()

            def body(i, acc):
                seed_i = tf.random.experimental.stateless_fold_in(seed, start + i * s)
                lw = objectives.log_weights(target, q, prior, decode, q.sample(s, seed=seed_i))
                chunk = tf.stack(
                    [tf.reduce_logsumexp(lw, axis=0), tf.reduce_logsumexp(2.0 * lw, axis=0)]
                )
                return i + 1, tf.reduce_logsumexp(tf.stack([acc, chunk]), axis=0)

            acc = tf.fill([2, tf.shape(x)[0]], tf.constant(-np.inf, tf.float32))
            return tf.while_loop(lambda i, _: i < chunks, body, (tf.constant(0), acc))[1]

        fn = _compile_mode.function(sums)
        model._kvae_iwae_sums_fn = fn
    return fn


def iwae_log_likelihood(
    model,
    x,
    num_samples=1000,
    batch_size=100,
    chunk_size=None,
    seed=None,
    *,
    verbose=0,
    y=None,
    offset=0,
):
    """log p(x) per example by importance sampling with K = ``num_samples`` samples.

    Work is done in XLA-compiled chunks of ``chunk_size`` samples per example (default:
    about 4096 decoder rows per call); the chunks' seeds are derived from ``seed`` by folding
    in the batch's first index, then the chunk's first sample, so results do not depend on
    how many examples are evaluated together beyond ``batch_size``. ``y``: the conditions
    of a conditional model (log p(x|y)). ``offset``: the index of ``x[0]`` in a larger data
    set evaluated in pieces (a stream, ``kvae.evaluation.stream``): the seeds are those of
    the whole set's batches, so the pieces give the numbers the whole set gives.

    ``verbose``: 0 silent, 1 Keras' progress bar (one step per batch of examples, with the
    time left), 2 one line when done, "auto" a bar when standard output is a terminal.
    """
    num_samples = positive_int("num_samples", num_samples)
    batch_size = positive_int("batch_size", batch_size)
    model.check_data(x)
    x = np.asarray(x, np.float32)
    y = None if y is None else np.asarray(y)
    if chunk_size is None:
        chunk_size = max(1, min(num_samples, DECODER_ROWS // batch_size))
    chunk_size = positive_int("chunk_size", chunk_size)
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise ConfigError(f"Expected offset to be an integer >= 0. Received: offset={offset!r}.")
    base = model._stateless_seed(seed)
    fn = _sums_fn(model)
    est, se = [], []
    progress = Progress(-(-len(x) // batch_size), verbose)
    for start in range(0, len(x), batch_size):
        xb = tf.constant(x[start : start + batch_size])
        yb = None if y is None else tf.constant(y[start : start + batch_size])
        batch_seed = tf.random.experimental.stateless_fold_in(base, offset + start)
        full, rest = divmod(num_samples, chunk_size)
        parts = []
        if full:
            parts.append(fn(xb, batch_seed, 0, chunk_size, full, yb))
        if rest:  # the last, smaller chunk: its own trace, same seeds as one chunk per call
            parts.append(fn(xb, batch_seed, full * chunk_size, rest, 1, yb))
        lse = tf.reduce_logsumexp(tf.stack(parts), axis=0).numpy().astype(np.float64)
        k = float(num_samples)
        est.append(lse[0] - np.log(k))
        if num_samples > 1:
            ratio = np.exp(lse[1] - 2.0 * lse[0] + np.log(k))  # K sum w^2 / (sum w)^2 in [1, K]
            se.append(np.sqrt(np.maximum(ratio - 1.0, 0.0) / (k - 1.0)))
        else:
            se.append(np.full(lse.shape[1], np.nan))
        progress.advance()
    value = np.concatenate(est)
    info = {"num_samples": num_samples, "chunk_size": chunk_size, "batch_size": batch_size}
    return LogLikelihood(value, np.concatenate(se), "iwae", info)
