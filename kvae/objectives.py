"""Variational objectives: pure functions of TFP distributions and samples.

Notation. ``x`` is a batch of data, ``q(z|x)`` the posterior (approximate, from the
encoder), ``p(z)`` the prior and ``p(x|z)`` the likelihood (from the decoder). For any q,

    log p(x) = ELBO(q) + KL(q(z|x) || p(z|x))
    ELBO(q)  = E_q[log p(x|z)] - KL(q(z|x) || p(z))

and KL >= 0, so ELBO(q) <= log p(x), with equality iff q(z|x) = p(z|x). The importance-
weighted bound of Burda et al. (2016),

    L_K = E[ log (1/K) sum_k w_k ],   w_k = p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x),

satisfies ELBO = L_1 <= L_K <= L_{K+1} <= log p(x), and L_K -> log p(x) as K -> infinity.

Every function here is stateless and free of Python side effects on tensors, so it traces
inside ``tf.function(jit_compile=True)``. Randomness comes only from ``seed``, passed on to
``dist.sample(..., seed=seed)``: a stateless seed (a shape-[2] integer tensor) gives the
same numbers on every call. XLA and TensorFlow's own kernels implement the stateless
generators differently, so the same seed draws *different* ``z`` with and without
``jit_compile``; each is reproducible on its own.

Shapes. ``x`` is ``[B, *event]``; ``q(z|x)`` has batch shape ``[B]`` and event shape
``[L]``; ``p(z)`` has batch shape ``[]`` (or one that broadcasts against ``[B]``) and event
``[L]``; ``decode(z)`` maps ``z`` of shape ``[S, B, L]`` to ``p(x|z)`` with batch shape
``[S, B]`` and event shape = x's event shape. Every estimate is returned per example, shape
``[B]``; reduce it (mean over the batch) where a scalar loss is needed.
"""

import math
import numbers

import tensorflow as tf
import tensorflow_probability as tfp

from kvae._choices import FREE_BITS_MODES, KL_METHODS
from kvae.errors import ConfigError

tfd = tfp.distributions

__all__ = [
    "FREE_BITS_MODES",
    "KL_METHODS",
    "check_free_bits",
    "elbo",
    "free_bits_kl",
    "iwae_bound",
    "iwae_from_chunks",
    "kl_divergence",
    "kl_per_dimension",
    "kl_per_group",
    "kl_pieces",
    "log_weights",
]


# ---------------------------------------------------------------------------- checks


def _check_kl_method(name, value):
    if value not in KL_METHODS:
        raise ConfigError(
            f"Expected {name} to be one of {', '.join(map(repr, KL_METHODS))}. "
            f"Received: {name}={value!r}"
        )


def _check_num_samples(num_samples):
    """Returns ``num_samples`` as a Python int >= 1 (it fixes shapes, so it must be static)."""
    value = num_samples
    if isinstance(value, (tf.Tensor, tf.Variable)):
        value = tf.get_static_value(value)
        if value is not None and getattr(value, "ndim", 0) == 0:
            value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(
            "Expected num_samples to be a Python integer >= 1 (it fixes the sample shape, "
            f"so it must be known when the function is traced). Received: num_samples={num_samples!r}"
        )
    if value < 1:
        raise ConfigError(f"Expected num_samples >= 1. Received: num_samples={num_samples!r}")
    return int(value)


def _check_beta(beta):
    if isinstance(beta, bool):
        raise ConfigError(f"Expected beta to be a number >= 0. Received: beta={beta!r}")
    if isinstance(beta, numbers.Real) and not (beta >= 0 and math.isfinite(beta)):
        raise ConfigError(f"Expected beta to be a finite number >= 0. Received: beta={beta!r}")


def _describe(dist):
    return f"{type(dist).__name__}(batch_shape={dist.batch_shape}, event_shape={dist.event_shape})"


def _check_sample_rank(value, expected_rank, what, dist, hint):
    """Static check that a log-density has one value per (sample, example), nothing more."""
    rank = value.shape.rank
    if rank is not None and expected_rank is not None and rank != expected_rank:
        raise ConfigError(
            f"Expected {what} to have rank {expected_rank} (one value per sample and "
            f"example). Received: rank {rank}, shape {value.shape}, from {_describe(dist)}. "
            f"{hint}"
        )


_INDEPENDENT_HINT = (
    "If the distribution treats data dimensions as batch dimensions, wrap it in "
    "tfd.Independent(..., reinterpreted_batch_ndims=...) so they become event dimensions."
)


def _log_prob(dist, value):
    """``dist.log_prob(value)`` with the data's dtype handled.

    A floating ``value`` is cast to a floating ``dist``'s dtype (float16 data and a float32
    likelihood under mixed precision; float64 numpy data). For an integer-dtype ``dist``
    such as ``Bernoulli`` (int32 by default) the value is first made a tensor of its own
    dtype: TFP would otherwise convert a float64 numpy array to int32 and silently floor
    continuous targets (0.6 -> 0); ``Bernoulli`` casts a float tensor to float itself.
    """
    dtype = dist.dtype
    if isinstance(dtype, tf.DType) and dtype.is_floating:
        value = tf.convert_to_tensor(value, dtype_hint=dtype)
        if value.dtype.is_floating and value.dtype != dtype:
            value = tf.cast(value, dtype)
    elif not tf.is_tensor(value):
        value = tf.convert_to_tensor(value)
    return dist.log_prob(value)


def _expected_sample_rank(posterior):
    rank = posterior.batch_shape.rank
    return None if rank is None else rank + 1


# ---------------------------------------------------------------------------- KL


def _analytic_kl(posterior, prior):
    """``tfd.kl_divergence`` or None when TFP has no formula for this pair.

    TFP raises NotImplementedError while *building* the graph (before any op runs) when no
    KL is registered for the pair, also for ``Independent`` pairs whose inner pair is
    unregistered, so the try/except below decides at trace time and never puts anything
    XLA cannot compile into the graph.
    """
    try:
        return tfd.kl_divergence(posterior, prior)
    except NotImplementedError:
        return None


def _mc_kl(posterior, prior, z):
    """(1/S) sum_s [log q(z_s) - log p(z_s)], z_s the rows of ``z`` along axis 0."""
    log_q = posterior.log_prob(z)
    log_p = prior.log_prob(z)
    diff = log_q - log_p
    _check_sample_rank(
        diff,
        _expected_sample_rank(posterior),
        "log q(z) - log p(z)",
        posterior,
        "Expected z of shape [S, *batch, *event] with S samples along axis 0. " + _INDEPENDENT_HINT,
    )
    return tf.reduce_mean(diff, axis=0)


def kl_divergence(posterior, prior, *, z=None, method="auto"):
    """KL(q || p) per example: the divergence of ``posterior`` q from ``prior`` p.

        KL(q || p) = E_q[log q(z) - log p(z)]  >= 0.

    For example KL(N(mu, diag sigma^2) || N(0, I)) = 0.5 sum_l (mu_l^2 + sigma_l^2 - 1 -
    log sigma_l^2).

    Args:
      posterior: q, a TFP distribution with batch shape ``[B]`` (any batch shape works).
      prior: p, a TFP distribution over the same event space; its batch shape broadcasts
        against the posterior's.
      z: samples from q of shape ``[S, *batch, *event]`` (sample axis 0); needed by
        ``method="mc"`` and by ``"auto"`` when it falls back to Monte Carlo.
      method: ``"analytic"``: TFP's registered formula (``tfd.kl_divergence``);
        ``"mc"``: the Monte Carlo estimate (1/S) sum_s [log q(z_s) - log p(z_s)], unbiased,
        with standard error std(log q - log p) / sqrt(S), differentiable through z if z
        was reparameterised; ``"auto"``: analytic when TFP has a formula for the pair,
        else Monte Carlo.

    Returns:
      A tensor of shape ``posterior.batch_shape`` (broadcast with the prior's).

    Raises:
      ConfigError: for an unknown ``method``, ``method="analytic"`` for a pair TFP has no
        formula for, or a Monte Carlo estimate without ``z``.
    """
    _check_kl_method("method", method)
    if method in ("analytic", "auto"):
        kl = _analytic_kl(posterior, prior)
        if kl is not None:
            return kl
        if method == "analytic":
            raise ConfigError(
                "Expected a posterior and prior with an analytic KL divergence registered in "
                f"TensorFlow Probability. Received: posterior={type(posterior).__name__}, "
                f"prior={type(prior).__name__}, for which TFP has no KL formula. Use "
                "kl='mc' (Monte Carlo) or kl='auto' (analytic when available, else Monte "
                "Carlo)."
            )
    if z is None:
        raise ConfigError(
            "Expected samples z from the posterior for a Monte Carlo KL estimate"
            + (
                f" (TFP has no analytic KL for posterior={type(posterior).__name__} and "
                f"prior={type(prior).__name__})"
                if method == "auto"
                else ""
            )
            + ". Received: z=None. Pass z=posterior.sample(num_samples, seed=seed)."
        )
    return _mc_kl(posterior, prior, z)


# ---------------------------------------------------------------------------- ELBO


def _likelihood_log_prob(x, posterior, decode, z):
    """log p(x|z_s) for every sample and example: shape [S, B]."""
    likelihood = decode(z)
    log_px = _log_prob(likelihood, x)
    _check_sample_rank(
        log_px,
        _expected_sample_rank(posterior),
        "decode(z).log_prob(x)",
        likelihood,
        "decode(z) must return p(x|z) with batch shape [S, B] and event shape equal to "
        "x's event shape. " + _INDEPENDENT_HINT,
    )
    return log_px


def elbo(x, posterior, prior, decode, *, seed, num_samples=1, kl="auto", beta=1.0):
    """Per-example evidence lower bound and the (beta-weighted) training loss.

    With z_1..z_S ~ q(z|x) drawn by reparameterisation (z = g(eps, x), so gradients reach
    q's parameters),

        reconstruction = -(1/S) sum_s log p(x | z_s)          (nats; >= 0 for discrete x)
        kl             = KL(q(z|x) || p(z))                   (analytic, or MC on the same z_s)
        elbo           = -(reconstruction + kl)               (<= log p(x) in expectation)
        loss           = reconstruction + beta * kl           (what training minimises)

    ``beta = 1`` gives loss = -elbo; ``beta != 1`` is the beta-VAE (Higgins et al. 2017), and
    a ``beta`` that grows from 0 to 1 is KL annealing (Bowman et al. 2016).

    Args:
      x: a batch of data, ``[B, *event]``.
      posterior: q(z|x), batch shape ``[B]``, event ``[L]``; fully reparameterised for
        gradients to reach the encoder.
      prior: p(z), batch shape ``[]``, event ``[L]``.
      decode: a callable ``z -> p(x|z)``; gets ``z`` of shape ``[S, B, L]`` and returns a
        distribution with batch shape ``[S, B]`` and event shape = x's event shape.
      seed: passed to ``posterior.sample``; a stateless seed (shape-[2] int32 tensor) for
        reproducible results and for XLA.
      num_samples: S >= 1, a Python int.
      kl: ``"auto"``, ``"analytic"`` or ``"mc"``, see :func:`kl_divergence`.
      beta: the KL weight in ``loss``: a Python float >= 0 or a scalar tensor.

    Returns:
      A dict with ``"loss"``, ``"elbo"``, ``"reconstruction"`` and ``"kl"``, each of shape
      ``[B]``, and ``"z"``, the samples ``[S, B, L]``, for callers to reuse.
    """
    num_samples = _check_num_samples(num_samples)
    _check_kl_method("kl", kl)
    _check_beta(beta)

    z = posterior.sample(num_samples, seed=seed)
    reconstruction = -tf.reduce_mean(_likelihood_log_prob(x, posterior, decode, z), axis=0)
    kl_value = kl_divergence(posterior, prior, z=z, method=kl)
    kl_value = tf.cast(kl_value, reconstruction.dtype)
    beta = tf.cast(beta, reconstruction.dtype)
    return {
        "loss": reconstruction + beta * kl_value,
        "elbo": -(reconstruction + kl_value),
        "reconstruction": reconstruction,
        "kl": kl_value,
        "z": z,
    }


# ---------------------------------------------------------------------------- IWAE


def log_weights(x, posterior, prior, decode, z):
    """Log importance weights log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x), ``[S, B]``.

    For samples z_s ~ q(z|x), E_q[w_s] = p(x); so (1/S) sum_s w_s is an unbiased estimate
    of p(x) and its log is the importance-weighted bound. Use this with
    :func:`iwae_from_chunks` to estimate log p(x) with more samples than fit in memory at once.

    Args:
      x: data ``[B, *event]``.
      posterior, prior, decode: as in :func:`elbo`.
      z: samples ``[S, B, L]`` (from ``posterior.sample(S, seed=...)``).
    """
    log_px = _likelihood_log_prob(x, posterior, decode, z)
    log_pz = prior.log_prob(z)
    log_qz = posterior.log_prob(z)
    _check_sample_rank(
        log_qz,
        _expected_sample_rank(posterior),
        "log q(z|x)",
        posterior,
        _INDEPENDENT_HINT,
    )
    return log_px + tf.cast(log_pz, log_px.dtype) - tf.cast(log_qz, log_px.dtype)


def _log_mean_exp(log_w, axis=0):
    """log (1/S) sum_s exp(log_w_s), through logsumexp (no overflow or underflow)."""
    count = tf.cast(tf.shape(log_w)[axis], log_w.dtype)
    return tf.reduce_logsumexp(log_w, axis=axis) - tf.math.log(count)


def iwae_bound(x, posterior, prior, decode, *, seed, num_samples):
    """Importance-weighted lower bound on log p(x) (Burda et al. 2016), per example ``[B]``.

        L_K = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_1..z_K ~ q(z|x),

    computed as logsumexp_k(log w_k) - log K. For K = 1 it is the single-sample ELBO
    estimate with a Monte Carlo KL; E[L_K] grows with K towards log p(x) (for large K its
    shortfall is about Var_q(w) / (2 K p(x)^2)). With a reparameterised q it is also the
    IWAE training objective.

    Args:
      x, posterior, prior, decode, seed: as in :func:`elbo`.
      num_samples: K >= 1, a Python int.
    """
    num_samples = _check_num_samples(num_samples)
    z = posterior.sample(num_samples, seed=seed)
    return _log_mean_exp(log_weights(x, posterior, prior, decode, z), axis=0)


def iwae_from_chunks(log_weight_chunks):
    """The importance-weighted bound from log weights computed in chunks, ``[B]``.

    With chunks of S_1, ..., S_C samples (each from :func:`log_weights`) and K = sum_i S_i,

        log (1/K) sum_{i,s} w_{i,s} = logsumexp_i( logsumexp_s log w_{i,s} ) - log K,

    the same number as :func:`iwae_bound` over the concatenated samples; only one [B]
    summary per chunk is combined, so no [K, B] tensor is built.

    Args:
      log_weight_chunks: a non-empty list or tuple of ``[S_i, B]`` tensors (S_i may
        differ), or one tensor: ``[C, S, B]`` (stacked chunks) or ``[S, B]`` (one chunk).
    """
    if isinstance(log_weight_chunks, (list, tuple)):
        if not log_weight_chunks:
            raise ConfigError(
                "Expected at least one chunk of log weights. Received: log_weight_chunks=[]"
            )
        chunks = [tf.convert_to_tensor(c) for c in log_weight_chunks]
    else:
        stacked = tf.convert_to_tensor(log_weight_chunks)
        rank = stacked.shape.rank
        if rank == 2:
            chunks = [stacked]
        elif rank == 3:
            # [C, S, B] -> one [B] summary per chunk, and K = C * S.
            per_chunk = tf.reduce_logsumexp(stacked, axis=1)
            shape = tf.shape(stacked)
            total = tf.cast(shape[0] * shape[1], stacked.dtype)
            return tf.reduce_logsumexp(per_chunk, axis=0) - tf.math.log(total)
        else:
            raise ConfigError(
                "Expected log weights of shape [S, B] (one chunk) or [C, S, B] (stacked "
                f"chunks). Received: shape {stacked.shape}"
            )
    for chunk in chunks:
        if chunk.shape.rank is not None and chunk.shape.rank != 2:
            raise ConfigError(
                "Expected every chunk of log weights to have shape [S_i, B]. Received: "
                f"a chunk of shape {chunk.shape}"
            )
    dtype = chunks[0].dtype
    per_chunk = tf.stack([tf.reduce_logsumexp(tf.cast(c, dtype), axis=0) for c in chunks])
    total = tf.add_n([tf.shape(c)[0] for c in chunks])
    return tf.reduce_logsumexp(per_chunk, axis=0) - tf.math.log(tf.cast(total, dtype))


# ---------------------------------------------------------------------------- free bits


def check_free_bits(free_bits, mode, objective):
    """``(free_bits, mode)`` checked: nats >= 0, a mode of :data:`FREE_BITS_MODES`, and not
    with the IWAE objective (its bound has no separate KL term)."""
    try:
        nats = float(free_bits)
    except (TypeError, ValueError):
        nats = float("nan")
    if not (nats >= 0 and math.isfinite(nats)):
        raise ConfigError(
            f"Expected `free_bits` to be a number of nats >= 0. Received: free_bits={free_bits!r}"
        )
    if mode not in FREE_BITS_MODES:
        raise ConfigError(
            f"Expected `free_bits_mode` to be one of {', '.join(map(repr, FREE_BITS_MODES))}. "
            f"Received: free_bits_mode={mode!r}"
        )
    if nats and objective == "iwae":
        raise ConfigError(
            "Expected free_bits=0 with objective='iwae' (the importance-weighted bound has no "
            f"separate KL term). Received: free_bits={nats!r}."
        )
    return nats, mode


def _marginals(dist):
    """The univariate distributions of a factorised ``dist`` (an ``Independent`` of scalar
    distributions, or a diagonal ``MultivariateNormalDiag``), batch shape ``[..., L]``;
    None when ``dist`` does not factorise over the dimensions of z."""
    if isinstance(dist, tfd.Independent) and dist.reinterpreted_batch_ndims == 1:
        inner = dist.distribution
        return inner if inner.event_shape.rank == 0 else None
    if isinstance(dist, tfd.MultivariateNormalDiag):
        return tfd.Normal(dist.mean(), dist.stddev())
    return None


def kl_per_dimension(posterior, prior):
    """KL(q(z_l|x) || p(z_l)) of each dimension l, ``[B, L]``, when both distributions
    factorise over the dimensions of z and TFP has the pair's KL (a diagonal Gaussian q
    against a standard normal p: 0.5 (mu_l^2 + sigma_l^2 - 1 - log sigma_l^2)); they sum
    to the analytic KL. None otherwise: for a q or p that couples the dimensions (IAF,
    hierarchical, a VampPrior mixture) a dimension's own KL is not defined."""
    q, p = _marginals(posterior), _marginals(prior)
    if q is None or p is None:
        return None
    return _analytic_kl(q, p)


def kl_per_group(posterior, prior, z):
    """Monte Carlo KL of each group of z's coordinates, ``[B, G]``, for distributions that
    split into groups (a hierarchical model's z1 and z2): both give ``latent_groups`` (the
    group sizes, in z's order) and ``log_prob_groups(z)`` (the chain rule's factors, e.g.
    log q(z1|x), log q(z2|z1) and log p(z1|z2), log p(z2), one per group, summing to
    ``log_prob(z)``). With z ``[S, B, L]`` from q: (1/S) sum_s [log q_g(z_s) - log p_g(z_s)];
    the groups add up to the Monte Carlo KL on the same z. None when either does not split,
    or they split differently."""
    groups = getattr(posterior, "latent_groups", None)
    if groups is None or tuple(groups) != tuple(getattr(prior, "latent_groups", ()) or ()):
        return None
    log_q, log_p = posterior.log_prob_groups(z), prior.log_prob_groups(z)
    diffs = [
        tf.reduce_mean(q - tf.cast(p, q.dtype), axis=0) for q, p in zip(log_q, log_p, strict=True)
    ]
    return tf.stack(diffs, axis=-1)


def kl_pieces(mode, posterior, prior, kl, z):
    """``(pieces [B, K], sizes)``: the KL split as ``mode`` floors it, and the latent
    dimensions each piece covers (its floor is ``free_bits * size``). ``"total"``: one
    piece, ``kl`` itself; ``"dimension"``: :func:`kl_per_dimension`; ``"group"``:
    :func:`kl_per_group`. Raises ConfigError when the model's q and p cannot be split so."""
    latent_dim = int(z.shape[-1])
    if mode == "total":
        return kl[:, None], (latent_dim,)
    if mode == "dimension":
        pieces = kl_per_dimension(posterior, prior)
        sizes = (1,) * latent_dim
        need = (
            "a posterior and prior that factorise over z's dimensions with an analytic KL "
            "(a diagonal Gaussian against a standard normal or diagonal Gaussian prior)"
        )
    else:
        pieces = kl_per_group(posterior, prior, z)
        sizes = tuple(getattr(posterior, "latent_groups", None) or ())
        need = (
            "a posterior and prior that split z into the same groups (latent_groups and "
            "log_prob_groups, as posterior='hierarchical' with prior='hierarchical' do)"
        )
    if pieces is None:
        raise ConfigError(
            f"Expected {need} for free_bits_mode={mode!r}. Received: posterior "
            f"{_describe(posterior)}, prior {_describe(prior)}. Use free_bits_mode='total' "
            "(one floor on the whole code's KL)."
        )
    return tf.cast(pieces, kl.dtype), sizes


def free_bits_kl(pieces, sizes, free_bits, weights=None):
    """The per-example KL ``[B]`` a free-bits loss uses (Kingma et al. 2016, eq. 15, with
    one floor per piece): each piece k whose batch mean (weighted by ``weights``) is below
    ``free_bits * sizes[k]`` nats keeps its value but gives no gradient; the others count
    as they are. So above every floor the loss and its gradient are the plain ones, and
    below a floor that piece's KL stops pulling its dimensions towards the prior."""
    if weights is None:
        means = tf.reduce_mean(pieces, axis=0)
    else:
        w = tf.cast(weights, pieces.dtype)[:, None]
        means = tf.reduce_sum(pieces * w, axis=0) / tf.maximum(tf.reduce_sum(w), 1e-12)
    floors = tf.constant([free_bits * s for s in sizes], pieces.dtype)
    floored = tf.where(means < floors, tf.stop_gradient(pieces), pieces)
    return tf.reduce_sum(floored, axis=-1)
