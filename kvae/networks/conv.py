"""Convolutional encoder/decoder with the shape of the keras.io VAE example: two stride-2
3x3 convolutions (32, 64 filters) and a small dense layer, mirrored by transposed
convolutions in the decoder."""

import keras

from kvae._checks import positive_int, shape_tuple
from kvae.errors import ConfigError


def _image_shape(data_shape, who):
    shape = shape_tuple("data_shape", data_shape)
    if len(shape) != 3:
        raise ConfigError(
            f"Expected `data_shape` to be an image shape (height, width, channels) for the "
            f"{who}. Received: data_shape={shape}. Use encoder='mlp'/decoder='mlp' for flat data."
        )
    return shape


def _filters(filters):
    try:
        sizes = tuple(filters)
    except TypeError:
        sizes = ()
    if not sizes:
        raise ConfigError(
            f"Expected `filters` to be a non-empty list such as [32, 64]. Received: filters={filters!r}"
        )
    return tuple(positive_int("filters", f) for f in sizes)


@keras.saving.register_keras_serializable(package="kvae")
class ConvEncoder(keras.layers.Layer):
    """x -> Conv2D(f, k, stride 2, same, activation) for f in ``filters`` -> flatten -> Dense.

    Args:
        data_shape: (height, width, channels).
        filters: filters of each stride-2 convolution (default [32, 64]).
        kernel_size: convolution kernel size.
        dense: width of the final dense layer (0 to skip it).
        activation: Keras activation.
    """

    def __init__(
        self, data_shape, filters=(32, 64), kernel_size=3, dense=16, activation="relu", **kwargs
    ):
        super().__init__(**kwargs)
        self.data_shape = _image_shape(data_shape, "conv encoder")
        self.filters = _filters(filters)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.dense = int(dense)
        self.activation = activation
        self.convs = [
            keras.layers.Conv2D(
                f,
                self.kernel_size,
                strides=2,
                padding="same",
                activation=activation,
                name=f"conv_{i}",
            )
            for i, f in enumerate(self.filters)
        ]
        self.flatten = keras.layers.Flatten()
        self.head = keras.layers.Dense(self.dense, activation=activation) if self.dense else None

    def call(self, x):
        h = x
        for conv in self.convs:
            h = conv(h)
        h = self.flatten(h)
        return self.head(h) if self.head is not None else h

    def get_config(self):
        return {
            **super().get_config(),
            "data_shape": list(self.data_shape),
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "dense": self.dense,
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package="kvae")
class ConvDecoder(keras.layers.Layer):
    """z -> Dense(h0 * w0 * filters[0]) -> reshape -> Conv2DTranspose(f, stride 2) for f in
    ``filters`` -> a (height, width, filters[-1]) feature map.

    The likelihood head projects each position's features onto the data's channels, so
    height and width must be divisible by 2 ** len(filters).

    Args:
        data_shape: (height, width, channels) of the data to generate.
        filters: filters of each stride-2 transposed convolution (default [64, 32]).
        kernel_size: convolution kernel size.
        activation: Keras activation.
    """

    def __init__(self, data_shape, filters=(64, 32), kernel_size=3, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.data_shape = _image_shape(data_shape, "conv decoder")
        self.filters = _filters(filters)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.activation = activation
        factor = 2 ** len(self.filters)
        h, w, _ = self.data_shape
        if h % factor or w % factor:
            raise ConfigError(
                f"Expected image height and width divisible by {factor} (2 ** len(filters)) for "
                f"the conv decoder. Received: data_shape={self.data_shape}, "
                f"filters={list(self.filters)}. Use fewer filters or pad the images."
            )
        self.base = (h // factor, w // factor, self.filters[0])
        self.project = keras.layers.Dense(
            self.base[0] * self.base[1] * self.base[2], activation=activation
        )
        self.reshape = keras.layers.Reshape(self.base)
        self.deconvs = [
            keras.layers.Conv2DTranspose(
                f,
                self.kernel_size,
                strides=2,
                padding="same",
                activation=activation,
                name=f"deconv_{i}",
            )
            for i, f in enumerate(self.filters)
        ]

    def call(self, z):
        h = self.reshape(self.project(z))
        for deconv in self.deconvs:
            h = deconv(h)
        return h

    def get_config(self):
        return {
            **super().get_config(),
            "data_shape": list(self.data_shape),
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "activation": self.activation,
        }
