"""Quadrature refines its grid on a posterior far narrower than q, and says (and checks) its
numerical error; the ELBO on q's grid checks q's mass (issue 22 item 4)."""

import numpy as np
import pytest

import kvae
from kvae import evaluation
from kvae.errors import ConfigError

D = 5


def linear_vae(**kwargs):
    """A VAE with a linear encoder and decoder and a Gaussian likelihood, 2-D latent."""
    options = dict(
        data_shape=(D,),
        latent_dim=2,
        encoder_kwargs={"hidden": []},
        decoder_kwargs={"hidden": []},
        likelihood="gaussian",
        seed=0,
    )
    return kvae.VAE(**{**options, **kwargs})


def narrow_linear(scale, n=8):
    """A linear-Gaussian model with noise ``scale`` and an encoder whose weights are all 0:
    p(z|x) has standard deviations of about ``scale / |W|`` while q is the same for every x
    (20x wider at scale 0.03), and log p(x) has a closed form. Data drawn from the model."""
    model = linear_vae(likelihood_kwargs={"scale": "fixed", "init_scale": scale})
    head = model.posterior_head
    head.set_weights([np.zeros_like(v) for v in head.get_weights()])
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, D)).astype("float32")
    model.likelihood_head.projection.set_weights([w, np.zeros(D, "float32")])
    z = rng.standard_normal((n, 2)).astype("float32")
    x = (z @ w + scale * rng.standard_normal((n, D))).astype("float32")
    return model, x


def kl_to_linear_posterior(model, x):
    """KL(q(z|x) || p(z|x)) per example in closed form, for a linear-Gaussian model and a
    diagonal Gaussian q: 0.5 [tr(L S) + (m - m_q)^T L (m - m_q) - d - log det L - log det S]
    with L the posterior precision, m its mean, S = diag(s_q^2)."""
    q = model.encode(x)
    m_q, s_q = (np.asarray(v, np.float64) for v in (q.mean(), q.stddev()))
    means, precision = evaluation.linear_gaussian_posterior(model, x)
    d = precision.shape[0]
    return 0.5 * (
        np.sum(np.diag(precision)[None] * s_q**2, axis=1)
        + np.einsum("bi,ij,bj->b", means - m_q, precision, means - m_q)
        - d
        - np.linalg.slogdet(precision)[1]
        - np.sum(np.log(s_q**2), axis=1)
    )


@pytest.fixture(scope="module")
def narrow():
    return narrow_linear(0.03)


def test_quadrature_refines_on_a_posterior_much_narrower_than_q(narrow):
    """Before, the fine grid sampled this posterior at about 2 of its standard deviations
    per point and was 5.6 nats off (the resolution check showed 30 nats, and nothing read
    it). A deterministic sum: the tolerance is the issue's 1e-4 nats."""
    model, x = narrow
    _, precision = evaluation.linear_gaussian_posterior(model, x)
    q_sd = np.asarray(model.encode(x).stddev())
    assert np.min(q_sd) > 10 * np.max(1 / np.sqrt(np.diag(precision)))  # the case in point
    exact = evaluation.exact_log_likelihood(model, x).estimate
    ll = evaluation.quadrature_log_likelihood(model, x)
    np.testing.assert_allclose(ll.estimate, exact, atol=1e-4)
    assert np.all(ll.info["refinements"] >= 1)
    assert np.max(ll.info["resolution_error"]) < 1e-4
    summary = ll.summary()
    assert summary["log_likelihood_resolution_error"] == np.max(ll.info["resolution_error"])
    assert summary["log_likelihood_resolution_tol"] == ll.info["resolution_tol"]


def test_quadrature_makes_a_coarse_grid_finer_before_it_answers(narrow):
    """grid=9 points per axis cannot resolve the posterior within resolution_tol: the grid
    is made finer (9 -> 17 -> 33) until it does, and the answer is exact."""
    model, x = narrow
    exact = evaluation.exact_log_likelihood(model, x).estimate
    ll = evaluation.quadrature_log_likelihood(model, x, grid=9, resolution_tol=1e-3)
    assert np.all(ll.info["grid_used"] > 9) and ll.info["grid"] == 9
    assert np.max(ll.info["resolution_error"]) <= 1e-3
    np.testing.assert_allclose(ll.estimate, exact, atol=1e-3)


def test_quadrature_refuses_past_its_resolution_tolerance(narrow):
    model, x = narrow
    with pytest.raises(ConfigError, match=r"resolution_tol=1e-12.*larger grid"):
        evaluation.quadrature_log_likelihood(model, x[:2], resolution_tol=1e-12)
    with pytest.raises(ConfigError, match="resolution_tol > 0"):
        evaluation.quadrature_log_likelihood(model, x[:2], resolution_tol=0)


def test_elbo_quadrature_checks_q_mass_on_its_grid(narrow):
    """ELBO(q) = log p(x) - KL(q || p(z|x)), both in closed form for this model; +-1 sd of q
    holds 47% of its mass in 2-D, which was summed as if it were all of it."""
    model, x = narrow
    kl = kl_to_linear_posterior(model, x)
    expected = evaluation.exact_log_likelihood(model, x).estimate - kl
    elbo = evaluation.elbo_quadrature(model, x)
    np.testing.assert_allclose(elbo, expected, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"mass 1.*num_sd"):
        evaluation.elbo_quadrature(model, x, num_sd=1.0)
