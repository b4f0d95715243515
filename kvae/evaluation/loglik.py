"""log p(x) by four methods behind one function.

| method         | applies to                                        | result                   |
|----------------|---------------------------------------------------|--------------------------|
| ``iwae``       | any model                                         | stochastic lower bound   |
| ``exact``      | linear decoder, Gaussian likelihood, N(0, I) prior | closed form              |
| ``quadrature`` | latent_dim <= 3                                   | numerical integral       |
| ``ais``        | any model with a differentiable log p(x|z)        | stochastic lower bound   |

``auto`` picks ``exact``, then ``quadrature``, then ``iwae`` (the first that applies) and
records its choice in the result's ``method``.

``x`` may be a ``tf.data.Dataset`` of batches (kvae's padded ``(x, y, weight)`` batches, or
``(x, y)`` / ``x``): it is streamed (``kvae.evaluation.stream``) in chunks of the method's
batch size, padded rows left out, and only the per-example estimates are kept; the numbers
are those of the same examples as one array. AIS, minutes per hundred examples, takes a
stream only with ``max_examples`` (the first examples, as one array).
"""

import inspect

import numpy as np

from kvae._progress import Progress
from kvae.errors import ConfigError
from kvae.evaluation import ais, exact, iwae, quadrature
from kvae.evaluation.result import LogLikelihood
from kvae.evaluation.stream import (
    chunks,
    first_examples,
    is_stream,
    limited,
    no_y_with_a_dataset,
    num_rows_bound,
)
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


def log_likelihood(model, x, method="auto", *, y=None, max_examples=None, **options):
    """log p(x) per example with standard errors, a :class:`kvae.evaluation.LogLikelihood`.

    Args:
        model: a ``kvae.VAE`` (or any model with the same ``encode`` / ``decode`` /
            ``prior_distribution`` / ``likelihood_head`` interface).
        x: numpy data ``(n, *input_shape)``, or a ``tf.data.Dataset`` of batches (streamed;
            see the module docstring; a conditional model's conditions are then the
            elements' y).
        method: ``"iwae"``, ``"exact"``, ``"quadrature"``, ``"ais"`` or ``"auto"``.
        y: the conditions of ``x`` for a conditional model (``kvae.VAE(condition=...)``),
            whose log p(x|y) only IWAE estimates (``"auto"`` picks it, the other methods
            are refused); ignored by other models.
        **options: the method's own options: iwae ``num_samples``, ``batch_size``,
            ``chunk_size``, ``seed``, ``verbose``; quadrature ``grid``, ``num_sd``,
            ``edge_tol``, ``max_widen``, ``batch_size``, ``resolution_tol``; ais see
            :func:`kvae.evaluation.ais_log_likelihood` (``bias_check`` among them).
        max_examples: only the first examples of ``x`` (None: all).

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
    if is_stream(x):
        return _streamed(model, x, max_examples, chosen, options, y, condition)
    if max_examples is not None:
        x, y = x[:max_examples], (None if y is None else y[:max_examples])
    if condition is not None:  # chosen is "iwae" (structure.applicable)
        condition.check(None if y is None else np.asarray(y), len(x))
        options["y"] = y
    return _FUNCTIONS[chosen](model, x, **options)


# Examples per chunk of a stream for the methods without a batch_size option of their own.
_EXACT_CHUNK = 1000


def _streamed(model, data, max_examples, method, options, y, condition):
    """log p(x) of the dataset ``data``, chunk by chunk (see the module docstring)."""
    no_y_with_a_dataset(y)
    conditional = condition is not None
    if method == "ais" and max_examples is None:
        raise ConfigError(
            "Expected max_examples with method='ais' on a dataset: AIS takes its examples "
            "as one array (it costs minutes per hundred examples). Received: "
            "max_examples=None. Pass max_examples=N (kvae evaluate --max-examples N)."
        )
    model.check_data(data)
    fn = _FUNCTIONS[method]
    if method == "ais":  # one array of the first max_examples examples (AIS takes no y)
        return fn(model, first_examples(data, max_examples)[0], **options)
    data = limited(data, max_examples)
    verbose = options.pop("verbose", 0)
    size = options.get("batch_size") or _default_batch(model, method)
    bound = num_rows_bound(data)
    parts = []
    total = -(-bound // size) if bound else 0
    with Progress(total, verbose, "batch", title=f"log p(x) by {method}") as progress:
        for start, xb, yb in chunks(data, size, with_y=conditional):
            extra = {"verbose": 0} if method in ("iwae", "quadrature") else {}
            if method == "iwae":
                extra["offset"] = start
            if conditional:
                condition.check(yb, len(xb))
                extra["y"] = yb
            parts.append(fn(model, xb, **options, **extra))
            progress.advance()
    return _joined(parts)


def _default_batch(model, method):
    if method == "iwae":
        return inspect.signature(iwae.iwae_log_likelihood).parameters["batch_size"].default
    if method == "quadrature":
        return quadrature.default_batch_size(model)  # its default: the same batches
    return _EXACT_CHUNK


def _joined(parts):
    """One :class:`LogLikelihood` of the chunks' results, in order: per-example arrays
    joined, the settings (the same in every chunk) kept."""
    if not parts:
        raise ConfigError("Expected a dataset with at least one example. Received: none.")
    n = [len(p) for p in parts]
    info = {}
    for key, value in parts[0].info.items():
        if isinstance(value, np.ndarray) and value.ndim and value.shape[0] == n[0]:
            info[key] = np.concatenate([p.info[key] for p in parts])
        else:
            info[key] = value
    return LogLikelihood(
        np.concatenate([p.estimate for p in parts]),
        np.concatenate([p.stderr for p in parts]),
        parts[0].method,
        info,
    )
