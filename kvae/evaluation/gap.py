"""The inference, approximation and amortisation gaps per example (Cremer, Li & Duvenaud
2018, "Inference suboptimality in variational autoencoders"):

    log p(x) - ELBO(q)   = inference gap      = KL(q(z|x) || p(z|x))
    log p(x) - ELBO(q*)  = approximation gap  (the cost of the posterior family)
    ELBO(q*) - ELBO(q)   = amortisation gap   (the cost of one encoder for all x)

q* is the best member of the model's own posterior family for one example, over what
``family`` says (:mod:`kvae.evaluation.family`): ``"outputs"``, the posterior head's
per-example outputs (its parameters; for an IAF or a hierarchical posterior the weights it
shares between examples stay fixed, so q* is then the best member of a smaller family), or
``"full"``, those and a per-example copy of the shared weights. Its parameters are optimised
directly, starting from the encoder's output, all examples of a batch at once, by L-BFGS
(:mod:`kvae.evaluation.lbfgs`) on a fixed set of reparameterised samples (``opt_samples``
per example, the same ones at every iteration, so the objective is deterministic) until the
ELBO improves by less than ``tol`` nats in a step (or ``max_iterations``). ELBO(q) and
ELBO(q*) are then estimated with ``num_samples`` fresh samples each (the same seed for both,
so their difference has a small standard error), as the mean of log w = log p(x, z) -
log q(z|x) (zero variance when q is the true posterior).
"""

import time

import numpy as np
import tensorflow as tf

from kvae import _compile_mode, objectives
from kvae._checks import positive_int
from kvae._progress import Progress
from kvae.errors import ConfigError
from kvae.evaluation import family as families
from kvae.evaluation import lbfgs
from kvae.evaluation.loglik import choose_method, log_likelihood
from kvae.evaluation.result import LogLikelihood

__all__ = ["GAP_METHODS", "elbo_samples", "gaps", "optimise_posterior"]

# The log p(x) methods the gaps use, best first: ``method="auto"`` takes the first that
# applies. IWAE is not among them: its bias inflates no gap but hides part of the inference
# gap.
GAP_METHODS = ("exact", "quadrature", "ais")


def _elbo_samples_fn(model):
    fn = getattr(model, "_kvae_elbo_samples_fn", None)
    if fn is None:

        def elbo_samples_tf(x, params, seed, s):
            q = model.posterior_head.distribution(params)
            z = q.sample(s, seed=seed)
            return objectives.log_weights(
                model.likelihood_head.prepare(x), q, model.prior_distribution(), model.decode, z
            )

        fn = _compile_mode.function(elbo_samples_tf)
        model._kvae_elbo_samples_fn = fn
    return fn


def elbo_samples(model, x, params, num_samples, seed):
    """Per-sample ELBO terms ``[S, B]`` (float64 numpy) of the posterior with parameters
    ``params``: log w_s = log p(x, z_s) - log q(z_s|x), z_s ~ q, S = ``num_samples``.

    Their mean over samples estimates ELBO(q). This form (rather than log p(x|z_s) minus
    the analytic KL(q || p(z))) has zero variance when q equals the true posterior, so a
    sample-average objective has its optimum exactly there when the family contains it, and
    gaps near 0 have small standard errors.

    Args:
        model: a kvae VAE (duck-typed: ``posterior_head``, ``likelihood_head``,
            ``prior_distribution``, ``decode``).
        x: a batch of data ``[B, ...]`` (numpy or tensor).
        params: the posterior head's output for ``x`` (``model.posterior_head(model.encoder(x))``
            or optimised parameters, see :func:`optimise_posterior`).
        num_samples: S, samples per example.
        seed: the stateless seed of the samples, a pair of integers or an int32 tensor.
    """
    fn = _elbo_samples_fn(model)
    x = tf.convert_to_tensor(np.asarray(x, np.float32))
    seed = tf.convert_to_tensor(seed, tf.int32)
    return fn(x, params, seed, int(num_samples)).numpy().astype(np.float64)


# Samples per example of the first, cheap stage of q*'s optimisation (see optimise_posterior).
SCOUT_SAMPLES = 64


# The live examples of an evaluation are padded to at least this many rows, and beyond it to
# a power of two: at most ~log2(batch) shapes of the compiled ELBO, each compiled once.
MIN_BUCKET = 8


def _buckets(batch):
    """The sizes the live examples of a batch of ``batch`` are padded to, smallest first."""
    sizes, size = [], MIN_BUCKET
    while size < batch:
        sizes.append(size)
        size *= 2
    return [*sizes, batch]


def _live_rows(active, size):
    """The rows of the examples still running (at most ``size``), padded to ``size`` by
    repeating the first, and the mask of the real ones: ``(rows [size], real [size])``."""
    live = tf.cast(tf.where(active)[:, 0], tf.int32)
    n = tf.size(live)
    rows = tf.concat([live, tf.fill([size - n], live[0])], 0)
    return tf.reshape(rows, [size]), tf.range(size) < n


def _value_and_grad(model, log_weights, x, seed, num_samples):
    """The objective of q*: minus the mean ELBO over fixed samples, per example ``[B]``, and
    its gradient (examples are independent, so d sum / d params_b is example b's), computed
    on the live examples only, padded to the smallest of ``_buckets`` that holds them
    (the others' rows are 0).

    The samples are drawn for the whole batch (cheap: no decoder) and the live examples'
    taken from them, so each example's samples stay the same whichever examples still run:
    its objective is the same fixed-sample ELBO at every evaluation. Each bucket is a branch
    of static shapes, so the compiled ELBO sees a fixed batch in each (XLA refuses some
    gradients of a batch of unknown size)."""
    batch = int(x.shape[0])
    sizes = _buckets(batch)

    def bucket(params, active, size):
        rows, real = _live_rows(active, size)
        with tf.GradientTape() as tape:
            tape.watch(params)
            z = model.posterior_head.distribution(params).sample(num_samples, seed=seed)
            w = log_weights(tf.gather(x, rows), tf.gather(params, rows), tf.gather(z, rows, axis=1))
            neg = tf.where(real, -tf.reduce_mean(w, axis=0), 0.0)
            total = tf.reduce_sum(neg)
        # Padding rows repeat a live row with value 0: the sum over duplicates is the live one.
        return tf.scatter_nd(rows[:, None], neg, [batch]), tape.gradient(total, params)

    def value_and_grad(params, active):
        n = tf.reduce_sum(tf.cast(active, tf.int32))
        index = tf.reduce_sum(tf.cast(tf.constant(sizes[:-1], tf.int32) < n, tf.int32))
        branches = [lambda size=size: bucket(params, active, size) for size in sizes]
        return tf.switch_case(index, branches)

    return value_and_grad


def _log_weights_fn(model):
    """log w of given samples z ``[S, N, L]`` of the posterior with parameters ``params``,
    compiled (one graph per batch shape: the live examples' buckets)."""
    fn = getattr(model, "_kvae_log_weights_fn", None)
    if fn is None:

        def log_weights_tf(x, params, z):
            q = model.posterior_head.distribution(params)
            return objectives.log_weights(
                model.likelihood_head.prepare(x), q, model.prior_distribution(), model.decode, z
            )

        # Graph mode, not XLA: per bucket shape and sample count (10 shapes, each with its
        # gradient) XLA's compilations cost ~8 s a process, and its steps were no faster here
        # (default 2-D MNIST model, 500 images: gaps 31.9 s -> 24.7 s on a first call, 23.6 s
        # -> 18.1 s warm; 2-core AMD EPYC, 2026-12-07).
        fn = _compile_mode.function(log_weights_tf, jit_compile=False)
        model._kvae_log_weights_fn = fn
    return fn


def _optimiser(model):
    """The whole two-stage optimisation of q* as one graph (cached on the model)."""
    fn = getattr(model, "_kvae_q_star_fn", None)
    if fn is None:
        log_weights = _log_weights_fn(model)

        def run(x, params0, seed, opt_samples, scout, tol, max_iterations):
            history, start, it1 = None, params0, 0
            if scout < opt_samples:
                vg = _value_and_grad(
                    model, log_weights, x, tf.random.experimental.stateless_fold_in(seed, 1), scout
                )
                start, _, it1, _, history = lbfgs.minimise(
                    vg, params0, tol=tol, max_iterations=max_iterations
                )
            vg = _value_and_grad(model, log_weights, x, seed, opt_samples)
            position, value, it2, converged, _ = lbfgs.minimise(
                vg, start, tol=tol, max_iterations=max_iterations, history=history
            )
            # Keep q* only where it improved on the start, on the final objective.
            better = value < vg(params0, tf.ones([tf.shape(x)[0]], tf.bool))[0]
            return tf.where(better[:, None], position, params0), it1 + it2, converged

        # Not XLA as a whole: the ELBO inside is compiled as kvae compiles its estimators,
        # and XLA's CPU compiler emits convolutions inside a loop slowly (kvae._compile_mode).
        fn = _compile_mode.function(run, jit_compile=False)
        model._kvae_q_star_fn = fn
    return fn


def optimise_posterior(
    model, x, params=None, *, seed=(0, 0), opt_samples=512, tol=1e-4, max_iterations=500
):
    """q*: the best member of the model's posterior family for each example of ``x``, over
    the posterior head's outputs (the family's shared weights, such as an IAF's MADE
    networks, fixed: see :func:`gaps`'s ``family``).

    The posterior head's parameters are optimised directly, starting from ``params``
    (default: the encoder's output for ``x``), all examples at once but each with its own
    curvature, step and stopping test (``kvae.evaluation.lbfgs.minimise``, one compiled
    graph), on the mean of :func:`elbo_samples` over a fixed set of ``opt_samples``
    reparameterised samples per example (the same at every iteration, drawn with the
    stateless ``seed``, so the objective is deterministic), until the ELBO improves by less
    than ``tol`` nats in an iteration, or after ``max_iterations``. Two stages: first on
    ``SCOUT_SAMPLES`` samples (an eighth of the cost per iteration, most of the
    iterations), then on the ``opt_samples`` from there, keeping the curvature learnt: q*
    minimises the ``opt_samples`` objective to ``tol`` as before, in a few of its costly
    iterations. Each evaluation runs only the examples still optimising (padded to a few
    bucket sizes, ``_buckets``), with the samples they have in the whole batch: its cost
    follows the live examples, not the slowest one's iterations times the batch. An example
    keeps its starting parameters where q* did not improve on them.

    Returns ``(params_star, iterations, converged)``: the parameters (a tensor shaped as the
    head's output; ``model.posterior_head.distribution(params_star)`` is q*), the most
    iterations an example ran (both stages, at most ``2 * max_iterations``) and whether each
    example converged (bool numpy ``[B]``).
    """
    x = tf.convert_to_tensor(np.asarray(x, np.float32))
    params0 = model.posterior_head(model.encoder(x)) if params is None else params
    params, iterations, converged = _optimiser(model)(
        x,
        tf.convert_to_tensor(params0),
        tf.convert_to_tensor(seed, tf.int32),
        int(opt_samples),
        SCOUT_SAMPLES,
        tf.constant(tol, params0.dtype),
        tf.constant(max_iterations),
    )
    return params, int(np.max(iterations.numpy())), converged.numpy()


def _q_star_full(model, xb, params0, opt_seed, eval_seed, opt_samples, num_samples, tol, max_it):
    """q* of ``family="full"``, one example at a time (its own copy of the shared weights):
    ``(params_star, ELBO samples of q, of q*, iterations, converged)``."""
    elbo = _elbo_samples_fn(model)
    params, a, b, iterations, converged = [], [], [], [], []
    for i in range(int(xb.shape[0])):
        xi, p0 = xb[i : i + 1], params0[i : i + 1]
        seed = tf.random.experimental.stateless_fold_in(opt_seed, i)
        e_seed = tf.random.experimental.stateless_fold_in(eval_seed, i)

        def objective(p, xi=xi, seed=seed):
            return -tf.reduce_mean(elbo(xi, p, seed, opt_samples), axis=0)

        def evaluate(p, xi=xi, e_seed=e_seed):
            return elbo_samples(model, xi, p, num_samples, e_seed)

        a.append(elbo_samples(model, xi, p0, num_samples, e_seed))  # same seed: common numbers
        p, bi, n_it, conv = families.optimise_with_shared_weights(
            model, objective, p0, evaluate, tol=tol, max_iterations=max_it
        )
        params.append(p)
        b.append(bi)
        iterations.append(n_it)
        converged.append(conv)
    cat = np.concatenate
    return tf.concat(params, 0), cat(a, 1), cat(b, 1), max(iterations), np.array(converged)


def _check(num_samples, opt_samples, tol, max_iterations, batch_size):
    for name, value in (
        ("num_samples", num_samples),
        ("opt_samples", opt_samples),
        ("max_iterations", max_iterations),
        ("batch_size", batch_size),
    ):
        positive_int(name, value)
    if num_samples < 2:
        raise ConfigError(
            f"Expected num_samples >= 2 (for a standard error). Received: {num_samples}."
        )
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ConfigError(f"Expected tol > 0 nats. Received: tol={tol!r}.")


def _given_log_likelihood(ll, n, method):
    """``log_likelihood_result`` checked: a result for n examples by a gap method."""
    if not isinstance(ll, LogLikelihood):
        raise ConfigError(
            "Expected log_likelihood_result to be a kvae.evaluation.LogLikelihood (what "
            f"kvae.evaluation.log_likelihood returns). Received: {type(ll).__name__}."
        )
    if ll.method not in GAP_METHODS or method not in ("auto", ll.method):
        raise ConfigError(
            f"Expected log_likelihood_result by one of {GAP_METHODS}"
            + ("" if method == "auto" else f" and by method={method!r} as asked")
            + f". Received: one by {ll.method!r}. Compute it by such a method, or leave "
            "log_likelihood_result out to let gaps compute log p(x)."
        )
    if len(ll) != n:
        raise ConfigError(
            f"Expected log_likelihood_result for the {n} examples of x. Received: one for "
            f"{len(ll)} examples. Pass the result computed on this same x."
        )
    return ll


def gaps(
    model,
    x,
    *,
    method="auto",
    num_samples=1000,
    opt_samples=512,
    tol=1e-4,
    max_iterations=500,
    batch_size=100,
    seed=0,
    log_likelihood_options=None,
    verbose=0,
    family="outputs",
    log_likelihood_result=None,
):
    """The three gaps per example, with standard errors (nats).

    Args:
        method: the log p(x) method; ``"auto"`` = exact, else quadrature, else AIS (a
            lower bound; IWAE is only used if asked for, since its bias inflates no gap but
            hides part of the inference gap).
        num_samples: samples per example of each final ELBO estimate.
        opt_samples: fixed samples per example of the objective q* is optimised on. Fewer
            make q* fit its samples rather than the ELBO, and so over-state the approximation
            gap: on the default 2-D MNIST model, 256 instead of 512 added 0.0040 nats (standard
            error 0.0003, 500 test images) for 2.4 s less of 22.7 s.
        tol: L-BFGS stops when the ELBO improves by less than this (nats) per iteration.
        max_iterations: L-BFGS iterations at most.
        log_likelihood_options: options of the log p(x) method.
        log_likelihood_result: log p(x) of these same examples already computed (a
            :class:`kvae.evaluation.LogLikelihood` by a method of ``GAP_METHODS``, such
            as :func:`kvae.evaluation.log_likelihood`'s on ``x``): used as it is instead of
            computing it again (with quadrature, about a third of the gaps' time otherwise).
        verbose: progress over the batches of q*'s optimisation, as
            :func:`kvae.evaluation.quadrature_log_likelihood`'s (``"auto"``: lines on
            standard error without a terminal, for a run longer than a minute).
        family: what q* ranges over. ``"outputs"`` (default): the posterior head's
            per-example outputs. For a Gaussian head that is the whole family; for a head
            with weights shared by every example (``iaf``'s MADE networks, the
            ``hierarchical`` posterior's q(z2|z1) network) they stay fixed, so the
            approximation gap is an upper bound of the family's and the amortisation gap a
            lower bound. ``"full"``: the outputs and a per-example copy of the head's shared
            weights (all its trainable weights but the ``projection`` that makes the
            outputs), one example at a time: the family's own gaps, at the cost of an
            optimisation over those weights per example (for a few examples).

    Returns a dict: per-example numpy arrays ``log_likelihood``, ``elbo``, ``elbo_star``,
    ``inference_gap``, ``approximation_gap``, ``amortisation_gap`` and a ``*_stderr`` for
    each; ``summary``, a JSON-able dict with each gap's mean over examples and the standard
    error of that mean (``gap_<name>``, ``gap_<name>_stderr``), the method used, what q*
    ranged over in words (``gap_q_star_over``), whether log p(x) was given
    (``gap_log_likelihood_given``) or estimated here, the optimiser's iterations, and
    ``gap_seconds`` (wall clock of the whole call: log p(x) unless given, the optimisation
    and the ELBOs); and ``params_star``, q*'s parameters.

    The standard errors are Monte Carlo noise. The error of log p(x) they do not hold is
    reported beside them, not folded in: by quadrature ``gap_log_likelihood_resolution_error``
    (the grid's resolution check, nats); by AIS ``gap_log_likelihood_bias_indicator`` (and
    per example ``log_likelihood_bias_indicator``): AIS's estimate minus its estimate at half
    the temperatures, about the amount by which its bias (always low) under-states the
    inference and approximation gaps, while the amortisation gap does not use log p(x).
    """
    _check(num_samples, opt_samples, tol, max_iterations, batch_size)
    q_star_over = families.q_star_over(model, family)
    full = family == "full" and q_star_over == families.FULL
    began = time.perf_counter()
    chosen = choose_method(model, method, order=GAP_METHODS)
    model.check_data(x)
    x = np.asarray(x, np.float32)
    if log_likelihood_result is None:
        ll = log_likelihood(model, x, method=chosen, **(log_likelihood_options or {}))
    else:
        ll = _given_log_likelihood(log_likelihood_result, len(x), method)
    elbo_q, elbo_s, diff_se, se_q, se_s, params_all, iters, converged = ([] for _ in range(8))
    base = tf.constant([seed, 11], tf.int32)
    progress = Progress(-(-len(x) // batch_size), verbose, "batch", title="gaps (q* per example)")
    for start in range(0, len(x), batch_size):
        xb = tf.constant(x[start : start + batch_size])
        params0 = model.posterior_head(model.encoder(xb))
        opt_seed = tf.random.experimental.stateless_fold_in(base, 2 * start)
        eval_seed = tf.random.experimental.stateless_fold_in(base, 2 * start + 1)
        if full:
            params, a, b, n_it, conv = _q_star_full(
                model,
                xb,
                params0,
                opt_seed,
                eval_seed,
                opt_samples,
                num_samples,
                tol,
                max_iterations,
            )
        else:
            params, n_it, conv = optimise_posterior(
                model,
                xb,
                params0,
                seed=opt_seed,
                opt_samples=opt_samples,
                tol=tol,
                max_iterations=max_iterations,
            )
            a = elbo_samples(model, xb, params0, num_samples, eval_seed)
            b = elbo_samples(model, xb, params, num_samples, eval_seed)  # same seed: common numbers
        k = np.sqrt(num_samples)
        elbo_q.append(a.mean(0))
        elbo_s.append(b.mean(0))
        se_q.append(a.std(0, ddof=1) / k)
        se_s.append(b.std(0, ddof=1) / k)
        diff_se.append((b - a).std(0, ddof=1) / k)
        params_all.append(params.numpy())
        iters.append(n_it)
        converged.append(conv)
        progress.advance()
    lp, lp_se = ll.estimate, ll.stderr
    elbo_q, elbo_s = np.concatenate(elbo_q), np.concatenate(elbo_s)
    se_q, se_s = np.concatenate(se_q), np.concatenate(se_s)
    out = {
        "log_likelihood": lp,
        "log_likelihood_stderr": lp_se,
        "elbo": elbo_q,
        "elbo_stderr": se_q,
        "elbo_star": elbo_s,
        "elbo_star_stderr": se_s,
        # log p(x) and the ELBOs use independent randomness: variances add.
        "inference_gap": lp - elbo_q,
        "inference_gap_stderr": np.sqrt(lp_se**2 + se_q**2),
        "approximation_gap": lp - elbo_s,
        "approximation_gap_stderr": np.sqrt(lp_se**2 + se_s**2),
        "amortisation_gap": elbo_s - elbo_q,
        "amortisation_gap_stderr": np.concatenate(diff_se),
        "params_star": np.concatenate(params_all),
        "method": ll.method,
    }
    summary = {"gap_method": ll.method, "gap_num_examples": int(len(x))}
    # Whether log p(x) came with the call (log_likelihood_result) or was estimated here.
    summary["gap_log_likelihood_given"] = log_likelihood_result is not None
    for name in ("inference", "approximation", "amortisation"):
        values = out[f"{name}_gap"]
        bad = np.flatnonzero(~np.isfinite(values)).tolist()
        summary[f"gap_{name}"] = float(np.mean(values))
        n = len(values)
        summary[f"gap_{name}_stderr"] = (
            float(np.std(values, ddof=1) / np.sqrt(n))
            if n > 1
            else float(out[f"{name}_gap_stderr"][0])
        )
        if bad:
            summary[f"gap_{name}_nan_examples"] = bad
    # The errors of log p(x) that its standard error does not show (the grid's resolution,
    # AIS's bias), reported beside the gaps, not folded into their standard errors.
    for key, value in ll.summary("gap_log_likelihood").items():
        if key.endswith(("_resolution_error", "_resolution_tol", "_bias_indicator")):
            summary[key] = value
    if "bias_indicator" in ll.info:
        out["log_likelihood_bias_indicator"] = ll.info["bias_indicator"]
    summary["gap_q_star_over"] = q_star_over
    summary["gap_optimiser_iterations"] = int(max(iters))
    summary["gap_optimiser_converged"] = bool(np.all(np.concatenate(converged)))
    summary["gap_tol"] = tol
    summary["gap_seconds"] = round(time.perf_counter() - began, 3)
    out["summary"] = summary
    return out
