"""Test-set evaluation of a trained VAE: the ELBO and its parts, an importance-weighted
estimate of log p(x), active units and the KL per latent dimension.

    from kvae import evaluation
    metrics = evaluation.evaluate(model, x_test, num_samples=5000)
    metrics = evaluation.evaluate(model, test_dataset)   # a tf.data stream, batch by batch

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

Every function here takes the data as a numpy array or as a ``tf.data.Dataset`` of batches
(kvae's padded ``(x, y, weight)`` batches, ``(x, y)`` or ``x``; ``kvae.evaluation.stream``):
a dataset is streamed, its padded rows (weight 0) left out, and only numbers per example
(log p(x), the posterior moments) are kept, never the images. A conditional model's
conditions are then the elements' y. On the same examples, in the same order and with the
same ``batch_size`` and seed, a dataset gives the numbers an array gives.
"""

import time

import numpy as np
from scipy.special import log_softmax, logsumexp

from kvae._checks import positive_int
from kvae._progress import Progress, resolve_verbose
from kvae.errors import ConfigError
from kvae.evaluation.loglik import _check_options, choose_method, log_likelihood
from kvae.evaluation.moments import q_moments
from kvae.evaluation.stream import (
    chunks,
    first_examples,
    is_stream,
    limited,
    no_y_with_a_dataset,
    num_rows_bound,
)

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "active_units",
    "evaluate",
    "kl_per_dimension",
    "latent_summary",
    "posterior_moments",
    "streamed_elbo",
]

ACTIVE_UNIT_THRESHOLD = 0.01
_ENCODE_BATCH = 1000
_KL_MC_SAMPLES = 64


def posterior_moments(model, x, batch_size=None, *, verbose=0, y=None, seed=0, max_examples=None):
    """Posterior means and marginal standard deviations of q(z|x), numpy ``(n, latent_dim)``.

    ``x``: an array, or a dataset (streamed; a conditional model's conditions are then its
    elements' y). ``batch_size``: examples per encoder pass (default 1000 for an array, the
    dataset's own batch size for a dataset). ``max_examples``: only the first examples.

    For a q without closed-form moments (a flow: ``posterior="iaf"``) both are estimated
    from ``MOMENT_SAMPLES`` draws per example (:func:`q_moments`). ``y``: a conditional
    model's conditions. ``verbose``: 0 silent, 1 a progress bar over the batches, 2 one line
    when done, "auto" a bar when standard output is a terminal."""
    import tensorflow as tf

    if is_stream(x):
        x = limited(x, max_examples)
    elif max_examples is not None:
        x, y = x[:max_examples], (None if y is None else y[:max_examples])
    means, scales = [], []
    pieces, batches = _pieces(model, x, y, batch_size)
    with Progress(batches, verbose, title="posterior moments") as progress:
        for start, xb, yb in pieces:
            q = model.encode(xb) if yb is None else model.encode(xb, yb)
            mean, scale = q_moments(q, seed=tf.constant([seed, start]))
            means.append(mean.astype(np.float32))
            scales.append(scale.astype(np.float32))
            progress.advance()
    return np.concatenate(means), np.concatenate(scales)


def _pieces(model, x, y, batch_size):
    """``((start, x, y) numpy batches, how many)`` of an array or a dataset."""
    if is_stream(x):
        no_y_with_a_dataset(y)
        size = _stream_batch(x, batch_size)
        bound = num_rows_bound(x)
        conditional = getattr(model, "condition", None) is not None
        return chunks(x, size, with_y=conditional), (-(-bound // size) if bound else 0)
    y = None if y is None else np.asarray(y)
    batch_size = batch_size or _ENCODE_BATCH
    starts = range(0, len(x), batch_size)
    pieces = (
        (
            s,
            np.asarray(x[s : s + batch_size], np.float32),
            None if y is None else y[s : s + batch_size],
        )
        for s in starts
    )
    return pieces, len(starts)


def _stream_batch(data, batch_size):
    """Rows per chunk of a dataset: ``batch_size`` if given, else its static batch size."""
    if batch_size is not None:
        return positive_int("batch_size", batch_size)
    spec = data.element_spec
    first = spec[0] if isinstance(spec, tuple) else spec
    static = first.shape[0] if first.shape.rank else None
    return int(static or _ENCODE_BATCH)


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
    if is_stream(x):
        conditional = getattr(model, "condition", None) is not None
        xb, yb = first_examples(x, 1, with_y=conditional)
    else:
        xb, yb = np.asarray(x[:1], np.float32), (None if y is None else np.asarray(y)[:1])
    q = model.encode(xb) if yb is None else model.encode(xb, yb)
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
    max_examples=None,
    return_log_likelihood=False,
    **options,
):
    """Test metrics of ``model`` on ``x`` (numpy, already binarised if the model was trained on
    binary data, or a ``tf.data.Dataset`` of batches, streamed: see the module docstring).
    See the module docstring for each key.

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
            (:func:`kvae.evaluation.log_likelihood` refuses the others). None with a
            dataset, whose elements' y are the conditions.
        max_examples: only the first examples of ``x`` (None: all of them). Needed for
            ``method="ais"`` on a dataset (AIS takes its examples as one array).
        return_log_likelihood: also return the per-example log p(x) result
            (:class:`~kvae.evaluation.LogLikelihood`, None with ``num_samples=0``), as
            ``(metrics, result)``: ``gaps(..., log_likelihood_result=result.head(n))`` then
            reuses it for the first ``n`` examples instead of estimating log p(x) again.
    """
    if num_samples != 0:
        positive_int("num_samples", num_samples)
    batch_size = positive_int("batch_size", batch_size)
    # "auto" without a terminal still reaches the loops: their progress lines on standard
    # error for a step longer than a minute (kvae._progress).
    inner = verbose if isinstance(verbose, str) and verbose == "auto" else None
    verbose = resolve_verbose(verbose)
    inner = verbose if inner is None else inner
    streamed = is_stream(x)
    if streamed:
        no_y_with_a_dataset(y)
        data = x
        x = limited(x, max_examples)
    else:
        x = np.asarray(x, np.float32)[:max_examples]
        y = None if y is None else y[:max_examples]
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
    if streamed:
        _title(verbose, "ELBO of the dataset's examples (one latent sample each)")
        result = streamed_elbo(model, x, batch_size, verbose=verbose)
    else:
        _title(verbose, f"ELBO of {len(x)} examples (model.evaluate, one latent sample each)")
        scores = model.evaluate(x, y, batch_size=batch_size, return_dict=True, verbose=verbose)
        result = {k: float(v) for k, v in scores.items()}
        result["num_examples"] = int(len(x))
    seconds["elbo"] = time.perf_counter() - start
    if chosen == "ais" and streamed:  # AIS takes its (bounded) examples as one array
        x, options = data, dict(options, max_examples=max_examples)
    ll = None
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
    # A dataset in chunks of batch_size (never more rows at once); an array as before.
    chunk = batch_size if streamed else None
    result.update(latent_summary(model, x, verbose=inner, y=y, batch_size=chunk))
    seconds["latent"] = time.perf_counter() - start
    result["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return (result, ll) if return_log_likelihood else result


def streamed_elbo(model, data, batch_size, *, verbose=0):
    """``model.evaluate``'s metrics (and ``num_examples``) on a dataset, in chunks of
    ``batch_size`` real rows: one test step per chunk, each drawing the next seed of the
    model's generator, as ``model.evaluate(x, batch_size=batch_size)`` does batch by batch
    on the same examples as an array, so the numbers are those. (Keras' own loop over
    kvae's padded batches draws the noise for a whole padded batch, which moves the real
    rows' noise in the last one.)"""
    conditional = getattr(model, "condition", None) is not None
    size = positive_int("batch_size", batch_size)
    bound = num_rows_bound(data)
    sums, count = {}, 0
    with Progress(-(-bound // size) if bound else 0, verbose, title="ELBO") as progress:
        for _, xb, yb in chunks(data, size, with_y=conditional):
            scores = model.test_on_batch(xb, yb, return_dict=True)
            for k, v in scores.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(xb)
            count += len(xb)
            progress.advance()
    if not count:
        raise ConfigError("Expected a dataset with at least one example. Received: none.")
    result = {k: v / count for k, v in sums.items()}
    result["num_examples"] = count
    return result


def _title(verbose, text):
    if verbose:
        print(text, flush=True)


def latent_summary(model, x, *, seed=0, verbose=0, y=None, batch_size=None, max_examples=None):
    """Active units and per-dimension KL of ``x`` (one encoder pass), as a JSON-able dict.
    ``x``: an array or a dataset (streamed); ``y``: a conditional model's conditions (None
    with a dataset: its elements' y); ``batch_size``: as :func:`posterior_moments`;
    ``max_examples``: only the first examples of ``x``."""
    means, scales = posterior_moments(
        model, x, batch_size=batch_size, verbose=verbose, y=y, seed=seed, max_examples=max_examples
    )
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
