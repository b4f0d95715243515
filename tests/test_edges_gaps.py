"""Each variational gap against a value computed without the gaps' own sums (issue 22: the
identity inference = approximation + amortisation holds by construction, so it tests
nothing): on the linear-Gaussian model all three have closed forms."""

import numpy as np
from test_edges_quadrature import kl_to_linear_posterior
from test_loglik import _data, _linear

from kvae import evaluation


def test_each_gap_equals_its_closed_form():
    """inference gap = KL(q || p(z|x)), approximation gap = the best mean-field Gaussian's
    KL, amortisation gap = their difference, per example. Tolerances: 4 standard errors per
    example (30 examples), 3 for the means, plus, where q* enters, the optimiser's stopping
    tolerance and the bias of optimising on 512 fixed samples (O(d / S) ~ 0.004 nats)."""
    model, x = _linear(), _data()[:30]
    g = evaluation.gaps(model, x)
    assert g["method"] == "exact"
    kl = kl_to_linear_posterior(model, x)
    _, precision = evaluation.linear_gaussian_posterior(model, x)
    best = evaluation.mean_field_gap(precision)
    assert best > 0.005 and np.mean(kl - best) > 0.03  # three distinct, non-zero gaps
    n = len(x)
    checks = (
        ("inference", kl, 0.0),
        ("approximation", np.full(n, best), 0.005),
        ("amortisation", kl - best, 0.005),
    )
    for name, expected, slack in checks:
        got, se = g[f"{name}_gap"], g[f"{name}_gap_stderr"]
        assert np.all(np.abs(got - expected) <= 4 * se + slack + 1e-4), name
        se_mean = np.sqrt(np.sum(se**2)) / n
        assert abs(np.mean(got - expected)) <= 3 * se_mean + slack + 1e-4, name
