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

from kvae import objectives
from kvae._checks import positive_int
from kvae._progress import Progress
from kvae.evaluation.result import LogLikelihood

__all__ = ["iwae_log_likelihood"]

# Decoder rows per compiled call. The [rows, D] logits of one call are written and read
# back once; at 784 pixels, 4096 rows (12.8 MB) stay within a CPU's cache far better than
# 16384 (51 MB) did (see scripts/benchmark_loglik.py).
DEFAULT_ROWS = 4096


def _sums_fn(model):
    fn = getattr(model, "_kvae_iwae_sums_fn", None)
    if fn is None:

        def sums(x, seed, s, y=None):
            # y: a conditional model's conditions (kvae.VAE(condition=...)), else None.
            q = model.encode(x) if y is None else model.encode(x, y)
            z = q.sample(s, seed=seed)
            decode = model.decode if y is None else (lambda z: model.decode(z, y))
            lw = objectives.log_weights(
                model.likelihood_head.prepare(x), q, model.prior_distribution(), decode, z
            )
            return tf.stack(
                [tf.reduce_logsumexp(lw, axis=0), tf.reduce_logsumexp(2.0 * lw, axis=0)]
            )

        fn = tf.function(sums, jit_compile=True, reduce_retracing=False)
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
):
    """log p(x) per example by importance sampling with K = ``num_samples`` samples.

    Work is done in XLA-compiled chunks of ``chunk_size`` samples per example (default:
    about 4096 decoder rows per call); the chunks' seeds are derived from ``seed`` by folding
    in the batch's first index, then the chunk's first sample, so results do not depend on
    how many examples are evaluated together beyond ``batch_size``. ``y``: the conditions
    of a conditional model (log p(x|y)).

    ``verbose``: 0 silent, 1 Keras' progress bar (one step per batch of examples, with the
    time left), 2 one line when done, "auto" a bar when standard output is a terminal.
    """
    num_samples = positive_int("num_samples", num_samples)
    batch_size = positive_int("batch_size", batch_size)
    model.check_data(x)
    x = np.asarray(x, np.float32)
    y = None if y is None else np.asarray(y)
    if chunk_size is None:
        chunk_size = max(1, min(num_samples, DEFAULT_ROWS // batch_size))
    chunk_size = positive_int("chunk_size", chunk_size)
    base = model._stateless_seed(seed)
    fn = _sums_fn(model)
    est, se = [], []
    progress = Progress(-(-len(x) // batch_size), verbose)
    for start in range(0, len(x), batch_size):
        xb = tf.constant(x[start : start + batch_size])
        yb = None if y is None else tf.constant(y[start : start + batch_size])
        batch_seed = tf.random.experimental.stateless_fold_in(base, start)
        parts = []
        done = 0
        while done < num_samples:
            s = min(chunk_size, num_samples - done)
            seed_i = tf.random.experimental.stateless_fold_in(batch_seed, done)
            parts.append(fn(xb, seed_i, s, yb))
            done += s
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
