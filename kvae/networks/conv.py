"""Convolutional encoder/decoder for images of any size and channel count.

The default is the shape of the keras.io VAE example (for 28x28x1 MNIST): two stride-2 3x3
convolutions (32, 64 filters) and a small dense layer, mirrored by transposed convolutions in
the decoder. Other shapes are settings:

* ``filters``: one stride-2 convolution per entry, or ``"auto"``: from the image size, layers of
  32, 64, 128, ... (at most 512) filters until the smaller side is at most 4 pixels
  (64x64: 32, 64, 128, 256).
* ``normalization="batch"``: each convolution is followed by batch normalisation and then
  the activation (conv -> BN -> activation, as PyTorch-VAE's networks do).
* Any height and width: the encoder's "same"-padded stride-2 convolutions round up
  (ceil(h / 2) per layer); the decoder grows from ceil(h / 2 ** len(filters)) and crops the
  centre of its last feature map to (height, width), so no size has to be divisible by anything.
  For sizes that divide evenly nothing is cropped and the layers are exactly those of before.

PyTorch-VAE's 64x64 CelebA network (``VanillaVAE``: five stride-2 3x3 convolutions of 32-512
filters with batch normalisation and leaky ReLU, latent 128; see docs/images.md)::

    encoder_kwargs={"filters": [32, 64, 128, 256, 512], "dense": 0,
                    "normalization": "batch", "activation": "leaky_relu"}
    decoder_kwargs={"filters": [256, 128, 64, 32, 32], "base_filters": 512,
                    "normalization": "batch", "activation": "leaky_relu"}
"""

import math

import keras

from kvae._checks import activation as activation_check
from kvae._checks import positive_int, shape_tuple
from kvae.errors import ConfigError

NORMALIZATIONS = (None, "batch")
_AUTO_MAX_FILTERS = 512
_AUTO_SMALLEST_SIDE = 4


def _image_shape(data_shape, who):
    shape = shape_tuple("data_shape", data_shape)
    if len(shape) != 3:
        raise ConfigError(
            f"Expected `data_shape` to be an image shape (height, width, channels) for the "
            f"{who}. Received: data_shape={shape}. Use encoder='mlp'/decoder='mlp' for flat data."
        )
    return shape


def auto_filters(height, width):
    """The filters of ``filters="auto"`` for an image of ``height`` x ``width``: stride-2
    layers of 32, 64, ... (at most 512) filters until the smaller side is at most 4 pixels
    (at least one layer)."""
    side, sizes = min(height, width), []
    while not sizes or side > _AUTO_SMALLEST_SIDE:
        sizes.append(min(32 * 2 ** len(sizes), _AUTO_MAX_FILTERS))
        side = math.ceil(side / 2)
    return tuple(sizes)


def _filters(filters, data_shape, mirrored):
    if isinstance(filters, str) and filters == "auto":
        sizes = auto_filters(*data_shape[:2])
        return tuple(reversed(sizes)) if mirrored else sizes
    try:
        sizes = () if isinstance(filters, str) else tuple(filters)
    except TypeError:
        sizes = ()
    if not sizes:
        raise ConfigError(
            "Expected `filters` to be a non-empty list such as [32, 64], or 'auto' (from the "
            f"image size). Received: filters={filters!r}"
        )
    return tuple(positive_int("filters", f) for f in sizes)


def _normalization(value):
    if value not in NORMALIZATIONS:
        raise ConfigError(
            "Expected `normalization` to be None or 'batch' (batch normalisation after each "
            f"convolution). Received: normalization={value!r}"
        )
    return value


def _conv_block(layer_class, f, kernel_size, activation, normalization, name):
    """[conv(f, stride 2, same, activation)] or, with batch normalisation, [conv, BN, act]."""
    if normalization is None:
        conv = layer_class(
            f, kernel_size, strides=2, padding="same", activation=activation, name=name
        )
        return [conv]
    return [
        layer_class(f, kernel_size, strides=2, padding="same", name=name),
        keras.layers.BatchNormalization(name=f"{name}_bn"),
        keras.layers.Activation(activation, name=f"{name}_act"),
    ]


def _run(layers, h, training):
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            h = layer(h, training=training)
        else:
            h = layer(h)
    return h


@keras.saving.register_keras_serializable(package="kvae")
class ConvEncoder(keras.layers.Layer):
    """x -> Conv2D(f, k, stride 2, same) [-> BatchNorm] -> activation, for f in ``filters``
    -> flatten -> Dense.

    Args:
        data_shape: (height, width, channels), any sizes.
        filters: filters of each stride-2 convolution (default [32, 64]), or "auto" (from the
            image size: see the module docstring).
        kernel_size: convolution kernel size.
        dense: width of the final dense layer (0 to skip it).
        activation: Keras activation, e.g. "relu" or "leaky_relu".
        normalization: None, or "batch" for batch normalisation between each convolution and
            its activation.
    """

    def __init__(
        self,
        data_shape,
        filters=(32, 64),
        kernel_size=3,
        dense=16,
        activation="relu",
        normalization=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.data_shape = _image_shape(data_shape, "conv encoder")
        self.filters = _filters(filters, self.data_shape, mirrored=False)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.dense = int(dense)
        self.activation = activation_check(activation)
        self.normalization = _normalization(normalization)
        self.convs = [
            layer
            for i, f in enumerate(self.filters)
            for layer in _conv_block(
                keras.layers.Conv2D, f, self.kernel_size, activation, normalization, f"conv_{i}"
            )
        ]
        self.flatten = keras.layers.Flatten()
        self.head = keras.layers.Dense(self.dense, activation=activation) if self.dense else None

    def call(self, x, training=None):
        h = self.flatten(_run(self.convs, x, training))
        return self.head(h) if self.head is not None else h

    def get_config(self):
        return {
            **super().get_config(),
            "data_shape": list(self.data_shape),
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "dense": self.dense,
            "activation": self.activation,
            "normalization": self.normalization,
        }


@keras.saving.register_keras_serializable(package="kvae")
class ConvDecoder(keras.layers.Layer):
    """z -> Dense(h0 * w0 * base_filters) -> reshape -> Conv2DTranspose(f, stride 2)
    [-> BatchNorm] -> activation, for f in ``filters`` -> a (height, width, filters[-1])
    feature map.

    (h0, w0) = (ceil(height / 2 ** L), ceil(width / 2 ** L)) for L = len(filters); when
    2 ** L does not divide the size, the last feature map is cropped at its centre to
    (height, width). The likelihood head projects each position's features onto the data's
    channels.

    Args:
        data_shape: (height, width, channels) of the data to generate, any sizes.
        filters: filters of each stride-2 transposed convolution (default [64, 32]), or
            "auto" (the encoder's "auto" filters, reversed).
        kernel_size: convolution kernel size.
        activation: Keras activation, e.g. "relu" or "leaky_relu".
        normalization: None, or "batch" for batch normalisation between each transposed
            convolution and its activation.
        base_filters: channels of the dense projection reshaped to (h0, w0); None: filters[0].
    """

    def __init__(
        self,
        data_shape,
        filters=(64, 32),
        kernel_size=3,
        activation="relu",
        normalization=None,
        base_filters=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.data_shape = _image_shape(data_shape, "conv decoder")
        self.filters = _filters(filters, self.data_shape, mirrored=True)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.activation = activation_check(activation)
        self.normalization = _normalization(normalization)
        self.base_filters = (
            None if base_filters is None else positive_int("base_filters", base_filters)
        )
        factor = 2 ** len(self.filters)
        h, w, _ = self.data_shape
        self.base = (-(-h // factor), -(-w // factor), self.base_filters or self.filters[0])
        self.project = keras.layers.Dense(
            self.base[0] * self.base[1] * self.base[2], activation=activation
        )
        self.reshape = keras.layers.Reshape(self.base)
        self.deconvs = [
            layer
            for i, f in enumerate(self.filters)
            for layer in _conv_block(
                keras.layers.Conv2DTranspose,
                f,
                self.kernel_size,
                activation,
                normalization,
                f"deconv_{i}",
            )
        ]
        extra_h, extra_w = self.base[0] * factor - h, self.base[1] * factor - w
        self.crop = None
        if extra_h or extra_w:
            self.crop = keras.layers.Cropping2D(
                ((extra_h // 2, extra_h - extra_h // 2), (extra_w // 2, extra_w - extra_w // 2))
            )

    def call(self, z, training=None):
        h = _run(self.deconvs, self.reshape(self.project(z)), training)
        return self.crop(h) if self.crop is not None else h

    def get_config(self):
        return {
            **super().get_config(),
            "data_shape": list(self.data_shape),
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "activation": self.activation,
            "normalization": self.normalization,
            "base_filters": self.base_filters,
        }
