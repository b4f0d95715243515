"""A conditional model's log p(x|y) is IWAE's alone (issue 22 item 1): the module-level
functions that take no condition refuse it instead of answering a wrong closed form."""

import numpy as np
import pytest
from test_edges_quadrature import D, linear_vae

from kvae import evaluation
from kvae.errors import ConfigError


def test_exact_and_gaps_refuse_a_conditional_linear_gaussian_model():
    """The model is linear-Gaussian in everything but its condition: before the refusal,
    ``exact`` read the one-hot rows of W as extra N(0, 1) latents and returned a closed form
    with standard error 0 (a number for log p(x), not log p(x|y)); ``auto`` picked it and
    ``gaps`` used it."""
    model = linear_vae(likelihood_kwargs={"scale": "scalar"}, condition=3)
    x = np.random.default_rng(0).standard_normal((6, D)).astype("float32")
    y = np.arange(6) % 3
    assert model.likelihood_head.projection.get_weights()[0].shape == (2 + 3, D)
    refused = r"conditional.*Methods that apply to this model: \['iwae'\]"
    # The closed-form functions themselves (which a user may call directly) refuse first.
    with pytest.raises(ConfigError, match=refused):
        evaluation.exact_log_likelihood(model, x)
    with pytest.raises(ConfigError, match=refused):
        evaluation.linear_gaussian_posterior(model, x)
    with pytest.raises(ConfigError, match=refused):
        evaluation.quadrature_log_likelihood(model, x)
    for method in ("exact", "quadrature", "ais"):
        with pytest.raises(ConfigError, match=refused):
            evaluation.log_likelihood(model, x, method=method)
        with pytest.raises(ConfigError, match=refused):
            evaluation.log_likelihood(model, x, method=method, y=y)
    with pytest.raises(ConfigError, match="one of the methods"):
        evaluation.gaps(model, x)
    with pytest.raises(ConfigError, match="one of the methods"):
        evaluation.gaps(model, x, method="auto")
    # auto answers log p(x|y) by IWAE, with the condition.
    res = evaluation.log_likelihood(model, x, method="auto", y=y, num_samples=8)
    assert res.method == "iwae" and np.all(res.stderr > 0)
