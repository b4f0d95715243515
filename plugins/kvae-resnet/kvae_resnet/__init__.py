"""kvae-resnet: a residual convolutional encoder and decoder for colour images.

Installed, it adds the encoder ``resnet`` and the decoder ``resnet`` to kvae (entry points
in the groups ``kvae.encoders`` and ``kvae.decoders``)::

    model = kvae.VAE(
        encoder="resnet",
        decoder="resnet",
        likelihood="discretized-logistic",
        data_shape=(32, 32, 3),
        latent_dim=32,
    )

Both networks are ordinary Keras 3 layers. kvae builds them as ``cls(data_shape=...)``
plus the user's ``encoder_kwargs`` / ``decoder_kwargs``. The decoder returns an
(H, W, F) feature map, and kvae's likelihood head projects each pixel's F features onto
the pixel's channel parameters (two per channel for the discretised logistic).
"""

import keras

from kvae.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ResidualBlock", "ResNetDecoder", "ResNetEncoder"]


# -- argument checks (Keras-style messages: expected, received, what to do) ------------------


def _int_at_least(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(
            f"Expected `{name}` to be an integer >= {low}. Received: {name}={value!r}"
        )
    return value


def _filters(filters):
    try:
        sizes = tuple(filters)
    except TypeError:
        sizes = ()
    if not sizes:
        raise ConfigError(
            "Expected `filters` to be a non-empty list of channel counts, one per resolution "
            f"stage, such as [32, 64]. Received: filters={filters!r}"
        )
    return tuple(_int_at_least("filters", f, 1) for f in sizes)


def _activation(activation):
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError):
        raise ConfigError(
            "Expected `activation` to be a Keras activation name such as 'relu' or 'silu'. "
            f"Received: activation={activation!r}"
        ) from None
    return activation


def _image_shape(data_shape, factor, who, filters):
    """(H, W, C) with H and W divisible by ``factor``; ConfigError otherwise."""
    try:
        shape = tuple(int(d) for d in data_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or any(d < 1 for d in shape):
        raise ConfigError(
            f"Expected `data_shape` to be an image shape (height, width, channels) for the "
            f"{who}, such as (32, 32, 3). Received: data_shape={data_shape!r}. Use a sequence "
            "or MLP network for data that is not an image."
        )
    h, w, _ = shape
    if h % factor or w % factor:
        raise ConfigError(
            f"Expected image height and width divisible by {factor} for the {who}: 2 ** "
            f"len(filters), one factor of 2 per resolution stage. Received: data_shape={shape}, "
            f"filters={list(filters)}. Pad or crop the images to a multiple of {factor}, or "
            "use fewer stages (a shorter `filters` list)."
        )
    return shape


# -- layers -----------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="kvae_resnet")
class ResidualBlock(keras.layers.Layer):
    """``x + conv(act(conv(act(x))))``: a pre-activation residual block (He et al. 2016).

    The second convolution starts at zero, so every block is the identity at initialisation
    and a deep stack trains as stably as a shallow one.

    Args:
        filters: channels of the input and output.
        kernel_size: size of both convolutions.
        activation: Keras activation.
    """

    def __init__(self, filters, kernel_size=3, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = _int_at_least("filters", filters, 1)
        self.kernel_size = _int_at_least("kernel_size", kernel_size, 1)
        self.activation = _activation(activation)
        self.act = keras.layers.Activation(activation, dtype=self.dtype_policy)
        self.conv1 = keras.layers.Conv2D(
            filters, kernel_size, padding="same", dtype=self.dtype_policy, name="conv1"
        )
        self.conv2 = keras.layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            kernel_initializer="zeros",
            dtype=self.dtype_policy,
            name="conv2",
        )

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            raise ConfigError(
                f"Expected {self.filters} input channels for the residual block {self.name!r}. "
                f"Received: input_shape={tuple(input_shape)}."
            )
        self.conv1.build(input_shape)
        self.conv2.build(input_shape)
        self.built = True

    def call(self, x):
        return x + self.conv2(self.act(self.conv1(self.act(x))))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package="kvae_resnet")
class ResNetEncoder(keras.layers.Layer):
    """Residual convolutional encoder: x (H, W, C) -> features (``dense``,).

    A 3x3 stem convolution to ``filters[0]`` channels, then one stage per entry of
    ``filters``: a stride-2 3x3 convolution to that many channels (halving height and
    width) followed by ``blocks`` residual blocks. The final map is flattened and projected
    to ``dense`` features, from which kvae's posterior head computes q(z|x).

    Args:
        data_shape: (height, width, channels) of one image, such as (32, 32, 3); height and
            width must be divisible by 2 ** len(filters).
        filters: channels of each stage (default [32, 64]: 32x32 -> 16x16 -> 8x8).
        blocks: residual blocks per stage (>= 0).
        dense: number of output features (>= 1).
        kernel_size: size of every convolution.
        activation: Keras activation.
    """

    def __init__(
        self,
        data_shape,
        filters=(32, 64),
        blocks=1,
        dense=256,
        kernel_size=3,
        activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = _filters(filters)
        self.data_shape = _image_shape(
            data_shape, 2 ** len(self.filters), "resnet encoder", self.filters
        )
        self.blocks = _int_at_least("blocks", blocks, 0)
        self.dense = _int_at_least("dense", dense, 1)
        self.kernel_size = _int_at_least("kernel_size", kernel_size, 1)
        self.activation = _activation(activation)
        policy = self.dtype_policy
        self.stem = keras.layers.Conv2D(
            self.filters[0], self.kernel_size, padding="same", dtype=policy, name="stem"
        )
        self.stages = []
        for i, f in enumerate(self.filters):
            down = keras.layers.Conv2D(
                f, self.kernel_size, strides=2, padding="same", dtype=policy, name=f"down_{i}"
            )
            blocks_i = [
                ResidualBlock(f, self.kernel_size, activation, dtype=policy, name=f"block_{i}_{j}")
                for j in range(self.blocks)
            ]
            self.stages.append([down, *blocks_i])
        self.act = keras.layers.Activation(activation, dtype=policy)
        self.flatten = keras.layers.Flatten(dtype=policy)
        self.head = keras.layers.Dense(self.dense, activation=activation, dtype=policy, name="head")

    def call(self, x):
        h = self.stem(x)
        for stage in self.stages:
            down, *blocks = stage
            h = down(self.act(h))
            for block in blocks:
                h = block(h)
        return self.head(self.flatten(self.act(h)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dense)

    def get_config(self):
        return {
            **super().get_config(),
            "data_shape": list(self.data_shape),
            "filters": list(self.filters),
            "blocks": self.blocks,
            "dense": self.dense,
            "kernel_size": self.kernel_size,
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package="kvae_resnet")
class ResNetDecoder(keras.layers.Layer):
    """Residual convolutional decoder: z -> an (H, W, filters[-1]) feature map.

    z is projected to an (H / 2**S, W / 2**S, filters[0]) map (S = len(filters)); each stage
    then doubles height and width with a stride-2 transposed convolution to that stage's
    channels and applies ``blocks`` residual blocks. The output keeps the image's height and
    width, so kvae's likelihood head maps each pixel's features to that pixel's parameters
    (for example ``likelihood="discretized-logistic"`` for 8-bit colour images).

    Args:
        data_shape: (height, width, channels) of the images to generate; height and width
            must be divisible by 2 ** len(filters).
        filters: channels of each stage, coarse to fine (default [64, 32]).
        blocks: residual blocks per stage (>= 0).
        kernel_size: size of every convolution.
        activation: Keras activation.
    """

    def __init__(
        self,
        data_shape,
        filters=(64, 32),
        blocks=1,
        kernel_size=3,
        activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = _filters(filters)
        factor = 2 ** len(self.filters)
        self.data_shape = _image_shape(data_shape, factor, "resnet decoder", self.filters)
        self.blocks = _int_at_least("blocks", blocks, 0)
        self.kernel_size = _int_at_least("kernel_size", kernel_size, 1)
        self.activation = _activation(activation)
        policy = self.dtype_policy
        h, w, _ = self.data_shape
        self.base_shape = (h // factor, w // factor, self.filters[0])
        self.project = keras.layers.Dense(
            self.base_shape[0] * self.base_shape[1] * self.base_shape[2],
            dtype=policy,
            name="project",
        )
        self.reshape = keras.layers.Reshape(self.base_shape, dtype=policy)
        self.stages = []
        for i, f in enumerate(self.filters):
            up = keras.layers.Conv2DTranspose(
                f, self.kernel_size, strides=2, padding="same", dtype=policy, name=f"up_{i}"
            )
            blocks_i = [
                ResidualBlock(f, self.kernel_size, activation, dtype=policy, name=f"block_{i}_{j}")
                for j in range(self.blocks)
            ]
            self.stages.append([up, *blocks_i])
        self.act = keras.layers.Activation(activation, dtype=policy)

    def call(self, z):
        h = self.reshape(self.project(z))
        for stage in self.stages:
            up, *blocks = stage
            h = up(self.act(h))
            for block in blocks:
                h = block(h)
        return self.act(h)

    def compute_output_shape(self, input_shape):
        h, w, _ = self.data_shape
        return (input_shape[0], h, w, self.filters[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "data_shape": list(self.data_shape),
            "filters": list(self.filters),
            "blocks": self.blocks,
            "kernel_size": self.kernel_size,
            "activation": self.activation,
        }
