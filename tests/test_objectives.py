"""Tests of kvae.objectives against closed forms.

Statistical checks use fixed stateless seeds, and every Monte Carlo tolerance is
Z standard errors of the estimate (Z = 5 unless stated; a two-sided 5-sigma miss has
probability 6e-7 per comparison for a Gaussian mean). The standard error is computed in
closed form where one exists, else estimated from the same samples. Exact identities are
checked to float rounding only.
"""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import objectives
from kvae.errors import ConfigError

tfd = tfp.distributions

Z = 5.0  # standard errors allowed for a Monte Carlo mean


def seed(i):
    return tf.constant([i, 20240601], tf.int32)


def standard_normal(latent_dim, dtype=tf.float32):
    return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim], dtype))


# ------------------------------------------------------------------ linear-Gaussian model


class LinearGaussian:
    """Probabilistic PCA: p(z) = N(0, I_L), p(x|z) = N(W z + b, s^2 I_D).

    Closed forms (Tipping & Bishop 1999):
      p(x)   = N(b, W W^T + s^2 I_D)
      p(z|x) = N(M^-1 W^T (x - b), s^2 M^-1),   M = W^T W + s^2 I_L
    and for q = N(m, C):
      E_q log p(x|z) = -D/2 log(2 pi s^2) - (|x - W m - b|^2 + tr(W C W^T)) / (2 s^2)
      KL(q || p(z))  = 0.5 (tr C + m^T m - L - log det C)
    """

    def __init__(self, dim=5, latent_dim=2, noise=0.5, rng_seed=0, dtype=np.float32):
        rng = np.random.default_rng(rng_seed)
        self.D, self.L, self.s, self.dtype = dim, latent_dim, noise, dtype
        self.W = rng.normal(size=(dim, latent_dim))
        self.b = rng.normal(size=dim)
        self.rng = rng
        M = self.W.T @ self.W + noise**2 * np.eye(latent_dim)
        self.post_cov = noise**2 * np.linalg.inv(M)
        self._post_gain = np.linalg.solve(M, self.W.T)  # M^-1 W^T

    def sample_x(self, n):
        z = self.rng.normal(size=(n, self.L))
        return z @ self.W.T + self.b + self.s * self.rng.normal(size=(n, self.D))

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * np.eye(self.D)
        return scipy.stats.multivariate_normal(self.b, cov).logpdf(x)

    def post_mean(self, x):
        return (x - self.b) @ self._post_gain.T

    def expected_elbo(self, x, m, cov):
        """E_q[log p(x|z)] - KL(q || p(z)) for q = N(m, cov), per row of x and m."""
        resid = x - m @ self.W.T - self.b
        trace = np.trace(self.W @ cov @ self.W.T)
        rec = -0.5 * self.D * math.log(2 * math.pi * self.s**2) - (np.sum(resid**2, -1) + trace) / (
            2 * self.s**2
        )
        kl = 0.5 * (np.trace(cov) + np.sum(m**2, -1) - self.L - np.linalg.slogdet(cov)[1])
        return rec - kl

    # TFP side ---------------------------------------------------------------
    def t(self, a):
        return tf.constant(np.asarray(a, self.dtype))

    def prior(self):
        return standard_normal(self.L, self.dtype)

    def decode(self, z):
        loc = tf.einsum("...l,dl->...d", z, self.t(self.W)) + self.t(self.b)
        return tfd.MultivariateNormalDiag(loc=loc, scale_diag=self.t(np.full(self.D, self.s)))

    def exact_posterior(self, x):
        chol = np.linalg.cholesky(self.post_cov)
        return tfd.MultivariateNormalTriL(loc=self.t(self.post_mean(x)), scale_tril=self.t(chol))


@pytest.fixture(scope="module")
def model():
    return LinearGaussian()


def grouped_mean_and_se(values, groups):
    """Mean of ``values`` [R * G] laid out as [R, G] (R repeats of G examples), and its
    standard error from the within-example variances (the examples differ in mean, so the
    plain standard deviation over all values would overstate the error)."""
    v = np.asarray(values, np.float64).reshape(-1, groups)
    repeats = v.shape[0]
    within_var = v.var(axis=0, ddof=1)  # [G]
    return v.mean(), math.sqrt(within_var.sum() / repeats) / groups


# ------------------------------------------------------------------------------ 1. KL


def diag_gaussians(rng, batch=4, latent=3):
    mu = rng.normal(size=(batch, latent)).astype(np.float32)
    sigma = rng.uniform(0.3, 2.0, size=(batch, latent)).astype(np.float32)
    return mu, sigma


@pytest.mark.parametrize("family", ["mvn_diag", "independent_normal"])
def test_analytic_kl_of_diagonal_gaussians_matches_closed_form(family):
    mu, sigma = diag_gaussians(np.random.default_rng(1))
    if family == "mvn_diag":
        q = tfd.MultivariateNormalDiag(mu, sigma)
        p = standard_normal(3)
    else:
        q = tfd.Independent(tfd.Normal(mu, sigma), 1)
        p = tfd.Independent(tfd.Normal(tf.zeros(3), 1.0), 1)
    mu64, s64 = mu.astype(np.float64), sigma.astype(np.float64)
    expected = 0.5 * np.sum(mu64**2 + s64**2 - 1 - np.log(s64**2), axis=-1)
    for method in ("analytic", "auto"):
        kl = objectives.kl_divergence(q, p, method=method)
        assert kl.shape == (4,)
        # float32 rounding: a few ulps of the largest term summed.
        np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=1e-5)


def test_monte_carlo_kl_of_diagonal_gaussians_within_standard_error():
    mu, sigma = diag_gaussians(np.random.default_rng(2))
    q = tfd.MultivariateNormalDiag(mu, sigma)
    p = standard_normal(3)
    num = 20_000
    z = q.sample(num, seed=seed(1))
    mc = objectives.kl_divergence(q, p, z=z, method="mc")
    analytic = objectives.kl_divergence(q, p, method="analytic")
    # With z = mu + sigma * eps, log q(z) - log p(z) = sum_l [(sigma^2 - 1) eps^2 / 2
    # + mu sigma eps + const], whose variance is sum_l [(sigma^2 - 1)^2 / 2 + mu^2 sigma^2]
    # (Var eps^2 = 2, Cov(eps^2, eps) = 0). Standard error of the mean: sqrt(var / num).
    mu64, s64 = mu.astype(np.float64), sigma.astype(np.float64)
    var = np.sum((s64**2 - 1) ** 2 / 2 + mu64**2 * s64**2, axis=-1)
    se = np.sqrt(var / num)
    assert mc.shape == (4,)
    assert np.all(np.abs(mc.numpy() - analytic.numpy()) < Z * se), (mc, analytic, se)


def test_full_covariance_posterior_kl_analytic_vs_closed_form_and_monte_carlo():
    rng = np.random.default_rng(3)
    batch, latent = 3, 3
    mu = rng.normal(size=(batch, latent))
    tril = np.tril(rng.normal(size=(batch, latent, latent)), -1) * 0.5
    tril += np.einsum("bi,ij->bij", rng.uniform(0.4, 1.5, size=(batch, latent)), np.eye(latent))
    q = tfd.MultivariateNormalTriL(mu.astype(np.float32), tril.astype(np.float32))
    p = standard_normal(latent)

    analytic = objectives.kl_divergence(q, p, method="analytic")
    assert objectives.kl_divergence(q, p).shape == (batch,)  # "auto" takes the same path
    np.testing.assert_allclose(objectives.kl_divergence(q, p), analytic, rtol=0, atol=0)
    # 0.5 (tr S + mu^T mu - L - log det S), S = T T^T, log det S = 2 sum log diag T.
    cov = tril @ np.swapaxes(tril, -1, -2)
    closed = 0.5 * (
        np.trace(cov, axis1=-2, axis2=-1)
        + np.sum(mu**2, -1)
        - latent
        - 2 * np.sum(np.log(np.diagonal(tril, axis1=-2, axis2=-1)), -1)
    )
    np.testing.assert_allclose(analytic, closed, rtol=1e-5, atol=1e-5)

    num = 20_000
    z = q.sample(num, seed=seed(2))
    mc = objectives.kl_divergence(q, p, z=z, method="mc")
    # Standard error from the same samples: std(log q - log p) / sqrt(num).
    diffs = (q.log_prob(z) - p.log_prob(z)).numpy().astype(np.float64)
    se = diffs.std(axis=0, ddof=1) / math.sqrt(num)
    assert np.all(np.abs(mc.numpy() - analytic.numpy()) < Z * se), (mc, analytic, se)


def mixture_prior(latent=2):
    return tfd.MixtureSameFamily(
        tfd.Categorical(logits=tf.constant([0.0, 0.5])),
        tfd.MultivariateNormalDiag(
            loc=tf.constant([[-1.0] * latent, [1.0] * latent]),
            scale_diag=tf.ones([2, latent]),
        ),
    )


def test_auto_falls_back_to_monte_carlo_and_analytic_names_both_types():
    q = tfd.MultivariateNormalDiag(tf.zeros([4, 2]), tf.ones([4, 2]))
    p = mixture_prior()
    z = q.sample(7, seed=seed(3))
    auto = objectives.kl_divergence(q, p, z=z)
    mc = objectives.kl_divergence(q, p, z=z, method="mc")
    np.testing.assert_array_equal(auto, mc)
    with pytest.raises(ConfigError, match="MultivariateNormalDiag.*MixtureSameFamily"):
        objectives.kl_divergence(q, p, method="analytic")
    with pytest.raises(ConfigError, match="Received: z=None"):
        objectives.kl_divergence(q, p)  # auto needs z when it falls back
    with pytest.raises(ConfigError, match="Received: z=None"):
        objectives.kl_divergence(q, standard_normal(2), method="mc")


# ------------------------------------------------------------- 3. linear-Gaussian ELBO


def test_elbo_with_wrong_posterior_is_below_log_px_by_more_than_its_error(model):
    x = model.sample_x(6)
    sd = np.sqrt(np.diag(model.post_cov))
    m = model.post_mean(x) + 0.8 * sd  # an arbitrary, wrong q
    q_cov = np.diag((1.3 * sd) ** 2)
    q = tfd.MultivariateNormalDiag(model.t(m), model.t(np.broadcast_to(1.3 * sd, m.shape)))
    num = 4000
    out = objectives.elbo(x, q, model.prior(), model.decode, seed=seed(4), num_samples=num)
    assert set(out) == {"loss", "elbo", "reconstruction", "kl", "z"}
    assert out["z"].shape == (num, 6, model.L)
    for key in ("loss", "elbo", "reconstruction", "kl"):
        assert out[key].shape == (6,)
    # The KL is analytic here; the error is that of the reconstruction mean over num
    # samples: std_s log p(x|z_s) / sqrt(num), estimated from the same samples.
    per_sample = model.decode(out["z"]).log_prob(x.astype(np.float32)).numpy().astype(np.float64)
    se = per_sample.std(axis=0, ddof=1) / math.sqrt(num)
    estimate = out["elbo"].numpy()
    expected = model.expected_elbo(x, m, q_cov)
    log_px = model.log_px(x)
    np.testing.assert_array_less(np.abs(estimate - expected), Z * se)
    np.testing.assert_array_less(Z * se, log_px - estimate)  # strictly below log p(x)
    np.testing.assert_allclose(out["loss"], -out["elbo"], rtol=1e-6)


@pytest.mark.parametrize("dtype,atol", [(np.float32, 2e-4), (np.float64, 1e-9)])
def test_elbo_with_exact_posterior_equals_log_px(dtype, atol):
    # For q = p(z|x) the integrand log p(x|z) + log p(z) - log q(z|x) = log p(x) for every
    # z, so one sample with the Monte Carlo KL (on the same z) is exact, as is every IWAE
    # bound. Tolerance: float rounding of terms of size ~10 nats (float32: ~1e-6 relative
    # per operation, plus rounding the posterior's parameters to float32).
    model = LinearGaussian(dtype=dtype, rng_seed=5)
    x = model.sample_x(8).astype(dtype)
    q, prior = model.exact_posterior(x), model.prior()
    log_px = model.log_px(x)
    one = objectives.elbo(x, q, prior, model.decode, seed=seed(5), kl="mc")
    np.testing.assert_allclose(one["elbo"], log_px, rtol=0, atol=atol)
    for k in (1, 7):
        iwae = objectives.iwae_bound(x, q, prior, model.decode, seed=seed(6), num_samples=k)
        np.testing.assert_allclose(iwae, log_px, rtol=0, atol=atol)
    lw = objectives.log_weights(x, q, prior, model.decode, q.sample(5, seed=seed(7)))
    assert lw.shape == (5, 8)
    np.testing.assert_allclose(lw, np.broadcast_to(log_px, (5, 8)), rtol=0, atol=atol)
    # With the analytic KL the single-sample estimate is not constant in z, only unbiased:
    num = 2000
    out = objectives.elbo(x, q, prior, model.decode, seed=seed(8), num_samples=num)
    per_sample = model.decode(out["z"]).log_prob(x).numpy().astype(np.float64)
    se = per_sample.std(axis=0, ddof=1) / math.sqrt(num)
    np.testing.assert_array_less(np.abs(out["elbo"].numpy() - log_px), Z * se + atol)


def gaussian_chi_square(mp, cov_p, mq, cov_q):
    """E_q[(p/q)^2] - 1 = int p^2 / q dz - 1 for Gaussians: the relative variance of the
    importance weight p(z|x) / q(z) (needs A = 2 cov_p^-1 - cov_q^-1 positive definite)."""
    pi, qi = np.linalg.inv(cov_p), np.linalg.inv(cov_q)
    a = 2 * pi - qi
    assert np.linalg.eigvalsh(a).min() > 0
    h = 2 * pi @ mp - qi @ mq
    log_int = (
        -np.linalg.slogdet(cov_p)[1]
        + 0.5 * np.linalg.slogdet(cov_q)[1]
        - 0.5 * np.linalg.slogdet(a)[1]
        + 0.5 * h @ np.linalg.solve(a, h)
        - mp @ pi @ mp
        + 0.5 * mq @ qi @ mq
    )
    return math.expm1(log_int)


def test_iwae_bound_grows_with_k_towards_log_px(model):
    # q(z|x) = N(mean + 1.5 sd, diag (1.5 sd)^2), sd the true posterior's marginal std:
    # wrong (KL(q || p(z|x)) ~ 8 nats) but wider than p(z|x), so the importance weights
    # have finite variance. Because q is p(z|x) shifted and scaled the same way for every
    # x, the relative weight variance sigma^2 = chi^2(p(z|x) || q) is one number.
    examples, repeats, parts = 8, 512, 4  # 8 x's, 4 * 512 independent bounds of each
    x = model.sample_x(examples)
    sd = np.sqrt(np.diag(model.post_cov))
    shift, width = 1.5 * sd, 1.5 * sd
    mean = model.post_mean(x) + shift
    sigma2 = gaussian_chi_square(np.zeros(model.L), model.post_cov, shift, np.diag(width**2))
    kl_true = tfd.kl_divergence(
        tfd.MultivariateNormalDiag(tf.constant(shift), tf.constant(width)),
        tfd.MultivariateNormalTriL(
            tf.zeros(model.L, tf.float64), np.linalg.cholesky(model.post_cov)
        ),
    ).numpy()
    # A batch of repeats * examples rows, each drawing its own z; run `parts` times with
    # different seeds (bounded memory at K = 1000).
    x_rep = np.tile(x, (repeats, 1)).astype(np.float32)
    q = tfd.MultivariateNormalDiag(
        model.t(np.tile(mean, (repeats, 1))),
        model.t(np.broadcast_to(width, (len(x_rep), model.L))),
    )
    log_px = np.tile(model.log_px(x), repeats * parts)
    gaps = {}
    for k in (1, 10, 100, 1000):
        bound = np.concatenate(
            [
                objectives.iwae_bound(
                    x_rep, q, model.prior(), model.decode, seed=seed(1000 * k + i), num_samples=k
                ).numpy()
                for i in range(parts)
            ]
        )
        gaps[k] = log_px - bound.astype(np.float64)  # >= 0 in expectation

    # K = 1 is the ELBO: E[gap_1] = KL(q || p(z|x)).
    g1, se1 = grouped_mean_and_se(gaps[1], examples)
    assert abs(g1 - kl_true) < Z * se1, (g1, kl_true, se1)
    # Strict growth: each mean increase exceeds Z standard errors of the difference (the
    # bounds for different K use independent z, so their variances add). Power: the
    # smallest step, K = 100 -> 1000, gains about sigma^2/2 (1/100 - 1/1000) ~ 0.021 nats
    # and Var L_K ~ sigma^2 / K, so its standard error over n = 16384 rows is about
    # sqrt(sigma^2 (1/100 + 1/1000) / n) ~ 0.0018: the expected margin is ~12 SE.
    for small, big in ((1, 10), (10, 100), (100, 1000)):
        diff, se = grouped_mean_and_se(gaps[small] - gaps[big], examples)
        assert diff > Z * se, (small, big, diff, se)
    # Approach to log p(x): by the delta method E[gap_K] = sigma^2 / (2K) + O(K^-2)
    # (Burda et al. 2016; Domke & Sheldon 2018). Allow twice the leading term (room for the
    # remainder, small at K = 1000 >> sigma^2 ~ 5) plus Z standard errors; the gap of a
    # lower bound cannot be negative beyond noise.
    g, se = grouped_mean_and_se(gaps[1000], examples)
    assert -Z * se < g < sigma2 / 1000 + Z * se, (g, sigma2 / 2000, se)


def test_iwae_from_chunks_equals_iwae_bound_on_the_same_samples(model):
    x = model.sample_x(5).astype(np.float32)
    q = tfd.MultivariateNormalDiag(
        model.t(model.post_mean(x) + 0.3), model.t(np.full((5, model.L), 0.5))
    )
    prior, k = model.prior(), 100
    bound = objectives.iwae_bound(x, q, prior, model.decode, seed=seed(9), num_samples=k)
    z = q.sample(k, seed=seed(9))  # the same stateless seed draws the same z
    chunks = [
        objectives.log_weights(x, q, prior, model.decode, z[a:b])
        for a, b in ((0, 30), (30, 60), (60, 100))
    ]
    tol = {"rtol": 1e-6, "atol": 1e-5}  # logsumexp in another order: float32 rounding
    np.testing.assert_allclose(objectives.iwae_from_chunks(chunks), bound, **tol)
    full = objectives.log_weights(x, q, prior, model.decode, z)
    np.testing.assert_allclose(objectives.iwae_from_chunks([full]), bound, **tol)
    np.testing.assert_allclose(objectives.iwae_from_chunks(full), bound, **tol)
    stacked = tf.reshape(full, [4, 25, 5])  # [C, S, B]
    np.testing.assert_allclose(objectives.iwae_from_chunks(stacked), bound, **tol)
    # K = 1 is the single-sample ELBO with the Monte Carlo KL, on the same z.
    one = objectives.iwae_bound(x, q, prior, model.decode, seed=seed(9), num_samples=1)
    elbo_one = objectives.elbo(x, q, prior, model.decode, seed=seed(9), kl="mc")["elbo"]
    np.testing.assert_allclose(one, elbo_one, **tol)
    # Against the plain formula in float64.
    lw = full.numpy().astype(np.float64)
    np.testing.assert_allclose(
        bound, scipy.special.logsumexp(lw, axis=0) - math.log(k), rtol=1e-6, atol=1e-5
    )


# ---------------------------------------------------------------------- 4. gradients


@pytest.mark.parametrize("kl", ["analytic", "mc"])
def test_reparameterised_gradients_match_closed_form(model, kl):
    # R independent single-sample ELBO estimates of one x: rows of loc/scale variables all
    # start at (m0, sigma0), so row r of the gradient of sum_r elbo_r is an independent
    # unbiased estimate of grad E_q[ELBO]. Compare the mean over R with the closed form
    #   dELBO/dm     = W^T (x - W m - b) / s^2 - m
    #   dELBO/dsigma = -sigma diag(W^T W) / s^2 - sigma + 1 / sigma
    # within Z standard errors (std over rows / sqrt(R)).
    repeats = 8192
    x = model.sample_x(1)[0]
    # The ELBO's gradient in m is -post_cov^-1 (m - post_mean): start where it is (-8, 8).
    m0 = model.post_mean(x) + model.post_cov @ np.array([8.0, -8.0])
    # ... and in sigma it is 1/sigma - sigma / sigma_opt^2: start at (2, 0.5) sigma_opt.
    sigma_opt = 1 / np.sqrt(np.diag(model.W.T @ model.W) / model.s**2 + 1)
    sigma0 = sigma_opt * np.array([2.0, 0.5])
    loc = tf.Variable(np.tile(m0, (repeats, 1)).astype(np.float32))
    scale = tf.Variable(np.tile(sigma0, (repeats, 1)).astype(np.float32))
    x_rep = np.tile(x, (repeats, 1)).astype(np.float32)
    with tf.GradientTape() as tape:
        q = tfd.MultivariateNormalDiag(loc, scale)
        out = objectives.elbo(x_rep, q, model.prior(), model.decode, seed=seed(10), kl=kl)
        total = tf.reduce_sum(out["elbo"])
    g_loc, g_scale = (g.numpy().astype(np.float64) for g in tape.gradient(total, [loc, scale]))

    W, b, s = model.W, model.b, model.s
    exact_loc = W.T @ (x - W @ m0 - b) / s**2 - m0
    exact_scale = -sigma0 * np.diag(W.T @ W) / s**2 - sigma0 + 1 / sigma0
    for grad, exact in ((g_loc, exact_loc), (g_scale, exact_scale)):
        assert np.all(np.isfinite(grad))
        assert np.all(grad.std(axis=0) > 0)  # stochastic: the gradient went through z
        se = grad.std(axis=0, ddof=1) / math.sqrt(repeats)
        np.testing.assert_array_less(np.abs(grad.mean(axis=0) - exact), Z * se)
        # The check discriminates: a zero (or sign-flipped) gradient would be 2 Z se off.
        assert np.all(np.abs(exact) > 2 * Z * se)


# ------------------------------------------------------------------- 5. tf.function / XLA


def test_xla_reproducible_and_consistent_with_eager(model):
    # XLA and TensorFlow's kernels implement stateless random numbers differently, so the
    # same seed draws different z with and without jit_compile. So: the compiled function
    # must be deterministic in its seed, and its numbers must equal an eager evaluation on
    # the z it drew. Plain tf.function (no XLA) must match eager exactly.
    x = model.sample_x(4).astype(np.float32)
    loc = model.t(model.post_mean(x) + 0.2)
    scale_tril = model.t(np.tile(np.linalg.cholesky(model.post_cov) * 1.2, (4, 1, 1)))

    def run(seed_):
        q = tfd.MultivariateNormalTriL(loc, scale_tril)
        prior = model.prior()
        out = objectives.elbo(x, q, prior, model.decode, seed=seed_, num_samples=3, beta=0.5)
        mix = objectives.elbo(x, q, mixture_prior(), model.decode, seed=seed_, num_samples=3)
        return {
            **out,
            "mix_kl": mix["kl"],  # "auto" fell back to Monte Carlo inside XLA
            "iwae": objectives.iwae_bound(x, q, prior, model.decode, seed=seed_, num_samples=5),
            "iwae_z": q.sample(5, seed=seed_),
        }

    def check_against_eager(res):
        q = tfd.MultivariateNormalTriL(loc, scale_tril)
        z = res["z"]
        rec = -tf.reduce_mean(model.decode(z).log_prob(x), 0)
        kl = tfd.kl_divergence(q, model.prior())
        lw = objectives.log_weights(x, q, model.prior(), model.decode, res["iwae_z"])
        mix_kl = objectives.kl_divergence(q, mixture_prior(), z=z, method="mc")
        # XLA may fuse and reorder float32 arithmetic: a few ulps of terms of ~10 nats.
        tol = {"rtol": 1e-5, "atol": 1e-5}
        np.testing.assert_allclose(res["reconstruction"], rec, **tol)
        np.testing.assert_allclose(res["kl"], kl, **tol)
        np.testing.assert_allclose(res["loss"], rec + 0.5 * kl, **tol)
        np.testing.assert_allclose(res["elbo"], -(rec + kl), **tol)
        np.testing.assert_allclose(res["mix_kl"], mix_kl, **tol)
        np.testing.assert_allclose(res["iwae"], objectives.iwae_from_chunks([lw]), **tol)

    xla = tf.function(run, jit_compile=True)
    a, again, other = xla(seed(11)), xla(seed(11)), xla(seed(12))
    for key in a:
        np.testing.assert_array_equal(a[key], again[key])
    assert not np.allclose(a["z"], other["z"])
    assert not np.allclose(a["elbo"], other["elbo"])
    check_against_eager(a)

    eager, graph = run(seed(11)), tf.function(run)(seed(11))
    for key in eager:
        np.testing.assert_allclose(graph[key], eager[key], rtol=1e-6, atol=1e-6)
    check_against_eager(eager)

    # Given z, XLA and eager compute the same numbers.
    z = eager["iwae_z"]

    def given_z(z_):
        q = tfd.MultivariateNormalTriL(loc, scale_tril)
        lw = objectives.log_weights(x, q, model.prior(), model.decode, z_)
        kl = objectives.kl_divergence(q, model.prior(), z=z_, method="mc")
        return lw, kl, objectives.iwae_from_chunks([lw[:2], lw[2:]])

    for got, want in zip(tf.function(given_z, jit_compile=True)(z), given_z(z), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------- 6. beta and arguments


def test_beta_scales_only_the_kl(model):
    x = model.sample_x(4).astype(np.float32)
    q = tfd.MultivariateNormalDiag(model.t(model.post_mean(x)), model.t(np.full((4, 2), 0.7)))
    args = (x, q, model.prior(), model.decode)
    ref = objectives.elbo(*args, seed=seed(13), num_samples=2)
    np.testing.assert_allclose(ref["loss"], -ref["elbo"], rtol=1e-6)
    for beta in (0.0, 0.25, 3.0, tf.constant(0.25), tf.Variable(2.0)):
        out = objectives.elbo(*args, seed=seed(13), num_samples=2, beta=beta)
        for key in ("elbo", "reconstruction", "kl", "z"):
            np.testing.assert_array_equal(out[key], ref[key])
        expected = ref["reconstruction"] + float(np.asarray(beta)) * ref["kl"]
        np.testing.assert_allclose(out["loss"], expected, rtol=1e-6)


def test_discrete_likelihood_gives_positive_reconstruction_in_nats():
    # Independent(Bernoulli) has dtype int32: the data must not be cast to it (which
    # would floor continuous targets); Bernoulli casts them to float itself.
    rng = np.random.default_rng(14)
    logits = rng.normal(size=(4, 6)).astype(np.float32)

    def decode(z):  # z [S, B, 2] -> p(x|z) with batch [S, B], event [6]
        return tfd.Independent(tfd.Bernoulli(logits=logits + 0 * z[..., :1]), 1)

    q = tfd.MultivariateNormalDiag(tf.zeros([4, 2]), tf.ones([4, 2]))
    for x in (
        rng.integers(0, 2, size=(4, 6)).astype(np.float32),
        rng.uniform(size=(4, 6)),
    ):
        out = objectives.elbo(x, q, standard_normal(2), decode, seed=seed(15))
        bce = np.sum(np.logaddexp(0, logits) - x * logits, axis=-1)  # sigmoid cross-entropy
        np.testing.assert_allclose(out["reconstruction"], bce, rtol=1e-5)
        assert np.all(out["reconstruction"].numpy() > 0)


def test_float16_data_with_float32_likelihood(model):
    x = model.sample_x(3)
    q = model.exact_posterior(x)
    out = objectives.elbo(x.astype(np.float16), q, model.prior(), model.decode, seed=seed(16))
    assert out["elbo"].dtype == tf.float32


def test_invalid_arguments_raise_config_error(model):
    x = model.sample_x(2).astype(np.float32)
    q = model.exact_posterior(x)
    args = (x, q, model.prior(), model.decode)
    with pytest.raises(ConfigError, match=r"Expected num_samples >= 1. Received: num_samples=0"):
        objectives.elbo(*args, seed=seed(0), num_samples=0)
    with pytest.raises(ConfigError, match="num_samples"):
        objectives.elbo(*args, seed=seed(0), num_samples=1.5)
    with pytest.raises(ConfigError, match=r"Received: num_samples=-3"):
        objectives.iwae_bound(*args, seed=seed(0), num_samples=-3)
    with pytest.raises(ConfigError, match=r"Expected kl to be one of .*Received: kl='exact'"):
        objectives.elbo(*args, seed=seed(0), kl="exact")
    with pytest.raises(ConfigError, match=r"Received: method='closed'"):
        objectives.kl_divergence(q, model.prior(), method="closed")
    with pytest.raises(ConfigError, match=r"Received: beta=-1"):
        objectives.elbo(*args, seed=seed(0), beta=-1.0)
    with pytest.raises(ConfigError, match="Received: log_weight_chunks=\\[\\]"):
        objectives.iwae_from_chunks([])
    with pytest.raises(ConfigError, match="Received: shape"):
        objectives.iwae_from_chunks(tf.zeros([2, 3, 4, 5]))

    def per_dimension_decode(z):  # forgot tfd.Independent: batch [S, B, D]
        return tfd.Normal(model.decode(z).mean(), 1.0)

    with pytest.raises(ConfigError, match="tfd.Independent"):
        objectives.elbo(x, q, model.prior(), per_dimension_decode, seed=seed(0))
