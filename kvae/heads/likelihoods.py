"""Likelihood heads p(x|z): decoder features -> parameters -> a TFP distribution whose
event shape is one data point (for images, (H, W, C)).

Any decoder composes with any head: a head maps features onto the data's shape itself.
If the features already have the data's spatial layout (a convolutional decoder's
(H, W, F) map for (H, W, C) data) the head is a per-position projection F -> C * k;
otherwise the features are flattened and projected densely to prod(data_shape) * k.
``k = params_per_dim`` is how many numbers the distribution needs per data dimension.
"""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae._checks import choice, positive_float, positive_int, shape_tuple
from kvae.errors import ConfigError, DataError

tfd = tfp.distributions
tfb = tfp.bijectors


def _inverse_softplus(y):
    return float(y + math.log(-math.expm1(-y)))


@keras.saving.register_keras_serializable(package="kvae")
class LikelihoodHead(keras.layers.Layer):
    """Base class of likelihood heads.

    ``call(features)`` returns parameters of shape ``(batch, *data_shape, params_per_dim)``;
    ``distribution(params)`` builds p(x|z) with ``reinterpreted_batch_ndims = len(data_shape)``,
    so ``log_prob`` gives one number (nats) per example. ``prepare(x)`` maps data to the
    distribution's support (identity except for discretised heads), ``mean(params)`` gives the
    expected data point and ``to_data(sample)`` maps samples back to the data's units.
    """

    params_per_dim = 1
    data_range = None  # (low, high) that data must lie in, or None for any finite value

    def support(self):
        """For a discrete head, the values (in the data's units) that one data dimension can
        take, as a 1-D array: kvae.testing checks that their probabilities sum to 1. None
        for a density (its integral over ``data_range``, or the real line, is checked)."""
        return None

    def __init__(self, data_shape=None, *, event_shape=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if event_shape is not None:
            warnings.warn(
                f"{type(self).__name__}(event_shape=...) is deprecated: pass data_shape=... "
                "(the shape of one example, the name kvae.VAE and the networks use).",
                DeprecationWarning,
                stacklevel=2,
            )
            data_shape = event_shape if data_shape is None else data_shape
        self.data_shape = shape_tuple("data_shape", data_shape)
        self.projection = None
        self._pointwise = None

    # ----- parameters ---------------------------------------------------------------
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        spatial = tuple(self.data_shape[:-1])
        self._pointwise = len(input_shape) - 1 == len(self.data_shape) and (
            tuple(input_shape[1:-1]) == spatial
        )
        if self._pointwise:
            units = self.data_shape[-1] * self.params_per_dim
            self.projection = keras.layers.Dense(units, dtype=self.dtype_policy, name="params")
            self.projection.build(input_shape)
        else:
            units = int(np.prod(self.data_shape)) * self.params_per_dim
            self.projection = keras.layers.Dense(units, dtype=self.dtype_policy, name="params")
            self.projection.build((input_shape[0], int(np.prod(input_shape[1:]))))
        self.build_extra()
        self.built = True

    def build_extra(self):
        """Create weights that do not depend on z (a learned scale, say)."""

    def call(self, features):
        if not self._pointwise and len(features.shape) > 2:
            features = keras.ops.reshape(features, (-1, int(np.prod(features.shape[1:]))))
        params = self.projection(features)
        return keras.ops.reshape(params, (-1, *self.data_shape, self.params_per_dim))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.data_shape, self.params_per_dim)

    # ----- distribution -------------------------------------------------------------
    def distribution(self, params):
        raise NotImplementedError

    def _independent(self, dist):
        return _Independent(dist, reinterpreted_batch_ndims=len(self.data_shape))

    def prepare(self, x):
        """Data -> the distribution's support. Identity unless the head is discrete."""
        return x

    def to_data(self, sample):
        """A sample of ``distribution`` -> the data's units."""
        return sample

    def mean(self, params):
        """The expected data point under p(x|z), in the data's units."""
        return self.distribution(params).mean()

    # ----- data checks ----------------------------------------------------------------
    def check_data(self, x, name="x"):
        """Raise DataError if ``x`` (a numpy array of examples) cannot be scored."""
        if self.data_range is None:
            return
        low, high = self.data_range
        xmin, xmax = float(np.min(x)), float(np.max(x))
        if xmin < low or xmax > high:
            raise DataError(
                f"Expected {name} values in [{low}, {high}] for the {self.__class__.__name__} "
                f"likelihood. Received: values from {xmin:g} to {xmax:g}. Rescale the data "
                f"(for 8-bit images, divide by 256) or choose a likelihood for real-valued "
                f"data such as likelihood='gaussian'."
            )

    @property
    def event_shape(self):
        """The old name of :attr:`data_shape` (p(x|z)'s event shape is one example's shape)."""
        return self.data_shape

    def get_config(self):
        return {**super().get_config(), "data_shape": list(self.data_shape)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "event_shape" in config:  # saved before data_shape was its name
            config["data_shape"] = config.pop("event_shape")
        return cls(**config)


def _flatten_last(t, ndims):
    """``t`` with its last ``ndims`` dimensions made one (a bitcast under XLA)."""
    return tf.reshape(t, tf.concat([tf.shape(t)[:-ndims], [-1]], axis=0))


class _Independent(tfd.Independent):
    """``tfd.Independent`` whose ``log_prob`` computes the per-dimension terms on the data
    dimensions flattened into one, then sums along it.

    XLA on CPU vectorises an elementwise loop along the innermost dimension; for images
    that is the channel axis, of size 1, so the per-pixel terms of an [S, B, 28, 28, 1]
    tensor ran about 25% slower than on [S, B, 784] (IWAE and quadrature on the 784-512-2
    MNIST model, scripts/benchmark_loglik.py). The flat copy is made with the per-dimension
    distribution's own ``copy``, so its ``log_prob`` (a subclass's too) is the one used; a
    parameter or value whose trailing shape is not the data's (a broadcast one) takes
    TFP's own path. The value is the same sum.
    """

    def _log_prob(self, x, **kwargs):
        ndims = tf.get_static_value(self.reinterpreted_batch_ndims)
        x = tf.convert_to_tensor(x)
        event = tuple(self.event_shape)
        flat = None
        if ndims and not kwargs and None not in event and _ends_with(x, event):
            flat = _flat_copy(self.distribution, event)
        if flat is None:
            return super()._log_prob(x, **kwargs)
        return tf.reduce_sum(flat.log_prob(_flatten_last(x, len(event))), axis=-1)


def _ends_with(t, event):
    rank = t.shape.rank
    return rank is not None and rank >= len(event) and tuple(t.shape[-len(event) :]) == event


def _flat_copy(dist, event):
    """``dist`` with every tensor parameter's trailing ``event`` dimensions made one (scalar
    parameters kept), or None when a parameter has another trailing shape."""
    override = {}
    for key, param in dist.parameters.items():
        if not (tf.is_tensor(param) or isinstance(param, (tf.Variable, np.ndarray))):
            continue
        value = tf.convert_to_tensor(param)
        if value.shape.rank == 0:
            continue
        if not _ends_with(value, event):
            return None
        override[key] = _flatten_last(value, len(event))
    return dist.copy(**override) if override else None


class _LogitBernoulli(tfd.Bernoulli):
    """``tfd.Bernoulli`` on logits whose ``log_prob`` is the fused ``x * s - softplus(s)``.

    TFP computes ``(1 - x) * -softplus(s) + x * -softplus(-s)`` with two softplus and two
    ``multiply_no_nan``; for finite logits and x in [0, 1] both are the same function, and
    this one costs one transcendental per pixel instead of two (measured: the Bernoulli term
    was the largest non-GEMM cost of the Keras-example-sized training step on CPU).
    """

    def _log_prob(self, event):
        logits = tf.convert_to_tensor(self._logits)
        event = tf.cast(event, logits.dtype)
        return event * logits - tf.math.softplus(logits)


@keras.saving.register_keras_serializable(package="kvae")
class Bernoulli(LikelihoodHead):
    """Independent Bernoulli per dimension, parameterised by logits.

    Scores data in [0, 1]; for non-binary (grey-level) data ``log_prob`` is the negative
    binary cross-entropy with continuous targets, as in the Keras VAE example.
    """

    data_range = (0.0, 1.0)

    def support(self):
        return np.array([0.0, 1.0], np.float32)

    def distribution(self, params):
        return self._independent(_LogitBernoulli(logits=params[..., 0], dtype=params.dtype))

    def mean(self, params):
        return tf.sigmoid(params[..., 0])


@keras.saving.register_keras_serializable(package="kvae")
class ContinuousBernoulli(LikelihoodHead):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1]."""

    data_range = (0.0, 1.0)

    def distribution(self, params):
        return self._independent(tfd.ContinuousBernoulli(logits=params[..., 0]))


@keras.saving.register_keras_serializable(package="kvae")
class Gaussian(LikelihoodHead):
    """Independent Gaussian N(mu(z), sigma^2) per dimension.

    Args:
        data_shape: shape of one data point.
        scale: ``"fixed"`` (sigma = ``init_scale`` forever), ``"scalar"`` (one learned sigma
            shared by all dimensions) or ``"per_dim"`` (a learned sigma per data dimension);
            learned scales are softplus-parameterised plus ``min_scale``, so always > 0.
        init_scale: the fixed or initial sigma.
        min_scale: floor of a learned sigma.

    With ``scale="scalar"`` and a linear decoder this is probabilistic PCA.
    """

    def __init__(self, data_shape=None, scale="fixed", init_scale=1.0, min_scale=1e-4, **kwargs):
        super().__init__(data_shape, **kwargs)
        self.scale = choice("scale", scale, {"fixed", "scalar", "per_dim"})
        self.init_scale = positive_float("init_scale", init_scale)
        self.min_scale = positive_float("min_scale", min_scale)
        self.raw_scale = None

    def build_extra(self):
        if self.scale == "fixed":
            return
        shape = () if self.scale == "scalar" else self.data_shape
        init = _inverse_softplus(max(self.init_scale - self.min_scale, 1e-6))
        self.raw_scale = self.add_weight(
            name="raw_scale",
            shape=shape,
            initializer=keras.initializers.Constant(init),
            trainable=True,
        )

    def sigma(self):
        if self.raw_scale is None:
            return tf.constant(self.init_scale, tf.float32)
        return tf.math.softplus(tf.convert_to_tensor(self.raw_scale)) + self.min_scale

    def distribution(self, params):
        loc = params[..., 0]
        scale = tf.broadcast_to(self.sigma(), tf.shape(loc))
        return self._independent(tfd.Normal(loc=loc, scale=scale))

    def mean(self, params):
        return params[..., 0]

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "init_scale": self.init_scale,
            "min_scale": self.min_scale,
        }


@keras.saving.register_keras_serializable(package="kvae")
class DiscretizedLogistic(LikelihoodHead):
    """Discretised logistic for quantised data (8-bit images), as in PixelCNN++ / IAF.

    Data x in [0, 1] is read as bin ``k = floor(x * num_bins)`` (clipped to the last bin),
    which is exact both for uint8/256 (kvae's MNIST) and for uint8/255 conventions. The
    distribution is over bin indices 0..num_bins-1: a logistic in bin units, shifted by half a
    bin and quantised (``QuantizedDistribution``), so ``log_prob`` is a true log-probability
    of the discrete data (nats; divide by ``D log 2`` for bits per dimension).
    Samples map back to the data's units by ``k / num_bins``.

    In float32 ``k / num_bins`` is rounded, and ``floor`` of it times ``num_bins`` fell one
    bin short for some k when ``num_bins`` is not a power of two (2 of 100 bins, 5 of 1,000),
    so :meth:`prepare` takes the largest k whose float32 value ``k / num_bins`` is at most x:
    ``prepare(to_data(k)) == k`` for every bin and every ``num_bins`` up to
    ``MAX_BINS`` = 2**16 (16-bit data; beyond it float32 cannot keep the bins apart).
    """

    MAX_BINS = 2**16

    params_per_dim = 2
    data_range = (0.0, 1.0)

    def __init__(self, data_shape=None, num_bins=256, **kwargs):
        super().__init__(data_shape, **kwargs)
        self.num_bins = positive_int("num_bins", num_bins)
        if self.num_bins < 2:
            raise ConfigError(f"Expected num_bins >= 2. Received: num_bins={num_bins}")
        if self.num_bins > self.MAX_BINS:
            raise ConfigError(
                f"Expected num_bins <= {self.MAX_BINS} (16-bit data): float32 data in [0, 1] "
                f"cannot tell more bins apart. Received: num_bins={num_bins}. For finer data "
                "use a density, such as likelihood='gaussian'."
            )

    def _loc_scale(self, params):
        n = float(self.num_bins)
        loc = n * tf.sigmoid(params[..., 0]) - 0.5
        scale = tf.math.softplus(params[..., 1]) * (n / 32.0) + 1e-2
        return loc, scale

    def distribution(self, params):
        loc, scale = self._loc_scale(params)
        logistic = tfd.TransformedDistribution(
            tfd.Logistic(loc=loc, scale=scale), bijector=tfb.Shift(tf.constant(-0.5))
        )
        quantized = tfd.QuantizedDistribution(logistic, low=0.0, high=self.num_bins - 1.0)
        return self._independent(quantized)

    def support(self):
        return np.asarray(_bins_to_data(np.arange(self.num_bins, dtype=np.float32), self.num_bins))

    def prepare(self, x):
        return _data_to_bins(x, self.num_bins)

    def to_data(self, sample):
        return _bins_to_data(sample, self.num_bins)

    def mean(self, params):
        loc, _ = self._loc_scale(params)
        return _bins_to_data(
            tf.clip_by_value(tf.round(loc), 0.0, self.num_bins - 1.0), self.num_bins
        )

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}


def _bins_to_data(k, num_bins):
    """Bin indices ``k`` (floats) -> the data's units, ``k / num_bins`` (``num_bins`` may be a
    tensor broadcasting with ``k``)."""
    k = tf.convert_to_tensor(k)
    return k / tf.cast(num_bins, k.dtype)


def _data_to_bins(x, num_bins):
    """Data in [0, 1] -> bin indices: the largest k in ``0 .. num_bins - 1`` with
    ``_bins_to_data(k) <= x``, so that ``_data_to_bins(_bins_to_data(k)) == k`` exactly.

    ``floor(x * num_bins)`` is within one bin of it (float32 rounding of ``k / num_bins``
    and of the product); the two comparisons with :func:`_bins_to_data`'s own values move
    it onto the bin. For 8-bit data read as j / 255 with 256 bins the answer is still j:
    j / 255 lies at least 1/65280 below (j + 1) / 256, far beyond float32 rounding."""
    x = tf.convert_to_tensor(x)
    n = tf.cast(num_bins, x.dtype)
    k = tf.clip_by_value(tf.floor(x * n), 0.0, n - 1.0)
    k = k + tf.cast((k < n - 1.0) & (_bins_to_data(k + 1.0, n) <= x), x.dtype)
    k = k - tf.cast((k > 0.0) & (_bins_to_data(k, n) > x), x.dtype)
    return k
