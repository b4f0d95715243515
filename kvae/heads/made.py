"""Masked autoregressive networks (MADE, Germain et al. 2015) as Keras 3 layers.

TFP's ``tfb.AutoregressiveNetwork`` is a Keras 2 (``tf_keras``) layer and cannot live inside
a Keras 3 model; these are kvae's own. A :class:`MADE` maps ``z`` of shape [..., D] (and an
optional context vector h [..., C] that every hidden unit may read) to ``num_outputs``
tensors [..., D] each, where output i depends on z_1..z_{i-1} only (and on h): the
Jacobian of every output with respect to z is strictly lower-triangular.
"""

import keras
import numpy as np

from kvae._checks import positive_int


def degrees(dim, hidden_units):
    """Degrees (Germain et al. 2015) of the inputs and of each hidden layer.

    Input i has degree i + 1 (1..D); hidden units cycle through 0..D-1, a unit of degree k
    sees inputs 1..k (degree 0: the context only). Output i (degree i + 1) may read hidden
    units of degree < i + 1, so it depends on inputs 1..i, strictly before itself."""
    out = [np.arange(1, dim + 1)]
    for units in hidden_units:
        out.append(np.arange(units) % dim)
    return out


def masks(dim, hidden_units):
    """The [in, out] 0/1 masks of each dense layer, the output layer's last."""
    degs = degrees(dim, hidden_units)
    result = [(degs[0][:, None] <= degs[1][None, :])] if hidden_units else []
    for a, b in zip(degs[1:-1], degs[2:], strict=True):
        result.append(a[:, None] <= b[None, :])
    out_deg = np.arange(1, dim + 1)
    result.append(degs[-1][:, None] < out_deg[None, :])
    return [m.astype("float32") for m in result]


@keras.saving.register_keras_serializable(package="kvae")
class MaskedDense(keras.layers.Layer):
    """A dense layer whose kernel is multiplied by a fixed 0/1 ``mask`` of shape [in, units]."""

    def __init__(
        self, mask, kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs
    ):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, "float32")
        self.units = int(self.mask.shape[1])
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=self.mask.shape, initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer=self.bias_initializer
        )
        self.built = True

    def call(self, x):
        kernel = self.kernel * keras.ops.convert_to_tensor(self.mask, self.kernel.dtype)
        return keras.ops.matmul(x, kernel) + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "mask": self.mask.tolist(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="kvae")
class MADE(keras.layers.Layer):
    """z [..., D] (+ context h [..., C]) -> ``num_outputs`` autoregressive outputs [..., D].

    Args:
        dim: D.
        hidden_units: sizes of the masked hidden layers (ELU), e.g. ``(64, 64)``.
        context_dim: C (0: no context). The context enters every hidden layer through an
            unmasked dense map, so it may influence every output.
        num_outputs: how many [..., D] tensors to return (2 for IAF's m and s).
        output_bias: initial bias of each output, a list of ``num_outputs`` numbers (IAF
            starts its gate near 1 with a positive bias on s).
    """

    def __init__(
        self, dim, hidden_units=(64,), context_dim=0, num_outputs=2, output_bias=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.dim = positive_int("dim", dim)
        self.hidden_units = tuple(positive_int("hidden_units", u) for u in hidden_units)
        self.context_dim = int(context_dim)
        self.num_outputs = positive_int("num_outputs", num_outputs)
        self.output_bias = (
            [0.0] * self.num_outputs if output_bias is None else [float(b) for b in output_bias]
        )
        all_masks = masks(self.dim, self.hidden_units)
        self.hidden = [
            MaskedDense(m, dtype=self.dtype_policy, name=f"hidden_{i}")
            for i, m in enumerate(all_masks[:-1])
        ]
        self.context_maps = (
            [
                keras.layers.Dense(u, use_bias=False, dtype=self.dtype_policy, name=f"context_{i}")
                for i, u in enumerate(self.hidden_units)
            ]
            if self.context_dim
            else []
        )
        # The output masks repeated for each output, outputs laid side by side.
        out_mask = np.concatenate([all_masks[-1]] * self.num_outputs, axis=1)
        bias = np.repeat(np.asarray(self.output_bias, "float32"), self.dim)
        self.out = MaskedDense(
            out_mask,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=keras.initializers.Constant(bias.tolist()),
            dtype=self.dtype_policy,
            name="outputs",
        )

    def build(self, z_shape, context_shape=None):
        width = self.dim
        for i, layer in enumerate(self.hidden):
            layer.build((None, width))
            if self.context_maps:
                self.context_maps[i].build((None, self.context_dim))
            width = layer.units
        self.out.build((None, width))
        self.built = True

    def call(self, z, context=None):
        h = z
        for i, layer in enumerate(self.hidden):
            h = layer(h)
            if self.context_maps:
                h = h + self.context_maps[i](context)
            h = keras.activations.elu(h)
        out = self.out(h)
        return keras.ops.split(out, self.num_outputs, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "hidden_units": list(self.hidden_units),
            "context_dim": self.context_dim,
            "num_outputs": self.num_outputs,
            "output_bias": self.output_bias,
        }
