"""Annealed importance sampling (Neal 2001; Wu et al. 2017) and its bidirectional sandwich
(BDMC, Grosse et al. 2015), with HMC transitions from ``tfp.mcmc``.

The path of distributions is geometric, from a normalised base p_0 (q(z|x) by default, or
the prior) to the unnormalised posterior p(x, z):

    log f_t(z) = (1 - b_t) log p_0(z) + b_t log p(x, z),   0 = b_0 < b_1 < ... < b_T = 1

(a sigmoid schedule of T = ``num_temperatures`` steps). Each chain starts at z ~ p_0, and
at each step adds (b_t - b_{t-1}) [log p(x, z) - log p_0(z)] to its log weight, then moves z
by one HMC transition that leaves f_t invariant. E[w] = p(x), so the log of the chains'
mean weight is a stochastic lower bound of log p(x); its standard error is the delta-method
one, sd(w) / (sqrt(C) mean(w)), over the C chains of that example.

Step sizes are not set by hand: a warm-up pass (``warmup_chains`` chains over the same
schedule, weights discarded) adapts each example's step size at every temperature towards
the acceptance rate ``target_accept`` (log step += 0.5 (acceptance - target)); the real pass
uses that per-temperature schedule, fixed, so its transitions are valid MCMC kernels and
the estimate keeps its bound property.

BDMC: for data simulated from the model, the z that generated x is an exact posterior
sample. A reverse chain from it (b_T down to b_0) has E[w_rev] = 1 / p(x), so
-log mean(w_rev) is a stochastic *upper* bound: the forward and reverse chains bracket the
true log p(x), and the bracket's width bounds the error of both.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import _compile_mode, objectives
from kvae._checks import positive_int
from kvae._choices import AIS_DEFAULTS
from kvae.errors import ConfigError
from kvae.evaluation.moments import q_moments
from kvae.evaluation.result import LogLikelihood

__all__ = ["STDERR_IS", "ais_log_likelihood", "bdmc", "check_ais_options"]

# One table, in kvae._choices (the command line reads it), plus the bias check's switch.
DEFAULTS = {**AIS_DEFAULTS, "bias_check": True}


STDERR_IS = (
    "chain noise only: the spread of the chains' weights; the bias of finitely many "
    "temperatures (AIS under-estimates log p(x) in expectation) is not in it, see "
    "bias_indicator"
)


def check_ais_options(**options):
    """Validated AIS options (defaults filled in); ConfigError before any work."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"Expected AIS options among {sorted(DEFAULTS)}. Received unknown: {unknown}."
        )
    o = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    for name in ("num_temperatures", "num_chains", "num_leapfrog_steps", "warmup_chains"):
        positive_int(name, o[name])
    if o["num_temperatures"] < 2:
        raise ConfigError(
            "Expected num_temperatures >= 2 intermediate distributions. "
            f"Received: num_temperatures={o['num_temperatures']}."
        )
    ta = o["target_accept"]
    if not (isinstance(ta, (int, float)) and 0 < ta < 1):
        raise ConfigError(f"Expected 0 < target_accept < 1. Received: target_accept={ta!r}.")
    step = o["init_step_size"]
    if step is not None and not (
        isinstance(step, (int, float)) and step > 0 and math.isfinite(step)
    ):
        raise ConfigError(
            f"Expected init_step_size to be a finite number > 0 (or None: from q's scale). "
            f"Received: init_step_size={step!r}."
        )
    if not isinstance(o["bias_check"], bool):
        raise ConfigError(f"Expected bias_check True or False. Received: {o['bias_check']!r}.")
    if o["start"] not in ("posterior", "prior"):
        raise ConfigError(f"Expected start 'posterior' or 'prior'. Received: {o['start']!r}.")
    positive_int("batch_size", o["batch_size"])
    if isinstance(o["seed"], bool) or not isinstance(o["seed"], int):
        raise ConfigError(f"Expected an integer seed. Received: seed={o['seed']!r}.")
    return o


def sigmoid_schedule(num):
    """b_0 = 0 < ... < b_T = 1, dense near both ends (Grosse et al. 2015), float64."""
    s = 1.0 / (1.0 + np.exp(-np.linspace(-4.0, 4.0, num + 1)))
    return (s - s[0]) / (s[-1] - s[0])


def reverse_transitions(betas):
    """``(b_from, b_to)`` of the reverse chain: b_T -> b_{T-1} -> ... -> b_0."""
    return betas[1:][::-1], betas[:-1][::-1]


def _chain_fn(model):
    fn = getattr(model, "_kvae_ais_fn", None)
    if fn is not None:
        return fn

    def run(x, z0, b_from, b_to, log_step, seed, adapt, target_accept, use_prior, num_leapfrog):
        """One pass of C chains [C, B, L] over the transitions (b_from[i] -> b_to[i]).

        log_step: [T, B] step sizes (used as given unless ``adapt``, which adapts the
        current one and records it). Returns log weights [C, B], the steps [T, B], the
        mean acceptance [B] and the final states."""
        target = model.likelihood_head.prepare(x)
        prior = model.prior_distribution()
        q = model.encode(x)

        def log_joint(z):
            lp = objectives._log_prob(model.decode(z), target)
            return lp + tf.cast(prior.log_prob(z), lp.dtype)

        def log_base(z):
            return tf.where(use_prior, prior.log_prob(z), q.log_prob(z))

        num = tf.shape(b_from)[0]
        chains = tf.shape(z0)[0]

        def body(i, z, lw, cur, steps, acc):
            lo, hi = b_from[i], b_to[i]
            lw = lw + (hi - lo) * (log_joint(z) - log_base(z))
            step = tf.where(adapt, cur, log_step[i])

            def tempered(zz):
                return (1.0 - hi) * log_base(zz) + hi * log_joint(zz)

            kernel = tfp.mcmc.HamiltonianMonteCarlo(
                tempered, step_size=tf.exp(step)[:, None], num_leapfrog_steps=num_leapfrog
            )
            results = kernel.bootstrap_results(z)
            seed_i = tf.random.experimental.stateless_fold_in(seed, i)
            z, results = kernel.one_step(z, results, seed=seed_i)
            ratio = tf.where(
                tf.math.is_finite(results.log_accept_ratio), results.log_accept_ratio, -np.inf
            )
            accept = tf.reduce_mean(tf.exp(tf.minimum(ratio, 0.0)), axis=0)  # [B]
            steps = steps.write(i, step)
            cur = tf.where(adapt, step + 0.5 * (accept - target_accept), cur)
            return i + 1, z, lw, cur, steps, acc + accept

        batch = tf.shape(z0)[1]
        init = (
            tf.constant(0),
            z0,
            tf.zeros([chains, batch]),
            log_step[0],
            tf.TensorArray(tf.float32, size=num),
            tf.zeros([batch]),
        )
        _, z, lw, _, steps, acc = tf.while_loop(lambda i, *_: i < num, body, init)
        return lw, steps.stack(), acc / tf.cast(num, tf.float32), z

    fn = _compile_mode.function(run)
    model._kvae_ais_fn = fn
    return fn


def _initial_log_step(q_scale, init_step_size):
    if init_step_size is not None:
        return np.full(q_scale.shape[0], np.log(init_step_size), np.float32)
    # Half of q's mean scale: the right order for a posterior that q roughly matches.
    return np.log(0.5 * np.mean(q_scale, axis=1)).astype(np.float32)


def _weights_summary(lw):
    """log mean exp over chains and its delta-method standard error, float64 ``[B]``."""
    lw = np.asarray(lw, np.float64)
    c = lw.shape[0]
    top = np.max(lw, axis=0)
    w = np.exp(lw - top)
    mean = w.mean(axis=0)
    est = top + np.log(mean)
    se = w.std(axis=0, ddof=1) / (np.sqrt(c) * mean) if c > 1 else np.full_like(est, np.nan)
    return est, se


def _run_batch(model, xb, o, seed, z_exact=None):
    """Forward AIS (and with ``z_exact`` also the reverse chain) for one batch; ``seed`` is
    the batch's stateless seed pair."""
    fn = _chain_fn(model)
    lat = model.latent_dim
    b = len(xb)
    betas = sigmoid_schedule(o["num_temperatures"]).astype(np.float32)
    fwd_from, fwd_to = betas[:-1], betas[1:]
    x_t = tf.constant(xb)
    q = model.encode(x_t)
    base = model.prior_distribution() if o["start"] == "prior" else q
    log_step0 = _initial_log_step(q_moments(q, num_samples=64)[1], o["init_step_size"])
    steps_in = np.tile(log_step0, (len(fwd_from), 1))
    use_prior = tf.constant(o["start"] == "prior")
    common = dict(
        adapt=None,
        target_accept=tf.constant(o["target_accept"], tf.float32),
        use_prior=use_prior,
        num_leapfrog=o["num_leapfrog_steps"],
    )

    def pass_(z0, b_from, b_to, steps, seed_, adapt):
        args = dict(common, adapt=tf.constant(adapt))
        return fn(x_t, tf.constant(z0, tf.float32), b_from, b_to, tf.constant(steps), seed_, **args)

    s = seed
    seeds = [tf.random.experimental.stateless_fold_in(s, k) for k in range(4)]
    z_w = base.sample(o["warmup_chains"], seed=seeds[0])
    z_w = tf.reshape(z_w, (o["warmup_chains"], -1, lat)) * tf.ones((1, b, 1))
    _, steps, _, _ = pass_(z_w, fwd_from, fwd_to, steps_in, seeds[1], True)
    steps = steps.numpy()
    z0 = base.sample(o["num_chains"], seed=seeds[2])
    z0 = tf.reshape(z0, (o["num_chains"], -1, lat)) * tf.ones((1, b, 1))
    lw, _, accept, _ = pass_(z0, fwd_from, fwd_to, steps, seeds[3], False)
    out = {"forward": _weights_summary(lw.numpy()), "accept": accept.numpy(), "steps": steps}
    if o["bias_check"] and z_exact is None:
        # The same chains' start and seed over half the temperatures, each transition with
        # the step adapted for the nearest temperature of the full schedule.
        half = sigmoid_schedule(max(2, o["num_temperatures"] // 2)).astype(np.float32)
        nearest = np.abs(fwd_to[None, :] - half[1:, None]).argmin(axis=1)
        lw_h, _, _, _ = pass_(z0, half[:-1], half[1:], steps[nearest], seeds[3], False)
        out["half"] = _weights_summary(lw_h.numpy())
    if z_exact is not None:
        zr = np.broadcast_to(z_exact[None], (o["num_chains"], b, lat))
        seed_r = tf.random.experimental.stateless_fold_in(s, 99)
        # Reverse: b_T -> b_0; transition i targets b_to[i], with the step adapted for it.
        rev_steps = np.concatenate([steps[::-1][1:], steps[:1]])
        rev_from, rev_to = reverse_transitions(betas)
        rev_steps = rev_steps[: len(rev_from)]
        lw_r, _, _, _ = pass_(zr, rev_from, rev_to, rev_steps, seed_r, False)
        # log w_rev = sum (b_{t-1} - b_t) [log p(x, z) - log p_0(z)], E[w_rev] = 1 / p(x).
        est, se = _weights_summary(lw_r.numpy())
        out["reverse"] = (-est, se)
    return out


def _loop(model, x, o, z_exact=None):
    x = np.asarray(x, np.float32)
    bs = o["batch_size"]
    parts = []
    for start in range(0, len(x), bs):
        xb = x[start : start + bs]
        n = len(xb)
        zb = None if z_exact is None else np.asarray(z_exact[start : start + bs], np.float32)
        if n < bs and len(x) > bs:  # pad to one compiled shape
            xb = np.concatenate([xb, np.repeat(xb[-1:], bs - n, axis=0)])
            if zb is not None:
                zb = np.concatenate([zb, np.repeat(zb[-1:], bs - n, axis=0)])
        # fold_in, not seed + start: seed 0's second batch and seed 50's first never share.
        batch_seed = tf.random.experimental.stateless_fold_in([o["seed"], 0], start)
        out = _run_batch(model, xb, o, batch_seed, zb)
        parts.append(
            {k: (tuple(a[:n] for a in v) if isinstance(v, tuple) else v) for k, v in out.items()}
        )
        parts[-1]["accept"] = out["accept"][:n]
        parts[-1]["steps"] = out["steps"][:, :n]
    return parts


def ais_log_likelihood(model, x, **options):
    """log p(x) per example by AIS, a :class:`LogLikelihood` (a stochastic lower bound).

    Options (defaults in ``DEFAULTS``): ``num_temperatures`` (intermediate distributions,
    100), ``num_chains`` per example (16), ``num_leapfrog_steps`` per HMC transition (5),
    ``warmup_chains`` of the step-size warm-up (4), ``target_accept`` (0.65),
    ``init_step_size`` (None: half of q's mean scale), ``start`` (``"posterior"``: anneal
    from q(z|x); ``"prior"``: from p(z)), ``batch_size`` (50), ``seed`` (0) and
    ``bias_check`` (True).

    The standard error is chain noise only (``info["stderr_is"]``): the spread of the
    chains' weights. AIS is also biased low by its finitely many temperatures, which no
    number of chains removes (the README's MNIST run: 0.054 nats against a mean s.e. of
    0.004). With ``bias_check`` the same chains run again over half the temperatures (50%
    more work); ``info["bias_indicator"]`` is the estimate minus that one, per example.
    The bias shrinks about as 1/T, so halving T about doubles it: the indicator estimates
    the bias left at T (a lower bound's shortfall; its own noise is about sqrt(2) times
    the standard error). ``info["half_temperatures_estimate"]`` holds the half run.
    """
    o = check_ais_options(**options)
    model.check_data(x)
    parts = _loop(model, x, o)
    est = np.concatenate([p["forward"][0] for p in parts])
    se = np.concatenate([p["forward"][1] for p in parts])
    info = {
        k: o[k]
        for k in ("num_temperatures", "num_chains", "num_leapfrog_steps", "start", "warmup_chains")
    }
    info["accept"] = np.concatenate([p["accept"] for p in parts])
    info["step_size"] = np.exp(np.concatenate([p["steps"] for p in parts], axis=1))  # [T, n]
    info["stderr_is"] = STDERR_IS
    if o["bias_check"]:
        half = np.concatenate([p["half"][0] for p in parts])
        info["half_temperatures"] = max(2, o["num_temperatures"] // 2)
        info["half_temperatures_estimate"] = half
        info["half_temperatures_stderr"] = np.concatenate([p["half"][1] for p in parts])
        info["bias_indicator"] = est - half
    return LogLikelihood(est, se, "ais", info)


def simulate(model, n, seed=0):
    """``(x, z)``: n codes from the prior and data drawn from p(x|z) (numpy, data units)."""
    n = positive_int("n", n)
    s = tf.constant([seed, 7], tf.int32)
    z = model.prior_distribution().sample(n, seed=s)
    p = model.decode(z)
    x = model.likelihood_head.to_data(p.sample(seed=tf.random.experimental.stateless_fold_in(s, 1)))
    return np.asarray(x, np.float32), np.asarray(z, np.float32)


def bdmc(model, x=None, z=None, *, n=100, **options):
    """The bidirectional Monte Carlo bracket of log p(x) on data simulated from the model.

    Without ``x`` and ``z``, n examples are simulated (:func:`simulate`); with them, ``z``
    must be the code that generated each ``x``. Returns a dict of numpy arrays: ``lower``
    (forward AIS, with ``lower_stderr``), ``upper`` (reverse AIS, with ``upper_stderr``),
    ``width`` = upper - lower per example, and ``x``, ``z``, plus the means ``lower_mean``,
    ``upper_mean`` and ``width_mean`` (nats per example). The true log p(x) lies between
    them (each bound is stochastic: in expectation, and within a few standard errors).
    """
    o = check_ais_options(**options)
    if (x is None) != (z is None):
        raise ConfigError("Expected both x and the z that generated it, or neither.")
    if x is None:
        x, z = simulate(model, n, seed=o["seed"])
    model.check_data(x)
    z = np.asarray(z, np.float32)
    if z.shape != (len(x), model.latent_dim):
        raise ConfigError(
            f"Expected z of shape ({len(x)}, {model.latent_dim}). Received: {z.shape}."
        )
    parts = _loop(model, x, o, z_exact=z)
    lower = np.concatenate([p["forward"][0] for p in parts])
    lower_se = np.concatenate([p["forward"][1] for p in parts])
    upper = np.concatenate([p["reverse"][0] for p in parts])
    upper_se = np.concatenate([p["reverse"][1] for p in parts])
    return {
        "x": x,
        "z": z,
        "lower": lower,
        "lower_stderr": lower_se,
        "upper": upper,
        "upper_stderr": upper_se,
        "width": upper - lower,
        "lower_mean": float(np.mean(lower)),
        "upper_mean": float(np.mean(upper)),
        "width_mean": float(np.mean(upper - lower)),
    }
