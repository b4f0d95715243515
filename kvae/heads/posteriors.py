"""Posterior heads q(z|x): features -> parameters -> a TFP distribution over R^latent_dim."""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae._checks import choice, positive_float, positive_int

tfd = tfp.distributions
tfb = tfp.bijectors

# Log-variances are clipped to this range by the "exp" parameterisation: exp(20) is far
# beyond any useful variance and exp(-20) far below float32 resolution of a unit-scale z.
_LOG_VAR_CLIP = 20.0


@keras.saving.register_keras_serializable(package="kvae")
class PosteriorHead(keras.layers.Layer):
    """Base class: ``call(features) -> params``, ``distribution(params) -> q(z|x)``.

    Subclasses set ``params_size(latent_dim)`` and implement ``distribution``. The result
    has batch shape ``params.shape[:-1]`` and event shape ``[latent_dim]``.
    """

    def __init__(self, latent_dim, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.latent_dim = positive_int("latent_dim", latent_dim, what="It is the size of z.")
        self.projection = keras.layers.Dense(
            self.params_size(self.latent_dim), dtype=self.dtype_policy, name="params"
        )

    @staticmethod
    def params_size(latent_dim):
        raise NotImplementedError

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.built = True

    def call(self, features):
        if len(features.shape) > 2:
            features = keras.ops.reshape(features, (-1, int(_prod(features.shape[1:]))))
        return self.projection(features)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.params_size(self.latent_dim))

    def distribution(self, params):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


def _prod(dims):
    out = 1
    for d in dims:
        out *= int(d)
    return out


@keras.saving.register_keras_serializable(package="kvae")
class DiagonalGaussian(PosteriorHead):
    """Mean-field Gaussian q(z|x) = N(mu, diag sigma^2) (``MultivariateNormalDiag``).

    Args:
        latent_dim: size of z.
        scale: ``"softplus"`` (sigma = softplus(raw) + min_scale, the TFP layers' choice) or
            ``"exp"`` (raw is a log-variance, clipped to [-20, 20], as in the Keras example).
        min_scale: floor added to the softplus scale, keeps sigma > 0 in float32.
    """

    def __init__(self, latent_dim, scale="softplus", min_scale=1e-5, **kwargs):
        self.scale = choice("scale", scale, {"softplus", "exp"})
        self.min_scale = positive_float("min_scale", min_scale)
        super().__init__(latent_dim, **kwargs)

    @staticmethod
    def params_size(latent_dim):
        return 2 * latent_dim

    def loc_and_scale(self, params):
        loc, raw = tf.split(params, 2, axis=-1)
        if self.scale == "softplus":
            scale = tf.math.softplus(raw) + self.min_scale
        else:
            scale = tf.exp(0.5 * tf.clip_by_value(raw, -_LOG_VAR_CLIP, _LOG_VAR_CLIP))
        return loc, scale

    def distribution(self, params):
        loc, scale = self.loc_and_scale(params)
        return tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "min_scale": self.min_scale}


@keras.saving.register_keras_serializable(package="kvae")
class FullCovarianceGaussian(PosteriorHead):
    """Full-covariance Gaussian q(z|x) = N(mu, L L^T) (``MultivariateNormalTriL``).

    The lower-triangular L is filled from ``latent_dim * (latent_dim + 1) / 2`` parameters;
    its diagonal goes through softplus (plus ``min_scale``) so L is a valid Cholesky factor.
    """

    def __init__(self, latent_dim, min_scale=1e-5, **kwargs):
        self.min_scale = positive_float("min_scale", min_scale)
        super().__init__(latent_dim, **kwargs)
        self._fill = tfb.FillScaleTriL(
            diag_bijector=tfb.Softplus(), diag_shift=tf.constant(self.min_scale, tf.float32)
        )

    @staticmethod
    def params_size(latent_dim):
        return latent_dim + latent_dim * (latent_dim + 1) // 2

    def distribution(self, params):
        loc = params[..., : self.latent_dim]
        scale_tril = self._fill.forward(params[..., self.latent_dim :])
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril)

    def get_config(self):
        return {**super().get_config(), "min_scale": self.min_scale}
