"""Test-set evaluation of a trained VAE: the ELBO and its parts, log p(x) by four methods,
the variational gaps, active units and the KL per latent dimension::

    from kvae import evaluation
    metrics = evaluation.evaluate(model, x_test, num_samples=5000)
    ll = evaluation.log_likelihood(model, x_test, method="auto")   # estimates + stderr
    g = evaluation.gaps(model, x_test[:100])                       # inference/approx./amort.
    metrics = evaluation.evaluate(model, test_dataset)   # a tf.data.Dataset: streamed

Modules: ``summary`` (evaluate, active units, KL per dimension), ``loglik`` (the dispatcher),
``iwae``, ``exact``, ``quadrature``, ``ais`` (with BDMC), ``gap`` (the gaps and q*),
``result`` (:class:`LogLikelihood`), ``structure`` (which methods apply to a model),
``joint`` (log p(x, z) and log q(z|x) on many z), ``moments`` (q's mean and scale),
``stream`` (a ``tf.data.Dataset`` read batch by batch, padding left out).

Evaluation computes on a model passed in and returns numbers: it writes no files. Writing
results into a run directory and its TensorBoard log is ``kvae.records``' job; figures
are ``kvae.plots``'.
"""

from kvae.evaluation.ais import ais_log_likelihood, bdmc, simulate
from kvae.evaluation.exact import (
    exact_log_likelihood,
    linear_gaussian_posterior,
    mean_field_gap,
)
from kvae.evaluation.gap import GAP_METHODS, elbo_samples, gaps, optimise_posterior
from kvae.evaluation.iwae import iwae_log_likelihood
from kvae.evaluation.joint import log_joint, log_q
from kvae.evaluation.loglik import METHODS, choose_method, log_likelihood
from kvae.evaluation.moments import q_moments
from kvae.evaluation.quadrature import (
    PosteriorGrid,
    elbo_quadrature,
    grid_points,
    kl_to_posterior,
    posterior_grid,
    quadrature_log_likelihood,
)
from kvae.evaluation.result import LogLikelihood
from kvae.evaluation.stream import first_examples, is_stream
from kvae.evaluation.structure import applicable
from kvae.evaluation.summary import (
    ACTIVE_UNIT_THRESHOLD,
    active_units,
    evaluate,
    kl_per_dimension,
    latent_summary,
    posterior_moments,
    streamed_elbo,
)

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "GAP_METHODS",
    "METHODS",
    "LogLikelihood",
    "PosteriorGrid",
    "active_units",
    "ais_log_likelihood",
    "applicable",
    "bdmc",
    "choose_method",
    "elbo_quadrature",
    "elbo_samples",
    "evaluate",
    "exact_log_likelihood",
    "first_examples",
    "gaps",
    "grid_points",
    "is_stream",
    "iwae_log_likelihood",
    "kl_per_dimension",
    "kl_to_posterior",
    "latent_summary",
    "linear_gaussian_posterior",
    "log_joint",
    "log_likelihood",
    "log_q",
    "mean_field_gap",
    "optimise_posterior",
    "posterior_grid",
    "posterior_moments",
    "q_moments",
    "quadrature_log_likelihood",
    "simulate",
    "streamed_elbo",
]
