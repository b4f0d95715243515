"""log p(x) by four methods behind one function.

| method         | applies to                                        | result                   |
|----------------|---------------------------------------------------|--------------------------|
| ``iwae``       | any model                                         | stochastic lower bound   |
| ``exact``      | linear decoder, Gaussian likelihood, N(0, I) prior | closed form              |
| ``quadrature`` | latent_dim <= 3                                   | numerical integral       |
| ``ais``        | any model with a differentiable log p(x|z)        | stochastic lower bound   |

``auto`` picks ``exact``, then ``quadrature``, then ``iwae`` (the first that applies) and
records its choice in the result's ``method``.
"""

import inspect

import numpy as np

from kvae.errors import ConfigError
from kvae.evaluation import ais, exact, iwae, quadrature
from kvae.evaluation.structure import METHODS, applicable, require

__all__ = ["METHODS", "choose_method", "log_likelihood"]

_FUNCTIONS = {
    "iwae": iwae.iwae_log_likelihood,
    "exact": exact.exact_log_likelihood,
    "quadrature": quadrature.quadrature_log_likelihood,
    "ais": ais.ais_log_likelihood,
}


def choose_method(model, method="auto", order=("exact", "quadrature", "iwae")):
    """The method ``method`` stands for on ``model`` (``auto``: the first of ``order`` that
    applies). Raises ConfigError for an unknown method or one that does not apply."""
    if method == "auto":
        reasons = applicable(model)
        chosen = next((m for m in order if reasons[m] is None), None)
        if chosen is None:
            why = "; ".join(f"{m}: {reasons[m]}" for m in order)
            ok = [m for m in METHODS if reasons[m] is None]
            raise ConfigError(
                f"Expected a model that one of the methods {list(order)} applies to. "
                f"Received: a model where {why}. Methods that apply to this model: {ok}."
            )
        return chosen
    if method not in METHODS:
        raise ConfigError(
            f"Expected method to be one of {[*METHODS, 'auto']}. Received: method={method!r}."
        )
    require(model, method)
    return method


def _check_options(method, options):
    if method == "ais":
        return ais.check_ais_options(**options)
    params = inspect.signature(_FUNCTIONS[method]).parameters
    allowed = [p for p in params if p not in ("model", "x")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"Expected options of method={method!r} among {allowed}. Received: {unknown}."
        )
    return options


def log_likelihood(model, x, method="auto", *, y=None, **options):
    """log p(x) per example with standard errors, a :class:`kvae.evaluation.LogLikelihood`.

    Args:
        model: a ``kvae.VAE`` (or any model with the same ``encode`` / ``decode`` /
            ``prior_distribution`` / ``likelihood_head`` interface).
        x: numpy data ``(n, *input_shape)``.
        method: ``"iwae"``, ``"exact"``, ``"quadrature"``, ``"ais"`` or ``"auto"``.
        y: the conditions of ``x`` for a conditional model (``kvae.VAE(condition=...)``),
            whose log p(x|y) only IWAE estimates (``"auto"`` picks it, the other methods
            are refused); ignored by other models.
        **options: the method's own options: iwae ``num_samples``, ``batch_size``,
            ``chunk_size``, ``seed``, ``verbose``; quadrature ``grid``, ``num_sd``,
            ``edge_tol``, ``max_widen``, ``batch_size``, ``resolution_tol``; ais see
            :func:`kvae.evaluation.ais_log_likelihood` (``bias_check`` among them).

    Raises:
        ConfigError: an unknown method or option, options out of range, or a method that does
            not apply to this model (the message names those that do), before any work.
        DataError: a conditional model without one condition per example in ``y``.
    """
    chosen = choose_method(model, method)
    if method == "auto" and chosen == "exact":
        options = {}  # exact takes none; the caller's options were for the fallbacks
    elif method == "auto" and chosen != "iwae":
        iwae_only = {"num_samples", "chunk_size", "seed"}
        options = {k: v for k, v in options.items() if k not in iwae_only}
    options = _check_options(chosen, options)
    condition = getattr(model, "condition", None)
    if condition is not None:  # chosen is "iwae" (structure.applicable)
        condition.check(None if y is None else np.asarray(y), len(x))
        options["y"] = y
    return _FUNCTIONS[chosen](model, x, **options)
