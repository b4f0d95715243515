"""kvae.evaluation: active units, per-dimension KL, the evaluate() summary."""

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae import evaluation, objectives
from kvae.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    (x, y), (xt, yt) = kvae.datasets.load("digits")
    return x[:200], xt[:64]


def _model(latent_dim=3, **kwargs):
    model = kvae.VAE(
        data_shape=(8, 8, 1),
        latent_dim=latent_dim,
        encoder_kwargs={"hidden": [32]},
        decoder_kwargs={"hidden": [32]},
        seed=0,
        **kwargs,
    )
    model.compile(jit_compile=False, steps_per_execution=1)
    return model


def test_active_units_is_burdas_covariance_criterion():
    rng = np.random.default_rng(0)
    n = 20000
    means = np.stack([rng.normal(0, 1.0, n), rng.normal(0, 0.05, n), rng.normal(0, 0.2, n)], axis=1)
    # variances 1, 0.0025, 0.04: with n=20000 their estimates are within ~1% (sd of a sample
    # variance is var * sqrt(2/n)), far from the 0.01 threshold.
    count, variances = evaluation.active_units(means)
    assert count == 2
    np.testing.assert_allclose(variances, [1.0, 0.0025, 0.04], rtol=0.05)


def test_kl_per_dim_sums_to_the_analytic_kl(digits):
    x, _ = digits
    model = _model()
    kl, method = evaluation.kl_per_dimension(model, x)
    assert "analytic" in method and kl.shape == (3,)
    q = model.encode(x)
    total = objectives.kl_divergence(q, model.prior_distribution(), method="analytic")
    np.testing.assert_allclose(kl.sum(), float(tf.reduce_mean(total)), rtol=1e-4)
    # closed form per dimension: 0.5 * (mu^2 + s^2 - 1 - log s^2)
    mu, s = q.mean().numpy().astype(np.float64), q.stddev().numpy().astype(np.float64)
    expected = (0.5 * (mu**2 + s**2 - 1 - np.log(s**2))).mean(axis=0)
    np.testing.assert_allclose(kl, expected, rtol=1e-5)


def test_kl_per_dim_monte_carlo_for_a_mixture_prior(digits):
    """A one-component mixture has Gaussian marginals: the Monte Carlo estimate must agree
    with the closed form within its standard error (64 samples x 200 examples)."""
    x, _ = digits
    model = _model(prior="mixture", prior_kwargs={"num_components": 1, "init_spread": 0.5})
    kl, method = evaluation.kl_per_dimension(model, x, seed=1)
    assert "Monte Carlo" in method
    mu, s = evaluation.posterior_moments(model, x)
    prior = model.prior_distribution().components_distribution
    m, t = prior.mean().numpy()[0], prior.stddev().numpy()[0]
    exact = np.log(t / s) + (s**2 + (mu - m) ** 2) / (2 * t**2) - 0.5
    # per-sample terms log q - log p have sd <= ~1 nat here; the mean over 12800 draws has
    # a standard error below 0.01; 5 standard errors:
    np.testing.assert_allclose(kl, exact.mean(axis=0), atol=0.05)


def test_evaluate_summary(digits):
    _, xt = digits
    model = _model(latent_dim=2)
    m = evaluation.evaluate(model, xt, num_samples=50, batch_size=32)
    for key in ("loss", "elbo", "reconstruction", "kl", "log_likelihood", "active_units"):
        assert key in m
    assert m["num_examples"] == 64 and m["latent_dim"] == 2
    assert m["log_likelihood_num_samples"] == 50 and m["log_likelihood_stderr"] > 0
    assert len(m["kl_per_dim"]) == 2
    np.testing.assert_allclose(m["elbo"], -(m["reconstruction"] + m["kl"]), rtol=1e-5)
    # Two-sided: E[ELBO] <= E[IWAE_50] <= log p(x), both ends by quadrature on the 2-D
    # latent (independent of the importance sampler); the slack is 4 of the estimate's own
    # Monte Carlo standard errors of the mean plus the quadrature's resolution checks.
    se = m["log_likelihood_mean_mc_stderr"]
    assert 0 < se < 0.5
    exact = evaluation.log_likelihood(model, xt, method="quadrature")
    elbo = evaluation.elbo_quadrature(model, xt).mean()
    slack = 4 * se + float(np.mean(exact.info["resolution_error"]))
    assert elbo - slack <= m["log_likelihood"] <= exact.mean() + slack
    assert exact.mean() - elbo > 2 * slack  # the sandwich is not trivially wide


def test_evaluate_skip_likelihood_and_bad_k(digits):
    _, xt = digits
    model = _model(latent_dim=2)
    m = evaluation.evaluate(model, xt, num_samples=0)
    assert "log_likelihood" not in m
    with pytest.raises(ConfigError, match="num_samples"):
        evaluation.evaluate(model, xt, num_samples=-1)


def test_kl_per_dim_of_a_three_component_mixture_matches_quadrature(digits):
    """Per-dimension KL(q(z_u|x) || p(z_u)) to a mixture marginal p(z_u) = sum_c pi_c
    N(loc_cu, sd_cu^2) with 3 well-separated components, against a 1-D quadrature of
    q log(q / p) per example and dimension (independent of kvae's Monte Carlo)."""
    x, _ = digits
    model = _model(prior="mixture", prior_kwargs={"num_components": 3, "init_spread": 2.0})
    kl, method = evaluation.kl_per_dimension(model, x, seed=2)
    assert "Monte Carlo" in method
    mu, s = (np.asarray(v, np.float64) for v in evaluation.posterior_moments(model, x))
    prior = model.prior_distribution()
    log_pi = np.asarray(tf.nn.log_softmax(prior.mixture_distribution.logits_parameter()))
    locs = np.asarray(prior.components_distribution.mean(), np.float64)  # (C, L)
    sds = np.asarray(prior.components_distribution.stddev(), np.float64)
    assert np.ptp(locs, axis=0).min() > 1.0  # the components really differ

    def log_normal(z, m, sd):
        return -0.5 * ((z - m) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)

    # Midpoint rule over mu +- 10 sd of q: the error is far below 1e-6 for these smooth
    # integrands; the tails outside hold < 1e-20 of q's mass.
    t = (np.arange(2000) + 0.5) / 2000 * 20 - 10  # (G,)
    z = mu[None] + s[None] * t[:, None, None]  # (G, N, L)
    log_q = log_normal(z, mu, s)
    per_c = log_normal(z[..., None, :], locs, sds) + log_pi[:, None]  # (G, N, C, L)
    log_p = np.logaddexp.reduce(per_c, axis=-2)
    exact = (np.exp(log_q) * (log_q - log_p)).sum(axis=0) * (20 / 2000) * s  # (N, L)
    exact = exact.mean(axis=0)
    # kvae's estimate: 64 draws x 200 examples per dimension; the per-draw terms
    # log q - log p have a spread of about 1 nat here, so the standard error is ~0.01;
    # 5 standard errors:
    np.testing.assert_allclose(kl, exact, atol=0.05)
    # A wrong marginal (the first component alone) would be far off.
    one = np.log(sds[0] / s) + (s**2 + (mu - locs[0]) ** 2) / (2 * sds[0] ** 2) - 0.5
    assert np.abs(one.mean(axis=0) - exact).max() > 0.2


def test_evaluate_progress_and_timings(digits, capsys):
    _, xt = digits
    model = _model(latent_dim=2)
    quiet = evaluation.evaluate(model, xt, num_samples=4, batch_size=32)
    assert capsys.readouterr().out == ""  # verbose=0 (the default) prints nothing
    assert set(quiet["seconds"]) == {"elbo", "log_likelihood", "latent"}
    assert all(0 <= v < 300 for v in quiet["seconds"].values())
    evaluation.evaluate(model, xt, num_samples=4, batch_size=32, verbose=2)
    out = capsys.readouterr().out
    # a title and one line per estimate: 64 examples = 2 batches of 32; 1 encoder batch
    assert "ELBO of 64 examples" in out and "K=4" in out and "Active units" in out
    assert out.count("2/2") == 2 and "1/1" in out
    # encoding alone (kvae encode) counts its batches too
    evaluation.posterior_moments(model, xt, batch_size=16, verbose=2)
    assert "4/4" in capsys.readouterr().out


def test_without_a_terminal_long_steps_report_on_stderr(digits, capsys, monkeypatch):
    """verbose="auto" with standard output not a terminal (as under pytest): no bar, and
    the loops' progress lines reach standard error once a step is long. Steps here take
    under a second, so "long" is lowered from a minute to zero seconds."""
    from kvae import _progress

    _, xt = digits
    model = _model(latent_dim=2)
    evaluation.evaluate(model, xt, num_samples=4, batch_size=32, verbose="auto")
    assert capsys.readouterr() == ("", "")  # short steps: silent
    monkeypatch.setattr(_progress, "QUIET_SECONDS", 0.0)
    evaluation.evaluate(model, xt, num_samples=4, batch_size=32, verbose="auto")
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    # log p(x): 2 batches of 32, a line each; the posterior moments: 1 batch of 1000
    assert lines == [line for line in lines if line.startswith("kvae: ") and "steps (" in line], err
    assert sum("/2 steps" in line for line in lines) == 2
    assert any(line.startswith("kvae: posterior moments: 1/1 steps (100%)") for line in lines)


def test_quadrature_and_the_gaps_report_progress_without_a_terminal(digits, capsys, monkeypatch):
    """The two long steps of `kvae evaluate --gaps` (log p(x) by quadrature: minutes on all
    of MNIST; the gaps' q* optimisation) write progress lines too, one per batch here."""
    from kvae import _progress

    _, xt = digits
    model = _model(latent_dim=2)
    monkeypatch.setattr(_progress, "QUIET_SECONDS", 0.0)
    evaluation.quadrature_log_likelihood(model, xt[:6], batch_size=3, verbose="auto")
    evaluation.gaps(
        model,
        xt[:4],
        method="quadrature",
        batch_size=2,
        num_samples=8,
        opt_samples=8,
        max_iterations=2,
        verbose="auto",
    )
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert sum(ln.startswith("kvae: log p(x) by quadrature: ") for ln in lines) == 2, err
    assert sum(ln.startswith("kvae: gaps (q* per example): ") for ln in lines) == 2, err


def test_the_gaps_report_their_seconds_in_the_time_row(digits):
    """`kvae evaluate --gaps` printed a time row without the gaps (issue 22): their wall
    clock is in the summary and in the table like every other estimate's."""
    import time

    from kvae.cli.run import _add_gaps, _table

    _, xt = digits
    model = _model(latent_dim=2)
    m = evaluation.evaluate(model, xt[:8], num_samples=4, batch_size=8)
    began = time.perf_counter()
    g = evaluation.gaps(model, xt[:4], method="quadrature", num_samples=16, batch_size=4)
    took = time.perf_counter() - began
    assert 0 < g["summary"]["gap_seconds"] <= took + 1e-3
    _add_gaps(m, g["summary"])
    assert set(m["seconds"]) == {"elbo", "log_likelihood", "latent", "gaps"}
    row = [r for r in _table("RUN", m).splitlines() if r.strip().startswith("time")]
    assert len(row) == 1 and f"gaps (4 examples) {g['summary']['gap_seconds']:.1f} s" in row[0]
