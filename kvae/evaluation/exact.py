"""Closed forms of the linear-Gaussian model (probabilistic PCA; Tipping & Bishop 1999).

With p(z) = N(0, I_d) and p(x|z) = N(W^T z + b, Sigma), Sigma = diag(sigma2):

    log p(x)            = log N(x; b, W^T W + Sigma)
    p(z|x)              = N(m, L^-1),  L = I_d + W Sigma^-1 W^T,  m = L^-1 W Sigma^-1 (x - b)
    best mean-field q   = N(m, diag(1 / L_ii)),  KL(q || p(z|x)) = 0.5 (sum_i log L_ii - log det L)

(W is stored ``(d, D)`` as the Dense layer holds it.) Everything in float64 numpy.
"""

import numpy as np

from kvae.evaluation.result import LogLikelihood
from kvae.evaluation.structure import linear_gaussian, require

__all__ = ["exact_log_likelihood", "linear_gaussian_posterior", "mean_field_gap"]


def _params(model):
    require(model, "exact")
    return linear_gaussian(model)


def exact_log_likelihood(model, x):
    """log N(x; b, W^T W + Sigma) per example, as a :class:`LogLikelihood` (stderr 0)."""
    w, b, s2 = _params(model)
    diff = np.asarray(x, np.float64).reshape(len(x), -1) - b
    cov = w.T @ w + np.diag(s2)
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, diff.T)  # (D, n)
    logdet = 2 * np.sum(np.log(np.diag(chol)))
    dim = diff.shape[1]
    value = -0.5 * (dim * np.log(2 * np.pi) + logdet + np.sum(sol**2, axis=0))
    return LogLikelihood(value, np.zeros_like(value), "exact", {"dim": dim})


def linear_gaussian_posterior(model, x):
    """``(means (n, d), precision (d, d))`` of the true posterior p(z|x) (shared precision)."""
    w, b, s2 = _params(model)
    diff = np.asarray(x, np.float64).reshape(len(x), -1) - b
    prec = np.eye(w.shape[0]) + (w / s2) @ w.T
    means = np.linalg.solve(prec, (w / s2) @ diff.T).T
    return means, prec


def mean_field_gap(precision):
    """KL from the best diagonal Gaussian to N(m, precision^-1): 0.5 (sum log L_ii - log det L)."""
    _, logdet = np.linalg.slogdet(precision)
    return 0.5 * (np.sum(np.log(np.diag(precision))) - logdet)
