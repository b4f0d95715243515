"""Multi-layer perceptrons: the original Keras VAE example's 784-512-2 networks, and with
``hidden=()`` the linear VAE (probabilistic PCA when paired with a Gaussian likelihood)."""

import keras

from kvae._checks import activation as activation_check
from kvae._checks import positive_int, shape_tuple
from kvae.errors import ConfigError


def _hidden_sizes(hidden):
    if isinstance(hidden, int):
        hidden = (hidden,)
    try:
        sizes = tuple(hidden)
    except TypeError:
        sizes = None
    if sizes is None:
        raise ConfigError(
            f"Expected `hidden` to be a list of layer sizes such as [512] (or [] for a linear "
            f"network). Received: hidden={hidden!r}"
        )
    return tuple(positive_int("hidden", h, what="Each entry is a layer width.") for h in sizes)


class _MLP(keras.layers.Layer):
    def __init__(self, data_shape, hidden=(512,), activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.data_shape = shape_tuple("data_shape", data_shape)
        self.hidden = _hidden_sizes(hidden)
        self.activation = activation_check(activation)
        self.dense_layers = [
            keras.layers.Dense(h, activation=activation, name=f"dense_{i}")
            for i, h in enumerate(self.hidden)
        ]

    def build(self, input_shape):
        shape = (input_shape[0], _flat(input_shape))
        for layer in self.dense_layers:
            layer.build(shape)
            shape = (shape[0], layer.units)
        self.built = True

    def call(self, inputs):
        h = inputs
        if len(h.shape) > 2:
            h = keras.ops.reshape(h, (-1, _flat(h.shape)))
        for layer in self.dense_layers:
            h = layer(h)
        return h

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.hidden[-1] if self.hidden else _flat(input_shape))

    def get_config(self):
        return {
            **super().get_config(),
            "data_shape": list(self.data_shape),
            "hidden": list(self.hidden),
            "activation": self.activation,
        }


def _flat(shape):
    n = 1
    for d in shape[1:]:
        n *= int(d)
    return n


@keras.saving.register_keras_serializable(package="kvae")
class MLPEncoder(_MLP):
    """x -> flatten -> Dense(h, activation) for h in ``hidden`` -> features.

    Args:
        data_shape: shape of one example, e.g. (28, 28, 1).
        hidden: layer widths; the Keras example uses [512]; [] gives the flattened input.
        activation: Keras activation of the hidden layers.
    """


@keras.saving.register_keras_serializable(package="kvae")
class MLPDecoder(_MLP):
    """z -> Dense(h, activation) for h in ``hidden`` -> features (z itself if ``hidden=[]``).

    Args:
        data_shape: shape of one example (the likelihood head maps features onto it).
        hidden: layer widths; the Keras example uses [512].
        activation: Keras activation of the hidden layers.
    """
