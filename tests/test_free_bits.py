"""free_bits: below ``free_bits * latent_dim`` nats the KL term gives no gradient (its value
still counts in the loss), and IWAE refuses it."""

import keras
import numpy as np
import pytest

import kvae
from kvae.errors import ConfigError

X = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")


def _one_step(**kwargs):
    """One SGD step on X (one batch) from the same initial weights and the same noise."""
    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0, kl="analytic", **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), steps_per_execution=1, jit_compile=False)
    history = model.fit(X, epochs=1, batch_size=32, shuffle=False, verbose=0)
    weights = np.concatenate([np.ravel(w) for w in model.trainable_weights])
    return weights, {k: v[0] for k, v in history.history.items()}


def test_free_bits_stops_the_kl_gradient_but_not_its_value():
    """A floor of 100 nats per unit is far above the KL of a fresh model (a few nats), so the
    step follows the reconstruction alone: the same weights as with beta=0, up to float32
    rounding of the same operations (atol 1e-6 on weights of order 0.1). Without free bits
    the KL's gradient moves the encoder: the weights differ by far more than that."""
    free, free_logs = _one_step(free_bits=100.0)
    no_kl, _ = _one_step(beta=0.0)
    plain, plain_logs = _one_step()
    np.testing.assert_allclose(free, no_kl, atol=1e-6)
    assert np.max(np.abs(plain - no_kl)) > 1e-4
    # The value still counts: loss = reconstruction + KL, the same first-step numbers.
    np.testing.assert_allclose(
        free_logs["loss"], free_logs["reconstruction"] + free_logs["kl"], rtol=1e-5
    )
    np.testing.assert_allclose(free_logs["loss"], plain_logs["loss"], rtol=1e-5)


def test_free_bits_is_refused_with_iwae():
    with pytest.raises(ConfigError, match="free_bits=0 with objective='iwae'"):
        kvae.VAE(input_shape=(8, 8, 1), objective="iwae", num_samples=4, free_bits=0.5)
    kvae.VAE(input_shape=(8, 8, 1), objective="iwae", num_samples=4, free_bits=0.0)
