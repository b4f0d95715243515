"""How many training steps one compiled call runs when ``fit`` feeds arrays, and whether
those steps run in one XLA loop (:mod:`kvae.training.fused`)."""

import math

import numpy as np

from kvae import _compile_mode
from kvae.training.replicas import replicated

__all__ = ["FUSED_MAX_BYTES", "fusable", "steps_per_call"]

# Stacked batches of one fused call above this size are not worth the copy: Keras' loop.
FUSED_MAX_BYTES = 256 * 2**20


def steps_per_call(steps, wanted):
    """Steps per compiled call for an epoch of ``steps`` steps when ``wanted`` are asked for:
    the divisor of ``steps`` nearest to ``wanted`` (by ratio) within [wanted/2, 4*wanted], so
    that no call runs across an epoch boundary; ``steps`` itself when an epoch is short; None
    when no divisor is near (then each epoch is a fresh pass of whole calls)."""
    if steps <= 8 * wanted:
        candidates = [d for d in range(1, steps + 1) if steps % d == 0 and d >= wanted / 2]
        return min(candidates, key=lambda d: abs(math.log(d / wanted))) if candidates else steps
    near = [d for d in range(max(1, wanted // 2), 4 * wanted + 1) if steps % d == 0]
    return min(near, key=lambda d: abs(math.log(d / wanted))) if near else None


def fusable(model, steps, batch_size, x):
    """Whether ``fit`` on arrays runs ``steps`` steps per call in one XLA loop (see
    :func:`kvae.training.fused.train_function`): XLA on, no convolution layers (inside an
    XLA loop they compile to slow code, ``kvae._compile_mode.fused_loop``), one device,
    not eager, steps > 1, and the stacked batches of one call small."""
    size = steps * batch_size * int(np.prod(x.shape[1:])) * 4
    return (
        steps > 1
        and not model.run_eagerly
        and _compile_mode.fused_loop(model, bool(model.jit_compile))[0]
        and not replicated(model.distribute_strategy)
        and size <= FUSED_MAX_BYTES
    )
