"""Test-set evaluation of a trained VAE: the ELBO and its parts, log p(x) by four methods,
the variational gaps, active units and the KL per latent dimension.

    from kvae import evaluation
    metrics = evaluation.evaluate(model, x_test, num_samples=5000)
    ll = evaluation.log_likelihood(model, x_test, method="auto")   # estimates + stderr
    g = evaluation.gaps(model, x_test[:100])                       # inference/approx./amort.

Modules: ``summary`` (evaluate, active units, KL per dimension), ``loglik`` (the dispatcher),
``iwae``, ``exact``, ``quadrature``, ``ais`` (with BDMC), ``gap`` (the gaps), ``result``
(:class:`LogLikelihood`), ``structure`` (which methods apply to a model).
"""

from kvae.evaluation.ais import ais_log_likelihood, bdmc, simulate
from kvae.evaluation.exact import (
    exact_log_likelihood,
    linear_gaussian_posterior,
    mean_field_gap,
)
from kvae.evaluation.gap import gaps
from kvae.evaluation.iwae import iwae_log_likelihood
from kvae.evaluation.loglik import METHODS, choose_method, log_likelihood
from kvae.evaluation.quadrature import (
    elbo_quadrature,
    kl_to_posterior,
    posterior_grid,
    quadrature_log_likelihood,
)
from kvae.evaluation.records import record_metrics
from kvae.evaluation.result import LogLikelihood
from kvae.evaluation.structure import applicable
from kvae.evaluation.summary import (
    ACTIVE_UNIT_THRESHOLD,
    active_units,
    evaluate,
    kl_per_dimension,
    latent_summary,
    posterior_moments,
)

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "METHODS",
    "LogLikelihood",
    "active_units",
    "ais_log_likelihood",
    "applicable",
    "bdmc",
    "choose_method",
    "elbo_quadrature",
    "evaluate",
    "exact_log_likelihood",
    "gaps",
    "iwae_log_likelihood",
    "kl_per_dimension",
    "kl_to_posterior",
    "latent_summary",
    "linear_gaussian_posterior",
    "log_likelihood",
    "mean_field_gap",
    "posterior_grid",
    "posterior_moments",
    "quadrature_log_likelihood",
    "record_metrics",
    "simulate",
]
