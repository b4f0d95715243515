"""What a model's structure allows: which log p(x) methods apply, and the linear-Gaussian
model's parameters (W, b, Sigma) when it is one.

A method that needs analytic structure checks it here and refuses a model it does not apply
to with a ConfigError that names the methods that do apply.
"""

import numpy as np

from kvae._choices import LOGLIK_METHODS
from kvae.errors import ConfigError

METHODS = LOGLIK_METHODS
MAX_QUADRATURE_DIM = 3


def linear_gaussian(model):
    """``(W, b, sigma2)`` as float64 numpy for a linear-Gaussian model, else a reason string.

    The model is  z ~ N(0, I_d),  x | z ~ N(W^T z + b, diag(sigma2))  when: the decoder has no
    hidden layers and no weights of its own (kvae's ``mlp`` with ``hidden=[]``), the likelihood
    is kvae's Gaussian head (dense projection W, b; fixed, scalar or per-dimension scale) and
    the prior is exactly N(0, I). ``W`` is ``(d, D)`` with D the flattened data size.
    """
    from kvae.heads.likelihoods import Gaussian
    from kvae.networks.mlp import MLPDecoder
    from kvae.priors import StandardNormal

    decoder, head = model.decoder, model.likelihood_head
    if not (isinstance(decoder, MLPDecoder) and not decoder.hidden):
        return f"the decoder is not linear ({type(decoder).__name__} with hidden layers)"
    # A pointwise head is a dense one when the data is a vector (event shape (D,)).
    if type(head) is not Gaussian or (head._pointwise and len(head.data_shape) > 1):
        return f"the likelihood is {type(head).__name__}, not kvae's Gaussian head"
    if not isinstance(model.prior, StandardNormal):
        return f"the prior is {type(model.prior).__name__}, not N(0, I)"
    w, b = (np.asarray(v, np.float64) for v in head.projection.get_weights())
    sigma = np.asarray(head.sigma(), np.float64)
    d_flat = int(np.prod(model.data_shape))
    sigma2 = np.broadcast_to(sigma**2, model.data_shape).reshape(d_flat).copy()
    return w, b, sigma2


def applicable(model):
    """``{method: None or reason it does not apply}`` for this model.

    A conditional model (``kvae.VAE(condition=...)``, log p(x|y)) has IWAE only: the other
    methods take no condition yet."""
    if getattr(model, "condition", None) is not None:
        why = "the model is conditional (only IWAE estimates log p(x|y) so far)"
        return {"iwae": None, "exact": why, "quadrature": why, "ais": why}
    out = {"iwae": None, "ais": None}
    lg = linear_gaussian(model)
    out["exact"] = lg if isinstance(lg, str) else None
    out["quadrature"] = (
        None
        if model.latent_dim <= MAX_QUADRATURE_DIM
        else f"latent_dim={model.latent_dim} > {MAX_QUADRATURE_DIM} (a grid would be too large)"
    )
    return out


def require(model, method):
    """Raise ConfigError unless ``method`` applies to ``model``."""
    reasons = applicable(model)
    why = reasons[method]
    if why is not None:
        ok = [m for m in METHODS if reasons[m] is None]
        raise ConfigError(
            f"Expected a model that log_likelihood(method={method!r}) applies to. Received: "
            f"a model where {why}. Methods that apply to this model: {ok}."
        )
