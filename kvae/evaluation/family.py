"""What the gaps' q* ranges over: the posterior head's per-example outputs, and, with
``family="full"``, a per-example copy of the family's shared weights too.

A posterior head maps the encoder's features to per-example outputs by its ``projection``
and builds q(z|x) from them, possibly with weights of its own shared by every example: an
IAF's MADE networks, the hierarchical posterior's q(z2|z1) network. Those shared weights
are part of the family's parameters per example (Cremer et al. 2018 optimise every
parameter of q for each x), so q* over the outputs alone is the best member of a smaller
family whenever the head has them.
"""

import numpy as np
import tensorflow as tf

from kvae.errors import ConfigError
from kvae.evaluation import lbfgs

__all__ = ["FAMILIES", "optimise_with_shared_weights", "q_star_over", "shared_weights"]

FAMILIES = ("outputs", "full")

WHOLE = "the whole family (the head's outputs are all of its parameters)"
OUTPUTS = "the head's outputs only, its shared weights fixed ({names})"
FULL = "the whole family (the head's outputs and a per-example copy of its shared weights)"


def shared_weights(head):
    """The posterior head's trainable variables other than its ``projection`` (the map from
    features to the per-example outputs, which q* replaces by free outputs)."""
    projection = getattr(head, "projection", None)
    skip = {id(v) for v in projection.trainable_variables} if projection is not None else set()
    return [v for v in head.trainable_variables if id(v) not in skip]


def q_star_over(model, family):
    """The words the gaps' summary gives for what q* ranges over (``gap_q_star_over``)."""
    if family not in FAMILIES:
        raise ConfigError(
            f"Expected family to be one of {list(FAMILIES)} (what q* is optimised over). "
            f"Received: family={family!r}."
        )
    shared = shared_weights(model.posterior_head)
    if not shared:
        return WHOLE
    if family == "full":
        return FULL
    return OUTPUTS.format(names=", ".join(_owners(model.posterior_head, shared)))


def _owners(head, variables):
    """The head's sub-layers that hold ``variables`` (from their paths), in order."""
    names = []
    for v in variables:
        parts = v.path.split("/")
        name = parts[parts.index(head.name) + 1] if head.name in parts[:-2] else v.path
        if name not in names:
            names.append(name)
    return names


def optimise_with_shared_weights(model, objective, params0, evaluate, *, tol, max_iterations):
    """q* for ONE example over its outputs and a copy of the shared weights: L-BFGS
    (``kvae.evaluation.lbfgs.minimise``) on the concatenated vector, the shared
    variables assigned at each evaluation. ``objective(params)`` is minus the example's
    fixed-sample ELBO ``[1]`` for outputs ``params`` ``[1, P]`` with the variables' current
    values; ``evaluate(params)`` is called once with q*'s outputs and weights in place (its
    fresh-sample ELBO).

    Returns ``(params_star [1, P], evaluate's result, iterations, converged)``; the
    variables hold their original values again on return, whatever happens.
    """
    shared = shared_weights(model.posterior_head)
    original = [v.numpy() for v in shared]
    shapes = [o.shape for o in original]
    sizes = [int(np.prod(s)) for s in shapes]
    size = int(params0.shape[-1])

    def unpack(flat):
        pieces = tf.split(flat[0], [size, *sizes])
        return pieces[0][None], [tf.reshape(p, s) for p, s in zip(pieces[1:], shapes, strict=True)]

    def value_and_grad(flat, active=None):  # one example: always active
        params, weights = unpack(flat)
        for v, w in zip(shared, weights, strict=True):
            v.assign(w)
        with tf.GradientTape() as tape:
            tape.watch(params)
            value = objective(params)
        grads = tape.gradient(value, [params, *[v.value for v in shared]])
        flat_grad = tf.concat(
            [tf.reshape(grads[0], [-1]), *[tf.reshape(g, [-1]) for g in grads[1:]]], 0
        )
        return value, flat_grad[None]

    flat0 = tf.concat(
        [tf.reshape(params0, [-1]), *[tf.reshape(tf.constant(o), [-1]) for o in original]], 0
    )[None]
    try:
        start = value_and_grad(flat0)[0]
        flat, value, iterations, converged, _ = lbfgs.minimise(
            value_and_grad, flat0, tol=tol, max_iterations=max_iterations
        )
        if not bool(value[0] < start[0]):  # keep the start where q* did not improve on it
            flat = flat0
        params, weights = unpack(flat)
        for v, w in zip(shared, weights, strict=True):
            v.assign(w)
        return params, evaluate(params), int(iterations[0]), bool(converged[0])
    finally:
        for v, o in zip(shared, original, strict=True):
            v.assign(o)
