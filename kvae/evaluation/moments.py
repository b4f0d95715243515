"""The mean and marginal standard deviations of a posterior q(z|x): in closed form when its
distribution has them, else from samples (a flow, ``posterior="iaf"``)."""

import numpy as np

__all__ = ["MOMENT_SAMPLES", "q_moments"]

# Draws per example when q has no closed-form moments.
MOMENT_SAMPLES = 256


def q_moments(q, num_samples=MOMENT_SAMPLES, seed=(0, 1)):
    """``(mean, stddev)`` of the distribution ``q`` (batch ``[B, L]``), float64 numpy.

    In closed form when ``q.mean()`` and ``q.stddev()`` both exist (the Gaussian posteriors).
    When TFP raises NotImplementedError for either (a flow: IAF's ``mean()`` is the image of
    the base mean, not E[z], and it has no ``stddev()``) both are estimated from
    ``num_samples`` draws with the stateless ``seed`` pair (standard deviation with
    ddof=1).

    Args:
        q: a TFP distribution with event shape ``[L]``, e.g. ``model.encode(x)``.
        num_samples: draws per example for the sampling fallback (>= 2).
        seed: the stateless seed of those draws, a pair of integers or an int32 tensor.
    """
    try:
        return np.asarray(q.mean(), np.float64), np.asarray(q.stddev(), np.float64)
    except NotImplementedError:
        z = np.asarray(q.sample(num_samples, seed=seed), np.float64)
        return z.mean(axis=0), z.std(axis=0, ddof=1)
