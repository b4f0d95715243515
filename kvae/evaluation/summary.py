"""Test-set evaluation of a trained VAE: the ELBO and its parts, an importance-weighted
estimate of log p(x), active units and the KL per latent dimension.

    from kvae import evaluation
    metrics = evaluation.evaluate(model, x_test, num_samples=5000)

All figures are in nats per example.

* ``elbo``, ``reconstruction``, ``kl``, ``loss``: ``model.evaluate`` (one latent sample per
  example, so the ELBO is itself a Monte Carlo estimate).
* ``log_likelihood``: the mean over examples of the importance-weighted bound with K samples
  (Burda et al. 2016, K = 5000 in their tables), ``model.log_likelihood``; it is a lower bound
  of log p(x) that tightens as K grows. ``log_likelihood_stderr`` is the standard error of that
  mean over examples.
* ``active_units``: Burda et al.'s criterion: latent unit u is active when
  ``Cov_x(E_{q(z|x)}[z_u]) > 0.01``, the variance over the data of the posterior mean.
* ``kl_per_dim``: KL(q(z_u|x) || p(z_u)) between the one-dimensional marginals, averaged over
  examples. In closed form when q is Gaussian and the prior a diagonal Gaussian (for a
  diagonal q they sum to ``kl``); by Monte Carlo when the prior is a mixture of diagonal
  Gaussians (marginals of a mixture are mixtures). ``kl_per_dim_method`` says which.
* ``seconds``: how long each estimate took, ``{"elbo", "log_likelihood", "latent"}`` (wall
  clock; the first includes XLA compilation).

For a continuous likelihood (Gaussian, continuous Bernoulli, ...) ``log p(x|z)`` is a log
*density*, which can be above 0: then ``reconstruction`` is negative and ``elbo`` and
``log_likelihood`` positive. That is not a bug; only the Bernoulli and discretised
likelihoods give log probabilities (<= 0). Compare such figures only between models of the
same likelihood family on the same data scale.
"""

import time

import numpy as np
from scipy.special import log_softmax, logsumexp

from kvae._checks import positive_int
from kvae._progress import Progress, resolve_verbose
from kvae.evaluation.loglik import _check_options, choose_method, log_likelihood
from kvae.evaluation.moments import q_moments

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "active_units",
    "evaluate",
    "kl_per_dimension",
    "latent_summary",
    "posterior_moments",
]

ACTIVE_UNIT_THRESHOLD = 0.01
_ENCODE_BATCH = 1000
_KL_MC_SAMPLES = 64


def posterior_moments(model, x, batch_size=_ENCODE_BATCH, *, verbose=0, y=None, seed=0):
    """Posterior means and marginal standard deviations of q(z|x), numpy ``(n, latent_dim)``.

    For a q without closed-form moments (a flow: ``posterior="iaf"``) both are estimated
    from ``MOMENT_SAMPLES`` draws per example (:func:`q_moments`). ``y``: a conditional
    model's conditions. ``verbose``: 0 silent, 1 a progress bar over the batches, 2 one line
    when done, "auto" a bar when standard output is a terminal."""
    import tensorflow as tf

    means, scales = [], []
    batches = -(-len(x) // batch_size)
    with Progress(batches, verbose, title="posterior moments") as progress:
        for start in range(0, len(x), batch_size):
            rows = slice(start, start + batch_size)
            xb = np.asarray(x[rows], np.float32)
            q = model.encode(xb) if y is None else model.encode(xb, np.asarray(y)[rows])
            mean, scale = q_moments(q, seed=tf.constant([seed, start]))
            means.append(mean.astype(np.float32))
            scales.append(scale.astype(np.float32))
            progress.advance()
    return np.concatenate(means), np.concatenate(scales)


def _gaussian_posterior(q):
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    return isinstance(q, (tfd.MultivariateNormalDiag, tfd.MultivariateNormalTriL, tfd.Normal))


def active_units(means, threshold=ACTIVE_UNIT_THRESHOLD):
    """``(count, variances)``: units whose posterior mean varies over the data by > threshold.

    ``means`` are posterior means ``(n, latent_dim)`` (see :func:`posterior_moments`)."""
    variances = np.var(np.asarray(means, np.float64), axis=0)
    return int(np.sum(variances > threshold)), variances


def kl_per_dimension(model, x, *, means=None, scales=None, seed=0, y=None):
    """``(kl, method)``: mean over ``x`` of KL(q(z_u|x) || p(z_u)) for each latent unit u.

    ``kl`` is a numpy array ``(latent_dim,)``, or None when the prior is neither a diagonal
    Gaussian nor a mixture of them (``method`` then says why)."""
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    xb = np.asarray(x[:1], np.float32)
    q = model.encode(xb) if y is None else model.encode(xb, np.asarray(y)[:1])
    if not _gaussian_posterior(q):
        return None, f"unavailable: q(z|x) is a {type(q).__name__}, its marginals are not Gaussian"
    if means is None or scales is None:
        means, scales = posterior_moments(model, x, y=y)
    mu = np.asarray(means, np.float64)
    s = np.asarray(scales, np.float64)
    prior = model.prior_distribution()
    gaussian = (tfd.MultivariateNormalDiag, tfd.MultivariateNormalTriL, tfd.Normal)
    if isinstance(prior, gaussian):
        m = np.asarray(prior.mean(), np.float64)
        t = np.asarray(prior.stddev(), np.float64)
        kl = np.log(t / s) + (s**2 + (mu - m) ** 2) / (2 * t**2) - 0.5
        method = "analytic KL between the Gaussian marginals q(z_u|x) and p(z_u)"
        return kl.mean(axis=0), method
    components = getattr(prior, "components_distribution", None)
    if isinstance(prior, tfd.MixtureSameFamily) and isinstance(
        components, tfd.MultivariateNormalDiag
    ):
        logits = np.asarray(prior.mixture_distribution.logits_parameter(), np.float64)
        log_pi = log_softmax(logits, axis=-1)
        locs = np.asarray(components.mean(), np.float64)  # (C, L)
        sds = np.asarray(components.stddev(), np.float64)  # (C, L)
        rng = np.random.default_rng(seed)
        total = np.zeros(mu.shape[1])
        # Examples per chunk: the (S, B, C, L) array below stays near 2e7 numbers (a VampPrior
        # has C = 500 components: 256 examples at once would be 3 GB).
        step = max(1, min(256, int(2e7 // (_KL_MC_SAMPLES * locs.shape[0] * mu.shape[1]))))
        for start in range(0, len(mu), step):
            m_b, s_b = mu[start : start + step], s[start : start + step]
            eps = rng.standard_normal((_KL_MC_SAMPLES, *m_b.shape))
            z = m_b + s_b * eps  # (S, B, L)
            log_q = _normal_log_pdf(z, m_b, s_b)
            # log p(z_u) = logsumexp_c [log pi_c + log N(z_u; loc_cu, sd_cu)]
            per_c = _normal_log_pdf(z[..., None, :], locs, sds) + log_pi[:, None]  # (S,B,C,L)
            log_p = logsumexp(per_c, axis=-2)
            total += (log_q - log_p).mean(axis=0).sum(axis=0)
        method = (
            f"Monte Carlo ({_KL_MC_SAMPLES} samples per example) of KL between the marginals "
            "q(z_u|x) and the mixture marginal p(z_u)"
        )
        return total / len(mu), method
    return None, f"unavailable: no per-dimension marginals for a {type(prior).__name__} prior"


def _normal_log_pdf(z, loc, scale):
    return -0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)


def evaluate(
    model,
    x,
    num_samples=1000,
    batch_size=100,
    *,
    seed=0,
    verbose=0,
    method="iwae",
    y=None,
    **options,
):
    """Test metrics of ``model`` on ``x`` (numpy, already binarised if the model was trained on
    binary data). See the module docstring for each key.

    Args:
        num_samples: K of the importance-weighted estimate of log p(x) (>= 1; 5000 in Burda et
            al.). Its cost is K decoder passes per example; 0 skips log p(x) (any method).
        batch_size: examples per batch for ``model.evaluate`` and the log p(x) estimate.
        seed: seed of the estimate's samples.
        verbose: 0 silent; 1 a titled progress bar with the time left for each estimate (log
            p(x) by importance sampling; the other methods show their title only); 2 one
            line per estimate when it is done; "auto" 1 when standard output is a terminal,
            else 0 with progress lines on standard error for a step longer than a minute
            (every 10% or every minute, ``kvae._progress``).
        method: the log p(x) method (``"iwae"``, ``"exact"``, ``"quadrature"``, ``"ais"``,
            ``"auto"``, see :func:`kvae.evaluation.log_likelihood`); ``**options`` go to it.
            The result says which method ran in ``log_likelihood_method``, with
            ``log_likelihood_stderr`` (std over examples / sqrt(n)),
            ``log_likelihood_mean_mc_stderr`` (the Monte Carlo error of the mean,
            sqrt(sum se_i^2) / n), ``log_likelihood_example_mc_stderr_rms`` (root-mean-square
            of the per-example Monte Carlo errors) and
            ``log_likelihood_nan_examples`` (indices of examples whose estimate is not finite);
            the errors a standard error does not show: for quadrature
            ``log_likelihood_resolution_error`` and ``_resolution_tol`` (the grid's
            resolution check, nats), for AIS ``log_likelihood_bias_indicator`` (the
            estimate minus the estimate at half the temperatures).
        y: the conditions of ``x`` for a conditional model (``kvae.VAE(condition=...)``);
            its log p(x|y) is estimated by IWAE, the one method that takes a condition
            (:func:`kvae.evaluation.log_likelihood` refuses the others).
    """
    if num_samples != 0:
        positive_int("num_samples", num_samples)
    batch_size = positive_int("batch_size", batch_size)
    # "auto" without a terminal still reaches the loops: their progress lines on standard
    # error for a step longer than a minute (kvae._progress).
    inner = verbose if isinstance(verbose, str) and verbose == "auto" else None
    verbose = resolve_verbose(verbose)
    inner = verbose if inner is None else inner
    x = np.asarray(x, np.float32)
    model.check_data(x)
    chosen = choose_method(model, method) if num_samples else None
    if chosen == "iwae":
        options = dict(
            options, num_samples=num_samples, batch_size=batch_size, seed=seed, verbose=inner
        )
    elif chosen == "ais":
        options = dict(options, seed=seed)
    elif chosen == "quadrature":
        options = dict(options, verbose=inner)
    if chosen is not None:  # refuse bad options before the (long) model.evaluate
        _check_options(chosen, options)
    seconds = {}
    start = time.perf_counter()
    _title(verbose, f"ELBO of {len(x)} examples (model.evaluate, one latent sample each)")
    result = {
        k: float(v)
        for k, v in model.evaluate(
            x, y, batch_size=batch_size, return_dict=True, verbose=verbose
        ).items()
    }
    seconds["elbo"] = time.perf_counter() - start
    result["num_examples"] = int(len(x))
    if chosen is not None:
        start = time.perf_counter()
        what = f"importance-weighted bound, K={num_samples}" if chosen == "iwae" else chosen
        _title(verbose, f"log p(x): {what}")
        ll = log_likelihood(model, x, method=chosen, y=y, **options)
        seconds["log_likelihood"] = time.perf_counter() - start
        result.update(ll.summary())
        if chosen == "iwae":
            result["log_likelihood_num_samples"] = int(num_samples)
    start = time.perf_counter()
    _title(verbose, "Active units and KL per dimension (posterior moments)")
    result.update(latent_summary(model, x, verbose=inner, y=y))
    seconds["latent"] = time.perf_counter() - start
    result["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return result


def _title(verbose, text):
    if verbose:
        print(text, flush=True)


def latent_summary(model, x, *, seed=0, verbose=0, y=None):
    """Active units and per-dimension KL of ``x`` (one encoder pass), as a JSON-able dict.
    ``y``: a conditional model's conditions."""
    means, scales = posterior_moments(model, x, verbose=verbose, y=y, seed=seed)
    count, variances = active_units(means)
    kl, method = kl_per_dimension(model, x, means=means, scales=scales, seed=seed, y=y)
    return {
        "active_units": count,
        "active_units_threshold": ACTIVE_UNIT_THRESHOLD,
        "latent_dim": int(means.shape[1]),
        "posterior_mean_variance": [float(v) for v in variances],
        "kl_per_dim": None if kl is None else [float(v) for v in kl],
        "kl_per_dim_method": method,
    }
