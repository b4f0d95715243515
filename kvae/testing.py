"""Contract checks for kvae components: one harness for every kind.

kvae runs these on its own encoders, decoders, posteriors, likelihoods and priors; a plugin
author runs the same checks in their own test suite, one call per component::

    from kvae import testing

    def test_my_encoder():
        testing.check_encoder("my-encoder", data_shape=(32, 32, 3))

Each check takes a registered name or a class/factory, builds the component the way
``kvae.VAE`` does, and asserts: output shapes, finite outputs, weights, a config round trip
(``get_config`` -> ``from_config`` gives the same config and outputs), save and reload inside
a ``.keras`` file, and one XLA-compiled training step of a VAE in which the component is
combined with each partner it claims to support. Failures raise ``AssertionError`` with a
message naming the component and the broken rule.
"""

import math
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kvae import registry
from kvae._choices import SLOTS

__all__ = [
    "check_component",
    "check_decoder",
    "check_encoder",
    "check_likelihood",
    "check_posterior",
    "check_prior",
    "sample_data",
]


def _factory(group, component):
    if isinstance(component, str):
        return component, registry.get(group, component)
    return getattr(component, "__name__", repr(component)), component


def _fail(what, rule):
    raise AssertionError(f"{what}: {rule}")


def sample_data(data_shape, likelihood="bernoulli", n=8, seed=0):
    """Random data that the given likelihood can score: binary-ish pixels in [0, 1] (k/256)
    for bounded likelihoods, standard-normal values for real-valued ones."""
    rng = np.random.default_rng(seed)
    shape = (n, *data_shape)
    if likelihood in ("gaussian",):
        return rng.standard_normal(shape).astype("float32")
    return (rng.integers(0, 256, size=shape) / 256.0).astype("float32")


def _given_data(what, data, data_shape, n):
    """The caller's examples as float32, or None; at least ``n`` of shape ``data_shape``."""
    if data is None:
        return None
    arr = np.asarray(data, dtype="float32")
    if arr.shape[1:] != tuple(data_shape) or len(arr) < n:
        _fail(
            what,
            f"`data` must hold at least {n} examples of shape {tuple(data_shape)}; "
            f"got an array of shape {arr.shape}",
        )
    return arr


def _config_round_trip(what, layer, call):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    if clone.get_config() != config:
        _fail(
            what,
            f"get_config -> from_config -> get_config changed the config: {config} vs {clone.get_config()}",
        )
    expected = call(layer)
    call(clone)  # build
    clone.set_weights(layer.get_weights())
    got = call(clone)
    for a, b in zip(tf.nest.flatten(expected), tf.nest.flatten(got), strict=False):
        np.testing.assert_allclose(
            np.asarray(a),
            np.asarray(b),
            rtol=1e-5,
            atol=1e-5,
            err_msg=f"{what}: a layer rebuilt from its config gives other outputs",
        )


def _finite(what, value, label):
    value = np.asarray(value)
    if not np.all(np.isfinite(value)):
        _fail(what, f"{label} has non-finite values")


def _vae_round_trip(what, data, **vae_kwargs):
    """Build a VAE with the component, train one XLA step, save, reload, compare."""
    from kvae.model import VAE
    from kvae.saving import load_model

    model = VAE(seed=1, **vae_kwargs)
    model.compile(optimizer="adam", jit_compile=True, steps_per_execution=1)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(data, data, batch_size=len(data), epochs=1, verbose=0, shuffle=False)
    loss = history.history["loss"][-1]
    if not np.isfinite(loss):
        _fail(what, f"one training step under XLA gave a non-finite loss ({loss})")
    changed = any(
        not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=False)
    )
    if not changed:
        _fail(what, "one training step did not change any weight (no gradient flows)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        reloaded = load_model(path)
    np.testing.assert_allclose(
        model.predict(data, verbose=0),
        reloaded.predict(data, verbose=0),
        rtol=1e-5,
        atol=1e-5,
        err_msg=f"{what}: the model saved and reloaded from .keras gives other outputs",
    )
    q1, q2 = model.encode(data), reloaded.encode(data)
    np.testing.assert_allclose(
        q1.mean(),
        q2.mean(),
        rtol=1e-5,
        atol=1e-5,
        err_msg=f"{what}: reloaded q(z|x) differs",
    )
    return model


def _check_network(
    slot, component, data_shape, kwargs, data, inputs, partner, partners, **vae_kwargs
):
    """The checks every network passes: it builds a Keras layer from ``data_shape`` and
    ``kwargs``, keeps the batch axis of ``inputs(data)``, gives finite outputs, has weights,
    round-trips its config, and trains and saves inside a VAE with each of ``partners`` (the
    components of slot ``partner`` it claims to work with)."""
    name, factory = _factory(f"{slot}s", component)
    what = f"{slot} {name!r}"
    kwargs = dict(kwargs or {})
    data = _given_data(what, data, data_shape, 16)
    layer = factory(data_shape=tuple(data_shape), **kwargs)
    if not isinstance(layer, keras.layers.Layer):
        _fail(what, f"must build a keras.layers.Layer, built {type(layer).__name__}")
    x = inputs(data)
    out = layer(x)
    if out.shape[0] != len(x):
        _fail(
            what,
            f"output batch axis must equal the input's ({len(x)}); got shape {tuple(out.shape)}",
        )
    _finite(what, out, "output")
    if not layer.trainable_weights:
        _fail(what, "has no trainable weights")
    _config_round_trip(what, layer, lambda lyr: lyr(x))
    for choice in partners:
        setting = {**vae_kwargs, partner: choice}
        examples = (
            data[:16] if data is not None else sample_data(data_shape, setting["likelihood"], n=16)
        )
        _vae_round_trip(
            f"{what} with {partner} {choice!r}",
            examples,
            # A registered name is rebuilt from its kwargs; anything else is used as built.
            **(
                {slot: component, f"{slot}_kwargs": kwargs}
                if isinstance(component, str)
                else {slot: layer}
            ),
            data_shape=tuple(data_shape),
            **setting,
        )
    return layer


def check_encoder(
    encoder,
    data_shape=(28, 28, 1),
    *,
    kwargs=None,
    posteriors=("gaussian",),
    likelihood="bernoulli",
    likelihood_kwargs=None,
    data=None,
):
    """Check an encoder: x ``(B, *data_shape)`` -> finite features with a batch axis of B.

    ``data`` (at least 16 examples) replaces the random data of :func:`sample_data`, for
    likelihoods that score other data (tokens, say); ``likelihood_kwargs`` go to the
    likelihood of the VAE the encoder is trained in.
    """
    return _check_network(
        "encoder",
        encoder,
        data_shape,
        kwargs,
        data,
        lambda data: data[:4] if data is not None else sample_data(data_shape, likelihood, n=4),
        "posterior",
        posteriors,
        likelihood=likelihood,
        likelihood_kwargs=likelihood_kwargs,
        latent_dim=3,
    )


def check_decoder(
    decoder,
    data_shape=(28, 28, 1),
    *,
    kwargs=None,
    likelihoods=("bernoulli", "gaussian"),
    latent_dim=3,
    likelihood_kwargs=None,
    data=None,
):
    """Check a decoder: z (B, latent_dim) -> finite features, composing with each likelihood.

    ``data`` (at least 16 examples) and ``likelihood_kwargs`` are used with every likelihood
    in ``likelihoods``; for likelihoods that need different ones, call once per likelihood.
    """
    z = np.random.default_rng(0).standard_normal((4, latent_dim)).astype("float32")
    return _check_network(
        "decoder",
        decoder,
        data_shape,
        kwargs,
        data,
        lambda data: z,
        "likelihood",
        likelihoods,
        likelihood_kwargs=likelihood_kwargs,
        latent_dim=latent_dim,
    )


def check_posterior(posterior, latent_dim=3, *, kwargs=None, feature_dim=16):
    """Check a posterior head: features -> params -> q(z|x) with batch [B], event [latent_dim],
    reparameterised samples (gradients reach the parameters), and a density that integrates
    to 1 for each example (importance sampling; a low ``latent_dim`` keeps it sharp)."""
    name, factory = _factory("posteriors", posterior)
    what = f"posterior {name!r}"
    layer = factory(latent_dim=latent_dim, **dict(kwargs or {}))
    features = tf.constant(np.random.default_rng(0).standard_normal((5, feature_dim)), tf.float32)
    params = layer(features)
    q = layer.distribution(params)
    if tuple(q.batch_shape) != (5,) or tuple(q.event_shape) != (latent_dim,):
        _fail(
            what,
            f"q(z|x) must have batch shape (5,) and event shape ({latent_dim},); got {q.batch_shape}, {q.event_shape}",
        )
    if params.dtype != tf.float32:
        _fail(what, f"parameters must be float32, got {params.dtype}")
    with tf.GradientTape() as tape:
        tape.watch(params)
        z = layer.distribution(params).sample(seed=tf.constant([1, 2]))
        total = tf.reduce_sum(z**2)
    grad = tape.gradient(total, params)
    if grad is None or not np.any(np.asarray(grad)):
        _fail(what, "samples are not reparameterised: no gradient reaches the parameters")
    _finite(what, q.log_prob(z), "log_prob of its own samples")
    _check_integrates_to_one(what, q, "q(z|x)")
    _config_round_trip(what, layer, lambda lyr: lyr(features))
    return layer


def check_likelihood(
    likelihood,
    data_shape=(28, 28, 1),
    *,
    kwargs=None,
    feature_shapes=((16,),),
    data=None,
    reference=None,
):
    """Check a likelihood head: features -> params -> p(x|z) with event shape = data_shape,
    finite log_prob of data in its range, for flat features and each given feature shape;
    and its values: probabilities over the support sum to 1 (a discrete head's
    ``support()``), or the density integrates to 1 (over ``data_range``, or the real line
    around the mean), and ``log_prob`` equals an independent reference where one exists
    (kvae's built-in families, or ``reference``).

    ``data`` (at least 5 examples the head can score) replaces :func:`sample_data`'s.
    ``reference(layer, params, x)``: log p(x|z) per example, in numpy, computed without the
    head's ``distribution`` (from the family's formula), for a plugin's own head."""
    name, factory = _factory("likelihoods", likelihood)
    what = f"likelihood {name!r}"
    layer = None
    data_kind = name if isinstance(likelihood, str) else "bernoulli"
    data = _given_data(what, data, data_shape, 5)
    x = tf.constant(data[:5] if data is not None else sample_data(data_shape, data_kind, n=5))
    for fshape in feature_shapes:
        layer = factory(data_shape=tuple(data_shape), **dict(kwargs or {}))
        features = tf.constant(np.random.default_rng(0).standard_normal((5, *fshape)), tf.float32)
        params = layer(features)
        p = layer.distribution(params)
        if tuple(p.event_shape) != tuple(data_shape) or tuple(p.batch_shape) != (5,):
            _fail(
                what,
                f"p(x|z) must have event shape {tuple(data_shape)} and batch (5,); got {p.event_shape}, {p.batch_shape}",
            )
        lp = p.log_prob(layer.prepare(x))
        if tuple(lp.shape) != (5,):
            _fail(
                what,
                f"log_prob must give one number per example; got shape {tuple(lp.shape)}",
            )
        _finite(what, lp, "log_prob of in-range data")
        _check_normalised(what, layer, params)
        ref = reference or _builtin_reference(layer)
        if ref is not None:
            want = np.asarray(ref(layer, np.asarray(params, np.float64), np.asarray(x)))
            # float32 log-probabilities summed over D dimensions: rounding of order
            # D * 1e-7 * |log p per dimension|; 1e-4 relative leaves a wide margin.
            np.testing.assert_allclose(
                np.asarray(lp, np.float64),
                want,
                rtol=1e-4,
                atol=1e-3,
                err_msg=f"{what}: log_prob differs from the family's formula",
            )
        mean = layer.mean(params)
        if tuple(mean.shape) != (5, *data_shape):
            _fail(what, f"mean() must have the data's shape; got {tuple(mean.shape)}")
        _config_round_trip(what, layer, lambda lyr, f=features: lyr(f))
    return layer


def _check_normalised(what, layer, params):
    """Probabilities over the support sum to 1 (discrete), or the density integrates to 1,
    for each dimension of each example (the per-dimension distribution under Independent).
    A head of mixed families (a table's) gives each column's own distribution and support
    (``column_distributions()``, ``column_support(j)``): each column is checked alone."""
    p = layer.distribution(params)
    columns = getattr(p, "column_distributions", None)
    if callable(columns):
        for j, column in enumerate(columns()):
            _check_total(f"{what}, column {j}", column, layer.column_support(j), None, lambda v: v)
        return
    per_dim = getattr(p, "distribution", p)  # tfd.Independent -> the per-dimension one
    _check_total(what, per_dim, layer.support(), layer.data_range, layer.prepare)


def _check_total(what, per_dim, support, data_range, prepare):
    shape = tuple(per_dim.batch_shape)
    if support is not None:
        values = np.asarray(support, np.float32)
        grid = values.reshape((-1,) + (1,) * len(shape))
        lp = per_dim.log_prob(prepare(tf.constant(grid) + tf.zeros(shape)))
        total = np.exp(np.asarray(lp, np.float64)).sum(axis=0)
        # Each of the len(values) float32 probabilities carries a relative rounding of
        # ~1e-7 (more through log/exp): 1e-4 is far above it, far below a missing bin.
        label = f"probabilities over its {len(values)} support values"
        tol = 1e-4
    else:
        n = 4000  # midpoint rule: error ~ (width / n)^2 * max|p''| / 24, below 1e-4 here
        if data_range is not None:
            low, high = data_range
            t = (np.arange(n) + 0.5) / n
            grid = (low + (high - low) * t).astype(np.float32)
            width = np.full(shape, high - low, np.float64)
            points = grid.reshape((-1,) + (1,) * len(shape)) + np.zeros(shape, np.float32)
        else:  # the real line: +-12 standard deviations around the mean hold all but 1e-30
            mean, std = np.asarray(per_dim.mean()), np.asarray(per_dim.stddev())
            t = (np.arange(n) + 0.5) / n * 24 - 12
            points = (mean + std * t.reshape((-1,) + (1,) * len(shape))).astype(np.float32)
            width = 24 * std.astype(np.float64)
        lp = per_dim.log_prob(prepare(tf.constant(points)))
        total = np.exp(np.asarray(lp, np.float64)).mean(axis=0) * width
        label = "its density's integral"
        tol = 1e-3
    if not np.allclose(total, 1.0, atol=tol):
        worst = float(total.ravel()[np.argmax(np.abs(total - 1).ravel())])
        _fail(what, f"{label} must be 1 for every dimension; found {worst:.6g}")


# Importance sampling of a latent density's integral (check_posterior, check_prior).
_IS_DF = 5.0  # Student-t proposal: tails heavier than any Gaussian or mixture of them
_IS_INFLATE = 2.0  # proposal scale matrix = this x the density's own sample covariance
_IS_SAMPLES = 8192
_IS_MAX_STDERR = 0.05  # above it the check could not tell a density that is off by 20%


def _student_t_proposal(z_own, num_samples, rng):
    """Samples of a multivariate Student-t fitted to ``z_own`` ([M, *batch, d]) and their
    log-density, float64, shapes [N, *batch, d] and [N, *batch]."""
    d = z_own.shape[-1]
    loc = z_own.mean(axis=0)
    centred = z_own - loc
    cov = np.einsum("m...i,m...j->...ij", centred, centred) / (len(z_own) - 1)
    ridge = 1e-6 * (np.trace(cov, axis1=-2, axis2=-1)[..., None, None] / d + 1e-12)
    chol = np.linalg.cholesky(_IS_INFLATE * cov + ridge * np.eye(d))
    eps = rng.standard_normal((num_samples, *loc.shape))
    u = rng.chisquare(_IS_DF, size=(num_samples, *loc.shape[:-1], 1))
    z = loc + np.einsum("...ij,n...j->n...i", chol, eps) / np.sqrt(u / _IS_DF)
    # log t(z): the Mahalanobis term from eps and u directly (z - loc = L eps sqrt(df/u)).
    maha = np.sum(eps**2, axis=-1) * _IS_DF / u[..., 0]
    log_det = np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    log_g = (
        math.lgamma((_IS_DF + d) / 2)
        - math.lgamma(_IS_DF / 2)
        - 0.5 * d * np.log(_IS_DF * np.pi)
        - log_det
        - 0.5 * (_IS_DF + d) * np.log1p(maha / _IS_DF)
    )
    return z, log_g


def _check_integrates_to_one(what, dist, label, seed=0):
    """The density of ``dist`` (a TFP distribution over R^d, any batch shape) integrates to
    1 for every batch member, by importance sampling.

    The proposal is a Student-t (5 degrees of freedom) whose scale is twice the covariance
    of the distribution's own samples: its tails are heavier than a Gaussian's or a
    mixture's, so the weights ``p(z) / t(z)`` have a finite variance and the estimate's
    standard error (std of the weights / sqrt(N), fixed seeds) is honest. The integral must
    be within 4 standard errors (plus 1e-3 for float32 log-densities) of 1; with N = 8192
    that is a few per cent, while a density with a wrong Jacobian sign is off by a factor
    of prod(scale^2). The sampler is not trusted beyond placing the proposal: a density
    that disagrees with its own samples but integrates to 1 passes here."""
    own = np.asarray(dist.sample(1024, seed=tf.constant([seed, 17])), np.float64)
    rng = np.random.default_rng(seed)
    z, log_g = _student_t_proposal(own, _IS_SAMPLES, rng)
    log_p = np.asarray(dist.log_prob(tf.constant(z, tf.float32)), np.float64)
    if not np.all(np.isfinite(log_p) | (log_p == -np.inf)):
        _fail(what, f"{label}: log_prob is NaN or +inf at points near its own samples")
    w = np.exp(log_p - log_g)
    total = w.mean(axis=0)
    stderr = w.std(axis=0, ddof=1) / np.sqrt(len(w))
    worst = np.unravel_index(np.argmax(np.abs(total - 1) / (stderr + 1e-12)), total.shape)
    if np.any(np.abs(total - 1) > 4 * stderr + 1e-3):
        index = f" (batch member {tuple(int(i) for i in worst)})" if total.ndim else ""
        _fail(
            what,
            f"{label}'s density must integrate to 1; importance sampling found "
            f"{total[worst]:.4g} +- {stderr[worst]:.2g}{index}. A flow's log_prob must add "
            "the inverse's log|det J| (subtract the forward's), and every term must be "
            "normalised",
        )
    if np.any(stderr > _IS_MAX_STDERR):
        bad = np.unravel_index(np.argmax(stderr), stderr.shape)
        _fail(
            what,
            f"{label}: could not check that its density integrates to 1: the importance "
            f"weights are too spread (estimate {total[bad]:.4g} +- {stderr[bad]:.3g}); its "
            "samples and its log_prob may disagree, or its tails are heavier than a "
            "Student-t's with 5 degrees of freedom",
        )


def _bernoulli_reference(layer, params, x):
    logits = params[..., 0]
    log_p, log_q = -np.logaddexp(0, -logits), -np.logaddexp(0, logits)
    return _sum_events(x * log_p + (1 - x) * log_q, x)


def _continuous_bernoulli_reference(layer, params, x):
    # Loaiza-Ganem & Cunningham (2019): p(x) = C(lam) lam^x (1 - lam)^(1 - x) on [0, 1],
    # C(lam) = 2 artanh(1 - 2 lam) / (1 - 2 lam), and C(1/2) = 2.
    logits = params[..., 0]
    lam = 1 / (1 + np.exp(-logits))
    near = np.abs(lam - 0.5) < 1e-4
    safe = np.where(near, 0.25, lam)
    log_c = np.where(
        near,
        np.log(2.0) + (logits**2) / 12,  # the series around lam = 1/2 (logits = 0)
        np.log(2 * np.arctanh(1 - 2 * safe) / (1 - 2 * safe)),
    )
    log_p, log_q = -np.logaddexp(0, -logits), -np.logaddexp(0, logits)
    return _sum_events(log_c + x * log_p + (1 - x) * log_q, x)


def _gaussian_reference(layer, params, x):
    mu = params[..., 0]
    sigma = np.broadcast_to(np.asarray(layer.sigma(), np.float64), mu.shape)
    return _sum_events(-0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi), x)


def _discretized_logistic_reference(layer, params, x):
    # Bin k of num_bins holds the logistic's mass on (k - 1/2, k + 1/2], the first and last
    # bins the tails: P(k) = F(k + 1/2) - F(k - 1/2) with F(-inf) = 0, F(+inf) = 1.
    loc, scale = (np.asarray(v, np.float64) for v in layer._loc_scale(params.astype(np.float32)))
    k = np.clip(np.floor(x * layer.num_bins), 0, layer.num_bins - 1)
    upper = np.where(k == layer.num_bins - 1, np.inf, k + 0.5)
    lower = np.where(k == 0, -np.inf, k - 0.5)

    hi, lo = (upper - loc) / scale, (lower - loc) / scale
    # log(sigmoid(hi) - sigmoid(lo)) without cancellation: in the right tail use the mirror
    # image, sigmoid(-lo) - sigmoid(-hi), so the larger term is never close to 1.
    right = (hi + lo) > 0
    hi, lo = np.where(right, -lo, hi), np.where(right, -hi, lo)

    def log_sigmoid(v):
        return -np.logaddexp(0, -v)

    log_mass = log_sigmoid(hi) + np.log1p(-np.exp(log_sigmoid(lo) - log_sigmoid(hi)))
    return _sum_events(log_mass, x)


def _sum_events(values, x):
    return values.reshape(len(x), -1).sum(axis=1)


def _builtin_reference(layer):
    """The numpy reference of a built-in family, when ``layer`` uses its distribution."""
    from kvae.heads import likelihoods as lk

    references = {
        lk.Bernoulli: _bernoulli_reference,
        lk.ContinuousBernoulli: _continuous_bernoulli_reference,
        lk.Gaussian: _gaussian_reference,
        lk.DiscretizedLogistic: _discretized_logistic_reference,
    }
    for cls, reference in references.items():
        if isinstance(layer, cls) and type(layer).distribution is cls.distribution:
            return reference
    return None


def _needs_model(layer):
    """True for a prior that uses the ``bind_model`` hook (it needs the model it is in)."""
    from kvae.priors import Prior

    bind = getattr(type(layer), "bind_model", None)
    return callable(bind) and bind is not getattr(Prior, "bind_model", None)


def check_prior(prior, latent_dim=3, *, kwargs=None, data_shape=(6, 6, 1)):
    """Check a prior: distribution() has batch shape [] and event [latent_dim], samples and
    scores them, its density integrates to 1 (importance sampling), and it survives a config
    round trip.

    A prior that overrides ``bind_model`` (it needs the model, as the VampPrior needs the
    encoder) is checked inside a small VAE on ``data_shape`` data: bound by the VAE, its
    distribution must depend on the model's weights (gradients reach the encoder), and a
    VAE rebuilt from config with the same weights must give the same p(z); with
    ``uses_encoder = True`` its log-density must depend on the encoder's weights."""
    name, factory = _factory("priors", prior)
    what = f"prior {name!r}"
    layer = factory(latent_dim=latent_dim, **dict(kwargs or {}))
    host = None
    if _needs_model(layer):
        from kvae.model import VAE

        host = VAE(
            data_shape=tuple(data_shape),
            latent_dim=latent_dim,
            prior=prior if isinstance(prior, str) else layer,
            prior_kwargs=kwargs if isinstance(prior, str) else None,
            seed=1,
        )
        layer = host.prior
    else:
        layer.build()
    p = layer.distribution()
    if tuple(p.batch_shape) != () or tuple(p.event_shape) != (latent_dim,):
        _fail(
            what,
            f"p(z) must have batch shape () and event shape ({latent_dim},); got {p.batch_shape}, {p.event_shape}",
        )
    z = p.sample(7, seed=tf.constant([3, 4]))
    _finite(what, p.log_prob(z), "log_prob of its own samples")
    _check_integrates_to_one(what, p, "p(z)")
    if host is not None and getattr(layer, "uses_encoder", False):
        with tf.GradientTape() as tape:
            logp = tf.reduce_sum(layer.distribution().log_prob(z))
        grads = tape.gradient(logp, host.encoder.trainable_weights)
        if not any(g is not None and np.any(np.asarray(g)) for g in grads):
            _fail(what, "says uses_encoder but its log-density does not depend on the encoder")
    if host is not None:
        clone = VAE.from_config(host.get_config())
        clone.set_weights(host.get_weights())
        np.testing.assert_allclose(
            clone.prior.distribution().log_prob(z),
            p.log_prob(z),
            rtol=1e-5,
            atol=1e-5,
            err_msg=f"{what}: a model rebuilt from its config gives another p(z)",
        )
    else:
        config = layer.get_config()
        clone = type(layer).from_config(config)
        clone.build()
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(
            clone.distribution().log_prob(z),
            p.log_prob(z),
            rtol=1e-5,
            err_msg=f"{what}: a prior rebuilt from its config scores differently",
        )
    _vae_round_trip(
        what,
        sample_data(tuple(data_shape), n=16),
        prior=prior if isinstance(prior, str) else type(layer).from_config(layer.get_config()),
        prior_kwargs=kwargs if isinstance(prior, str) else None,
        data_shape=tuple(data_shape),
        latent_dim=latent_dim,
    )
    return layer


_CHECKS = {
    slot.group: check
    for slot, check in zip(
        SLOTS,
        (check_encoder, check_decoder, check_posterior, check_likelihood, check_prior),
        strict=True,
    )
}


def check_component(group, name, **kwargs):
    """Run the check for ``group`` ("encoders", "decoders", ...) on a registered name."""
    try:
        check = _CHECKS[group]
    except KeyError:
        raise ValueError(
            f"Expected group in {sorted(_CHECKS)}. Received: group={group!r}"
        ) from None
    return check(name, **kwargs)
