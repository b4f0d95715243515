"""``precision``: the Keras dtype policy a run's model is built under.

``"float32"`` (default) or ``"bf16"`` (Keras' ``"mixed_bfloat16"``: layers compute in
bfloat16, weights stay float32, kvae's heads and the loss compute in float32). In Python:
``kvae.VAE(..., dtype="mixed_bfloat16")`` (or Keras' global policy set before building
it); a saved model keeps its policy.

When bf16 pays (``scripts/compare_precision.py``, ``scripts/gemm_rates.py``; figures in
docs/performance.md): on CPUs with AMX / AVX512_BF16, TensorFlow's oneDNN convolutions run in bfloat16, so
the conv path (no XLA) gained (1.34x in the performance table, quiet machine). The 784-512-2 MLP did not (0.93x with
XLA, 1.00x without): XLA on CPU computes bfloat16 products at its float32 rate, and without
XLA the step's other ops cost more than AMX saves. Test nats stayed within the seed spread on
6,400 images; on all of MNIST the conv VAE lost 3.8-5.1 nats after 3 epochs (2 seeds). Not a
default.
"""

import contextlib

from kvae._choices import PRECISION_POLICIES, PRECISIONS

__all__ = ["PRECISIONS", "policy", "policy_scope", "scope"]


def policy(precision):
    """The Keras dtype policy name of a run's ``precision`` (``kvae._choices``' table)."""
    from kvae.errors import ConfigError

    if precision not in PRECISION_POLICIES:
        raise ConfigError(
            f"Expected `precision` to be one of {sorted(PRECISIONS)}. Received: "
            f"precision={precision!r}."
        )
    return PRECISION_POLICIES[precision]


@contextlib.contextmanager
def policy_scope(name):
    """Build layers under the Keras dtype policy ``name``; the global policy is restored."""
    import keras

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def scope(precision):
    """:func:`policy_scope` for a config's ``precision`` ("float32" or "bf16")."""
    return policy_scope(policy(precision))
