"""AIS away from the easy case: a posterior far narrower than q and the prior, started from
the prior, few temperatures; the bias that its standard error (chain noise) leaves out is
reported beside it; planted schedule bugs are caught (issue 22 item 3 and its tests)."""

import numpy as np
import pytest
from test_edges_quadrature import narrow_linear

from kvae import evaluation
from kvae.evaluation import ais


def _se_mean(stderr):
    return float(np.sqrt(np.sum(np.square(stderr))) / len(stderr))


@pytest.fixture(scope="module")
def far():
    """Posterior sd about 0.1 and 0.05 (noise 0.1), q and p(z) about 10-20x wider."""
    model, x = narrow_linear(0.1, n=16)
    return model, x, evaluation.exact_log_likelihood(model, x).estimate


def test_ais_reports_a_bias_indicator_beside_its_chain_noise(far):
    """With 10 temperatures from the prior the estimate is nats below log p(x), many times
    its standard error: that error is chain noise, as the result now says, and the bias
    indicator (the estimate minus the estimate at 5 temperatures) flags the shortfall
    beyond its own noise."""
    model, x, exact = far
    ll = evaluation.log_likelihood(
        model, x, method="ais", num_temperatures=10, start="prior", seed=1
    )
    shortfall = np.mean(exact - ll.estimate)
    se = _se_mean(ll.stderr)
    assert shortfall > 5 * se  # the fact: chain noise is not the error of log p(x)
    assert "chain noise" in ll.info["stderr_is"]
    assert ll.info["half_temperatures"] == 5
    indicator = ll.info["bias_indicator"]
    np.testing.assert_allclose(indicator, ll.estimate - ll.info["half_temperatures_estimate"])
    se_indicator = np.hypot(se, _se_mean(ll.info["half_temperatures_stderr"]))
    assert np.mean(indicator) > 3 * se_indicator
    assert ll.summary()["log_likelihood_bias_indicator"] == pytest.approx(np.mean(indicator))


def test_ais_from_the_prior_reaches_a_far_posterior_with_enough_temperatures(far):
    """start="prior" with the default 100 temperatures: the mean within 3 standard errors of
    the exact value, or within the bias indicator it reports (its stated error)."""
    model, x, exact = far
    ll = evaluation.log_likelihood(model, x, method="ais", start="prior", seed=2)
    assert _agrees(ll, exact), (np.mean(exact - ll.estimate), _se_mean(ll.stderr))


@pytest.fixture(scope="module")
def easy():
    """test_loglik's trained linear model, where AIS from q has almost no bias."""
    from test_loglik import _data, _linear

    model, x = _linear(), _data()[:16]
    return model, x, evaluation.exact_log_likelihood(model, x).estimate


def _agrees(ll, exact):
    """The mean within 3 standard errors of the exact value, or within the bias indicator
    the result reports (its stated error beside the chain noise)."""
    diff = np.mean(exact - ll.estimate)
    return abs(diff) <= 3 * _se_mean(ll.stderr) + abs(np.mean(ll.info["bias_indicator"]))


def test_a_planted_wrong_temperature_schedule_is_caught(easy, monkeypatch):
    """The check passes with the right schedule and fails when the schedule stops at
    b_T = 0.9 (the last weight increments missing): the test can fail."""
    model, x, exact = easy
    assert _agrees(evaluation.log_likelihood(model, x, method="ais", seed=4), exact)
    right = ais.sigmoid_schedule
    monkeypatch.setattr(ais, "sigmoid_schedule", lambda num: 0.9 * right(num))
    assert not _agrees(evaluation.log_likelihood(model, x, method="ais", seed=4), exact)


def _bracket_holds(out, exact, closed=False):
    """BDMC's stochastic bounds: each mean within 3 standard errors of its side and the
    width non-negative within 3 standard errors of the difference; with ``closed`` (where
    the path is easy and AIS has almost no bias) each mean within 3 standard errors of the
    exact value on both sides, so the width too."""
    se_lo, se_hi = _se_mean(out["lower_stderr"]), _se_mean(out["upper_stderr"])
    lo, hi = out["lower_mean"] - np.mean(exact), out["upper_mean"] - np.mean(exact)
    if closed:
        return abs(lo) <= 3 * se_lo and abs(hi) <= 3 * se_hi
    return lo <= 3 * se_lo and hi >= -3 * se_hi and out["width_mean"] >= -3 * np.hypot(se_lo, se_hi)


def test_bdmc_from_the_prior_brackets_a_far_posterior(far):
    model, _, _ = far
    out = evaluation.bdmc(model, n=16, start="prior", seed=3)
    exact = evaluation.exact_log_likelihood(model, out["x"]).estimate
    assert _bracket_holds(out, exact)


def test_a_planted_shifted_reverse_schedule_is_caught(easy, monkeypatch):
    """The reverse chain shifted by one transition (starting at b_{T-1}: its weights miss
    the first increment and pair each move with the next temperature's) breaks the closed
    bracket that the right one keeps."""
    model, _, _ = easy
    out = evaluation.bdmc(model, n=16, seed=3)
    exact = evaluation.exact_log_likelihood(model, out["x"]).estimate
    assert _bracket_holds(out, exact, closed=True)
    right = ais.reverse_transitions

    def shifted(betas):
        b_from, b_to = right(betas)
        return b_from[1:], b_to[:-1]

    monkeypatch.setattr(ais, "reverse_transitions", shifted)
    bad = evaluation.bdmc(model, out["x"], out["z"], seed=3)
    assert not _bracket_holds(bad, exact, closed=True)
