"""kvae-sequence: VAEs over token sequences (or time series), as kvae plugins.

Installed, it adds to kvae (entry points, no change to kvae):

* the encoder ``gru`` and the decoder ``gru`` (groups ``kvae.encoders`` / ``kvae.decoders``),
* the likelihood ``categorical``, one categorical distribution over ``vocab_size`` tokens
  per position (group ``kvae.likelihoods``),
* the data set ``toy-sequences``, small synthetic token sequences generated
  deterministically (group ``kvae.datasets``)::

    (x_train, _), (x_test, _) = kvae.datasets.load("toy-sequences")    # (n, 16) tokens
    model = kvae.VAE(
        encoder="gru", decoder="gru", likelihood="categorical",
        data_shape=(16,), latent_dim=4,
    )

Tokens are integers in [0, vocab_size) stored as float32 (kvae feeds every model float
data); a sequence has shape (T,) or (T, 1). ``vocab_size`` defaults to 16 everywhere in this
package (networks, likelihood, data set) so the defaults fit together; pass the same value
through ``encoder_kwargs`` and ``likelihood_kwargs`` for another vocabulary.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.errors import ConfigError, DataError
from kvae.heads import LikelihoodHead

__version__ = "0.1.0"
__all__ = [
    "DEFAULT_VOCAB_SIZE",
    "Categorical",
    "GRUDecoder",
    "GRUEncoder",
    "load_toy_sequences",
]

tfd = tfp.distributions

DEFAULT_VOCAB_SIZE = 16


# -- argument checks --------------------------------------------------------------------------


def _int_at_least(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(
            f"Expected `{name}` to be an integer >= {low}. Received: {name}={value!r}"
        )
    return int(value)


def _sequence_shape(data_shape, who):
    """(T,) or (T, 1); ConfigError otherwise."""
    try:
        shape = tuple(int(d) for d in data_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) not in (1, 2) or any(d < 1 for d in shape) or shape[1:] not in ((), (1,)):
        raise ConfigError(
            f"Expected `data_shape` to be a sequence shape (length,) or (length, 1) for the "
            f"{who}, such as (16,). Received: data_shape={data_shape!r}. Reshape the data to "
            "(n, length), one token or value per step."
        )
    return shape


def _vocab_size(vocab_size, allow_none=False):
    if vocab_size is None and allow_none:
        return None
    return _int_at_least("vocab_size", vocab_size, 2)


# -- networks ---------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="kvae_sequence")
class GRUEncoder(keras.layers.Layer):
    """GRU sequence encoder: x (T,) or (T, 1) -> features (``units``,).

    Tokens are embedded (``vocab_size`` entries of ``embed_dim`` numbers) and read by a
    GRU; its last state is the feature vector from which kvae's posterior head computes
    q(z|x). With ``vocab_size=None`` the values are read as a real-valued time series
    (one number per step) instead of tokens.

    Args:
        data_shape: (length,) or (length, 1).
        vocab_size: number of distinct tokens (integers 0..vocab_size-1), or None for a
            real-valued series.
        embed_dim: size of each token's embedding (unused for a real-valued series).
        units: size of the GRU state, which is the output.
    """

    def __init__(self, data_shape, vocab_size=DEFAULT_VOCAB_SIZE, embed_dim=16, units=64, **kwargs):
        super().__init__(**kwargs)
        self.data_shape = _sequence_shape(data_shape, "GRU encoder")
        self.vocab_size = _vocab_size(vocab_size, allow_none=True)
        self.embed_dim = _int_at_least("embed_dim", embed_dim, 1)
        self.units = _int_at_least("units", units, 1)
        policy = self.dtype_policy
        self.embedding = (
            keras.layers.Embedding(self.vocab_size, self.embed_dim, dtype=policy, name="embedding")
            if self.vocab_size is not None
            else None
        )
        self.gru = keras.layers.GRU(self.units, dtype=policy, name="gru")

    def build(self, input_shape):
        steps = (input_shape[0], self.data_shape[0])
        if self.embedding is not None:
            self.embedding.build(steps)
            self.gru.build((*steps, self.embed_dim))
        else:
            self.gru.build((*steps, 1))
        self.built = True

    def call(self, x):
        length = self.data_shape[0]
        if self.embedding is not None:
            tokens = keras.ops.cast(keras.ops.round(keras.ops.reshape(x, (-1, length))), "int32")
            h = self.embedding(tokens)
        else:
            h = keras.ops.reshape(x, (-1, length, 1))
        return self.gru(h)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "data_shape": list(self.data_shape),
            "vocab_size": self.vocab_size,
            "embed_dim": self.embed_dim,
            "units": self.units,
        }


@keras.saving.register_keras_serializable(package="kvae_sequence")
class GRUDecoder(keras.layers.Layer):
    """GRU sequence decoder: z -> per-step features (T, ``units``).

    The GRU starts from a state computed from z and reads z again at every step; its
    output sequence is a (length, units) feature map, which kvae's likelihood head maps to
    each step's parameters (``vocab_size`` logits for ``likelihood="categorical"``, a mean
    for ``"gaussian"`` on (length, 1) time series).

    Args:
        data_shape: (length,) or (length, 1) of the sequences to generate.
        units: size of the GRU state and of each step's features.
    """

    def __init__(self, data_shape, units=64, **kwargs):
        super().__init__(**kwargs)
        self.data_shape = _sequence_shape(data_shape, "GRU decoder")
        self.units = _int_at_least("units", units, 1)
        policy = self.dtype_policy
        self.initial = keras.layers.Dense(units, activation="tanh", dtype=policy, name="initial")
        self.gru = keras.layers.GRU(units, return_sequences=True, dtype=policy, name="gru")

    def build(self, input_shape):
        latent = input_shape[-1]
        self.initial.build((input_shape[0], latent))
        self.gru.build((input_shape[0], self.data_shape[0], latent))
        self.built = True

    def call(self, z):
        length = self.data_shape[0]
        steps = keras.ops.repeat(keras.ops.expand_dims(z, 1), length, axis=1)
        return self.gru(steps, initial_state=[self.initial(z)])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.data_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "data_shape": list(self.data_shape), "units": self.units}


# -- likelihood -------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="kvae_sequence")
class Categorical(LikelihoodHead):
    """One categorical distribution over ``vocab_size`` tokens per position.

    p(x|z) = prod_t Categorical(x_t; softmax(logits_t(z))), as
    ``tfd.Independent(tfd.Categorical(logits))`` over integer tokens given as floats, so
    ``log_prob`` is a true log-probability (nats per sequence). Features with one row per
    position ((T, F) for (T,) data) are projected position by position to the logits;
    other features are flattened and projected densely.

    ``mean(params)`` is the most likely token at each position (the mode: an average of
    nominal tokens means nothing), so a model's ``predict`` gives tokens too. Data must be
    integers in [0, vocab_size); anything else is refused with a DataError.

    Args:
        data_shape: (length,) or (length, 1).
        vocab_size: number of distinct tokens.
    """

    def __init__(self, data_shape=None, vocab_size=DEFAULT_VOCAB_SIZE, **kwargs):
        super().__init__(data_shape, **kwargs)
        self.vocab_size = _vocab_size(vocab_size)
        self.params_per_dim = self.vocab_size
        self.data_range = (0, self.vocab_size - 1)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if input_shape[1:-1] != self.data_shape:
            return super().build(input_shape)
        # One feature vector per token: project each to that token's logits.
        self._pointwise = True
        self.projection = keras.layers.Dense(
            self.vocab_size, dtype=self.dtype_policy, name="params"
        )
        self.projection.build(input_shape)
        self.build_extra()
        self.built = True

    def support(self):
        return np.arange(self.vocab_size, dtype=np.float32)

    def distribution(self, params):
        return self._independent(tfd.Categorical(logits=params, dtype=params.dtype))

    def prepare(self, x):
        return tf.round(x)

    def mean(self, params):
        return tf.cast(tf.argmax(params, axis=-1), params.dtype)

    def check_data(self, x, name="x"):
        x = np.asarray(x)
        bad = (x != np.round(x)) | (x < 0) | (x > self.vocab_size - 1)
        if np.any(bad):
            example = float(x[bad].flat[0])
            raise DataError(
                f"Expected {name} to hold integer tokens in [0, {self.vocab_size - 1}] for the "
                f"categorical likelihood (vocab_size={self.vocab_size}). Received: "
                f"{int(np.count_nonzero(bad))} other values, for example {example:g}; values "
                f"from {float(np.min(x)):g} to {float(np.max(x)):g}. Map the data to token ids "
                "0..vocab_size-1, or pass likelihood_kwargs={'vocab_size': ...} (and the same "
                "to the encoder) to match the vocabulary."
            )

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size}


# -- data set ---------------------------------------------------------------------------------

TOY_PATTERNS = ("count-up", "count-down", "skip-two", "alternate")


def load_toy_sequences(
    *, n_train=2000, n_test=500, length=16, vocab_size=DEFAULT_VOCAB_SIZE, noise=0.05, seed=0
):
    """Small synthetic token sequences: ``((x_train, y_train), (x_test, y_test))``.

    Each sequence follows one of four patterns, its label y (int64): 0 ``count-up``
    (s, s+1, s+2, ...), 1 ``count-down`` (s, s-1, ...), 2 ``skip-two`` (s, s+2, ...), 3
    ``alternate`` (a, b, a, b, ...), all modulo ``vocab_size``, from random starts; then each
    token is replaced by a random one with probability ``noise``. x is float32 of shape
    (n, length) holding the integer tokens (use ``likelihood="categorical"``).

    Generated, not downloaded: the same arrays on every machine for the same arguments.

    Args:
        n_train, n_test: number of training and test sequences (>= 1).
        length: tokens per sequence (>= 2).
        vocab_size: number of distinct tokens (>= 2).
        noise: probability in [0, 1) that a token is replaced by a random one.
        seed: seed of the generator.
    """
    n_train = _int_at_least("n_train", n_train, 1)
    n_test = _int_at_least("n_test", n_test, 1)
    length = _int_at_least("length", length, 2)
    vocab_size = _vocab_size(vocab_size)
    seed = _int_at_least("seed", seed, 0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 1:
        raise ConfigError(f"Expected `noise` to be a number in [0, 1). Received: noise={noise!r}")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    labels = rng.integers(0, len(TOY_PATTERNS), size=n)
    start = rng.integers(0, vocab_size, size=(n, 1))
    other = rng.integers(0, vocab_size, size=(n, 1))
    t = np.arange(length)[np.newaxis, :]
    step = np.choose(labels, [1, -1, 2, 0])[:, np.newaxis]
    x = (start + step * t) % vocab_size
    alternate = labels == 3
    x[alternate] = np.where(t % 2 == 0, start[alternate], other[alternate])
    flip = rng.random((n, length)) < noise
    x = np.where(flip, rng.integers(0, vocab_size, size=(n, length)), x)
    x = x.astype(np.float32)
    y = labels.astype(np.int64)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
