"""log p(x, z) = log p(x|z) + log p(z) for many z per example, XLA-compiled, in fixed-shape
chunks (padded, so one trace serves a whole data set)."""

import numpy as np
import tensorflow as tf

from kvae import _compile_mode, objectives

__all__ = ["log_joint", "log_joint_fn", "log_q"]

# Decoder rows per compiled call. The [rows, D] likelihood parameters of one call are
# written and read back once; at 784 pixels, 4096 rows (12.8 MB) stay within a CPU's cache
# far better than 16384 (51 MB) or 32768 did (scripts/benchmark_loglik.py).
DECODER_ROWS = 4096


def log_joint_fn(model):
    """A compiled ``(x [B, *event], z [P, B, L]) -> log p(x, z) [P, B]`` for ``model``."""
    fn = getattr(model, "_kvae_log_joint_fn", None)
    if fn is None:

        def log_joint_tf(x, z):
            target = model.likelihood_head.prepare(x)
            log_px = objectives._log_prob(model.decode(z), target)
            return log_px + tf.cast(model.prior_distribution().log_prob(z), log_px.dtype)

        fn = _compile_mode.function(log_joint_tf)
        model._kvae_log_joint_fn = fn
    return fn


def log_joint(model, x, z, max_rows=DECODER_ROWS):
    """log p(x, z) as float64 numpy ``[P, B]`` for numpy ``x [B, ...]`` and ``z [P, B, L]``.

    The P points go in equal calls of at most ``max_rows`` decoder rows (the last padded by
    a few points at most, so one trace serves every call of a grid's size)."""
    fn = log_joint_fn(model)
    p, b = z.shape[0], z.shape[1]
    calls = -(-p * b // max_rows)
    per_call = max(1, -(-p // calls))
    xb = tf.constant(np.asarray(x, np.float32))
    out = []
    for start in range(0, p, per_call):
        zc = z[start : start + per_call]
        pad = per_call - len(zc) if p > per_call else 0
        if pad:
            zc = np.concatenate([zc, np.repeat(zc[-1:], pad, axis=0)])
        val = fn(xb, tf.constant(zc, tf.float32)).numpy().astype(np.float64)
        out.append(val[: len(val) - pad])
    return np.concatenate(out)


def log_q(q, z):
    """log q(z|x) as float64 numpy ``[P, B]`` for ``z [P, B, L]``."""
    return np.asarray(q.log_prob(tf.constant(z, tf.float32)), np.float64)
