"""log p(x) by four methods, BDMC and the variational gaps, against the closed forms of the
linear-Gaussian model (DESIGN.md: probabilistic PCA)."""

import keras
import numpy as np
import pytest

import kvae
from kvae import evaluation
from kvae.errors import ConfigError

D, LATENT = 5, 2


def _data(n=200):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, D)) @ rng.standard_normal((D, D))).astype("float32")


def _linear(posterior="gaussian", epochs=10):
    keras.utils.set_random_seed(0)
    model = kvae.VAE(
        data_shape=(D,),
        latent_dim=LATENT,
        encoder_kwargs={"hidden": []},
        decoder_kwargs={"hidden": []},
        likelihood="gaussian",
        likelihood_kwargs={"scale": "scalar"},
        posterior=posterior,
        seed=0,
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.fit(_data(), epochs=epochs, batch_size=50, verbose=0)
    return model


@pytest.fixture(scope="module")
def linear():
    return _linear()


@pytest.fixture(scope="module")
def x():
    return _data()[:40]


@pytest.fixture(scope="module")
def exact(linear, x):
    return evaluation.exact_log_likelihood(linear, x).estimate


def test_exact_is_the_ppca_density(linear, x, exact):
    """Independent check of the closed form: log N(x; b, W^T W + s^2 I) via scipy."""
    from scipy.stats import multivariate_normal

    w, b = linear.likelihood_head.projection.get_weights()
    s2 = float(linear.likelihood_head.sigma().numpy()) ** 2
    ref = multivariate_normal(b, w.T.astype(np.float64) @ w + s2 * np.eye(D)).logpdf(x)
    np.testing.assert_allclose(exact, ref, atol=1e-4)
    assert np.all(np.diff(exact) != 0)  # per example, not one broadcast number


def test_quadrature_equals_exact(linear, x, exact):
    """Deterministic: the grid (65 x 65 over +-6 posterior sd) is spectrally accurate, so
    the issue's 1e-4 nats is the tolerance, with nothing stochastic to allow for."""
    ll = linear.log_likelihood(x, method="quadrature")
    assert ll.method == "quadrature" and np.all(ll.stderr == 0)
    np.testing.assert_allclose(ll.estimate, exact, atol=1e-4)
    assert np.max(ll.info["edge_mass"]) < 1e-6
    assert np.max(ll.info["resolution_error"]) < 1e-3


def test_quadrature_widens_a_narrow_grid_or_refuses(linear, x, exact):
    """num_sd=0.5 asks for a fine grid of half a standard deviation: the placement must still
    reach the posterior's mass (the coarse pass's extent, then doubling) and give the exact
    answer; a mass requirement that cannot be met without widening is refused, never
    truncated."""
    ll = linear.log_likelihood(x[:8], method="quadrature", num_sd=0.5, max_widen=8)
    np.testing.assert_allclose(ll.estimate, exact[:8], atol=1e-4)
    with pytest.raises(ConfigError, match="edge"):
        linear.log_likelihood(x[:8], method="quadrature", edge_tol=1e-200, max_widen=0)


def test_ais_within_three_standard_errors_of_exact(linear, x, exact):
    ll = linear.log_likelihood(x, method="ais")
    assert ll.method == "ais"
    # The issue: SE below 0.05 nats with the default settings.
    assert np.all(ll.stderr < 0.05), ll.stderr.max()
    # AIS is a stochastic lower bound: per example it may exceed exact only by noise. The SE
    # of one example is itself estimated from 16 chains (about 20% relative error, and the
    # delta method under-states skewed weights), so over 40 examples the per-example bound is
    # 5 of its SEs (plus 1e-3 for float32 rounding of ~10-nat sums); its shortfall also holds
    # the bias of finitely many temperatures, which the SE does not measure, so below it is
    # bounded by the mean check and a loose 0.1 nats.
    assert np.all(ll.estimate - exact <= 5 * ll.stderr + 1e-3)
    assert np.all(exact - ll.estimate < 0.1)
    # The mean over 40 examples within 3 SE of the mean (SEs combine as sqrt(sum se^2)/n).
    se_mean = np.sqrt(np.sum(ll.stderr**2)) / len(x)
    assert abs(np.mean(ll.estimate - exact)) <= 3 * se_mean
    # The step size was adapted (not left at its start) and acceptance is near the target.
    assert 0.4 < float(np.mean(ll.info["accept"])) < 0.9
    assert np.std(np.log(ll.info["step_size"][:, 0])) > 0.01


def test_iwae_does_not_exceed_exact(linear, x, exact):
    """IWAE is a lower bound in expectation: above exact only by noise. Per example the
    excess stays below 4 SE (with 40 examples, P(any z > 4) ~ 1e-3 for unbiased noise, and
    IWAE's bias is downward); the mean's excess is below one SE of the mean."""
    ll = linear.log_likelihood(x, method="iwae", num_samples=2000, seed=3)
    assert np.all(ll.estimate - exact <= 4 * ll.stderr)
    se_mean = np.sqrt(np.sum(ll.stderr**2)) / len(x)
    assert np.mean(ll.estimate - exact) <= se_mean
    # ... and it is close: the bias of K=2000 here is far below 0.05 nats.
    assert np.mean(exact - ll.estimate) < 0.05
    # Its SE is honest: K=1 (the ELBO) has a far larger one.
    one = linear.log_likelihood(x, method="iwae", num_samples=50, seed=3)
    assert np.mean(one.stderr) > np.mean(ll.stderr) * 3


def test_legacy_call_returns_the_array(linear, x):
    arr = linear.log_likelihood(x, num_samples=10, seed=1)
    assert isinstance(arr, np.ndarray) and arr.shape == (len(x),)
    res = linear.log_likelihood(x, num_samples=10, seed=1, return_stderr=True)
    np.testing.assert_array_equal(np.asarray(res), arr)
    assert res.stderr.shape == arr.shape and np.all(res.stderr > 0)


def test_auto_picks_exact_then_quadrature_then_iwae(linear, x):
    assert linear.log_likelihood(x[:4], method="auto").method == "exact"
    nonlinear = kvae.VAE(data_shape=(D,), latent_dim=2, likelihood="gaussian", seed=0)
    assert evaluation.log_likelihood(nonlinear, x[:4], method="auto").method == "quadrature"
    big = kvae.VAE(data_shape=(D,), latent_dim=8, likelihood="gaussian", seed=0)
    res = evaluation.log_likelihood(big, x[:4], method="auto", num_samples=5)
    assert res.method == "iwae" and res.info["num_samples"] == 5


def test_bdmc_brackets_the_exact_value(linear):
    out = evaluation.bdmc(linear, n=30, num_temperatures=200, seed=1)
    exact = evaluation.exact_log_likelihood(linear, out["x"]).estimate
    # Stochastic bounds: each mean within 3 SE (sqrt(sum se^2)/n) of its side of the bracket.
    n = len(exact)
    se_lo = np.sqrt(np.sum(out["lower_stderr"] ** 2)) / n
    se_hi = np.sqrt(np.sum(out["upper_stderr"] ** 2)) / n
    assert out["lower_mean"] <= np.mean(exact) + 3 * se_lo
    assert out["upper_mean"] >= np.mean(exact) - 3 * se_hi
    assert out["width_mean"] == pytest.approx(out["upper_mean"] - out["lower_mean"])
    assert abs(out["width_mean"]) < 0.2  # a tight bracket on a 2-D Gaussian posterior


def test_gaps_full_covariance_posterior_has_no_approximation_gap(x):
    model = _linear(posterior="full-gaussian")
    g = evaluation.gaps(model, x[:20])
    assert g["method"] == "exact"
    # q* can equal p(z|x) exactly: the gap is 0 up to the optimiser's tolerance.
    assert abs(g["summary"]["gap_approximation"]) < 0.01
    assert np.all(np.abs(g["approximation_gap"]) < 0.01 + 3 * g["approximation_gap_stderr"])
    np.testing.assert_allclose(
        g["inference_gap"], g["approximation_gap"] + g["amortisation_gap"], atol=1e-9
    )


def test_gaps_mean_field_equals_the_closed_form(linear, x):
    g = evaluation.gaps(linear, x[:30])
    _, precision = evaluation.linear_gaussian_posterior(linear, x[:30])
    expected = evaluation.mean_field_gap(precision)  # same for every x (shared precision)
    assert expected > 0.002  # the test means something: L is far from diagonal
    s = g["summary"]
    # 3 SE of the mean, plus the optimiser's stopping tolerance (1e-4 per iteration) and the
    # sample-average bias of optimising on 512 fixed samples (O(d / S) ~ 0.004 nats).
    assert abs(s["gap_approximation"] - expected) < 3 * s["gap_approximation_stderr"] + 0.005
    # The encoder is not optimal per example: a positive amortisation gap, and ELBO(q*) >= ELBO(q).
    assert s["gap_amortisation"] > 3 * s["gap_amortisation_stderr"]
    assert s["gap_inference"] > s["gap_approximation"]


# ----- bad input ---------------------------------------------------------------------------
def test_methods_that_do_not_apply_name_those_that_do(x):
    nonlinear = kvae.VAE(data_shape=(D,), latent_dim=2, likelihood="gaussian", seed=0)
    with pytest.raises(
        ConfigError, match=r"decoder is not linear.*\['iwae', 'quadrature', 'ais'\]"
    ):
        nonlinear.log_likelihood(x, method="exact")
    big = kvae.VAE(data_shape=(D,), latent_dim=8, likelihood="gaussian", seed=0)
    with pytest.raises(ConfigError, match=r"latent_dim=8.*\['iwae', 'ais'\]"):
        big.log_likelihood(x, method="quadrature")
    with pytest.raises(ConfigError, match="one of"):
        big.log_likelihood(x, method="laplace")


def test_a_conditional_model_has_iwae_only_said_in_one_place(x):
    """log p(x|y) has one method, IWAE, and one function says so
    (kvae.evaluation.log_likelihood, through evaluation.applicable): "auto" picks it, the
    others are refused before any work with the list of what applies, the same through
    VAE.log_likelihood (a thin delegate), evaluation.evaluate and evaluation.gaps."""
    from kvae.errors import DataError

    model = kvae.VAE(data_shape=(D,), latent_dim=2, likelihood="gaussian", condition=3, seed=0)
    xs, y = x[:6], np.arange(6) % 3
    res = evaluation.log_likelihood(model, xs, method="auto", y=y, num_samples=4, seed=0)
    assert res.method == "iwae" and res.estimate.shape == (6,)
    # The model's method is the same call: the same numbers, bit for bit.
    np.testing.assert_array_equal(model.log_likelihood(xs, y=y, num_samples=4, seed=0), res)
    # The condition matters (else the delegate might have dropped y).
    other = model.log_likelihood(xs, y=(y + 1) % 3, num_samples=4, seed=0)
    assert np.abs(other - res.estimate).max() > 1e-4
    refused = r"conditional.*Methods that apply to this model: \['iwae'\]"
    for method in ("exact", "quadrature", "ais"):
        with pytest.raises(ConfigError, match=refused):
            evaluation.log_likelihood(model, xs, method=method, y=y)
        with pytest.raises(ConfigError, match=refused):
            model.log_likelihood(xs, method=method, y=y)
        with pytest.raises(ConfigError, match=refused):
            evaluation.evaluate(model, xs, num_samples=4, method=method, y=y)
    with pytest.raises(ConfigError, match=r"one of the methods \['exact', 'quadrature', 'ais'\]"):
        evaluation.gaps(model, xs)  # the gaps need one of them: a message, not StopIteration
    with pytest.raises(DataError, match="conditional"):
        evaluation.log_likelihood(model, xs, method="iwae", num_samples=4)  # y missing


def test_q_moments_closed_form_or_from_samples():
    """One function for q's mean and scale: closed form for a Gaussian q; from samples for a
    flow, whose mean() is f(mu), not E[z] (the samples' mean, not f(mu), is returned)."""
    x = _data()[:3]
    gaussian = kvae.VAE(data_shape=(D,), latent_dim=2, likelihood="gaussian", seed=0)
    q = gaussian.encode(x)
    m, s = evaluation.q_moments(q)
    np.testing.assert_array_equal(m, np.asarray(q.mean(), np.float64))
    np.testing.assert_array_equal(s, np.asarray(q.stddev(), np.float64))
    flow = kvae.VAE(
        data_shape=(D,),
        latent_dim=2,
        likelihood="gaussian",
        posterior="iaf",
        posterior_kwargs={"num_steps": 2, "hidden_units": [8]},
        seed=0,
    )
    q = flow.encode(x)
    m, s = evaluation.q_moments(q, num_samples=4000, seed=(3, 4))
    z = np.asarray(q.sample(20000, seed=(5, 6)), np.float64)
    # Within 5 standard errors of an independent, larger sample's moments.
    se_m = z.std(0) * np.sqrt(1 / 4000 + 1 / 20000)
    np.testing.assert_array_less(np.abs(m - z.mean(0)), 5 * se_m)
    np.testing.assert_allclose(s, z.std(0), rtol=5 * np.sqrt(1 / 8000 + 1 / 40000))
    assert m.shape == s.shape == (3, 2)
    # Reproducible from its seed; another seed gives other draws.
    np.testing.assert_array_equal(m, evaluation.q_moments(q, num_samples=4000, seed=(3, 4))[0])
    assert np.abs(m - evaluation.q_moments(q, num_samples=4000, seed=(3, 5))[0]).max() > 0


@pytest.mark.parametrize(
    "options, match",
    [
        ({"num_temperatures": 0}, "num_temperatures"),
        ({"num_leapfrog_steps": 0}, "num_leapfrog_steps"),
        ({"init_step_size": -0.1}, "init_step_size"),
        ({"num_chains": 1.5}, "num_chains"),
        ({"target_accept": 1.2}, "target_accept"),
        ({"leapfrog": 3}, "unknown"),
    ],
)
def test_ais_settings_out_of_range_are_refused_before_work(linear, x, options, match):
    with pytest.raises(ConfigError, match=match):
        linear.log_likelihood(x, method="ais", **options)


def test_nan_estimate_is_reported_with_its_index():
    res = evaluation.LogLikelihood(np.array([-1.0, np.nan, -2.0]), np.zeros(3), "iwae", {})
    assert res.nan_indices == [1]
    with pytest.warns(RuntimeWarning, match=r"indices \[1\]"):
        assert np.isnan(res.mean())
    assert res.summary()["log_likelihood_nan_examples"] == [1]


def test_a_nan_model_reports_indices_not_a_silent_mean(x):
    """A decoder weight that is NaN makes log p(x|z) NaN for every example: each method
    returns NaN estimates that LogLikelihood names by index, and evaluate() lists them."""
    model = _linear(epochs=1)
    head = model.likelihood_head.projection
    w, b = head.get_weights()
    b[0] = np.nan
    head.set_weights([w, b])
    for method, options in (("quadrature", {}), ("iwae", {"num_samples": 3})):
        res = evaluation.log_likelihood(model, x[:5], method=method, **options)
        assert res.nan_indices == [0, 1, 2, 3, 4], method
    m = evaluation.evaluate(model, x[:5], num_samples=3, method="quadrature")
    assert m["log_likelihood_nan_examples"] == [0, 1, 2, 3, 4] and np.isnan(m["log_likelihood"])
