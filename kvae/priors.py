"""Priors p(z): Keras layers (so they may own trainable variables) with a
``distribution()`` method returning a TFP distribution with event shape [latent_dim]."""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae._checks import positive_float, positive_int

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="kvae")
class Prior(keras.layers.Layer):
    """Base class. ``distribution()`` has batch shape [] and event shape [latent_dim].

    A prior that needs the model it belongs to (the VampPrior needs its encoder and
    posterior head) overrides :meth:`bind_model`: ``kvae.VAE`` calls it once while it is
    constructed, after every component exists and before the prior is built or its
    ``distribution()`` is first asked for, with the VAE itself. The prior may then create
    weights that depend on the model (``model.data_shape``, ``model.latent_dim``) and call
    ``model.encode(x)`` (q(z|x), a TFP distribution) inside ``distribution()``. Keep only a
    weak reference to the model (``weakref.ref``): a strong one would make the model a
    sub-layer of its own prior. A prior may also define ``init_from_data(x, seed=None)``,
    which ``kvae train`` calls with the training examples before training starts.
    """

    def __init__(self, latent_dim, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.latent_dim = positive_int("latent_dim", latent_dim, what="It is the size of z.")

    def build(self, input_shape=None):
        self.built = True

    def call(self, inputs=None):
        raise TypeError(
            f"{self.__class__.__name__} is not called on tensors: use .distribution() to get p(z)."
        )

    # True for a prior whose distribution() calls the model's encoder (kvae.testing then
    # checks that gradients reach the encoder).
    uses_encoder = False

    def bind_model(self, model):
        """Hook called once by ``kvae.VAE`` with itself; a plain prior ignores it."""

    def distribution(self):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="kvae")
class StandardNormal(Prior):
    """p(z) = N(0, I). Has no weights; the KL from a Gaussian posterior is analytic."""

    def distribution(self):
        zeros = tf.zeros([self.latent_dim], tf.float32)
        return tfd.MultivariateNormalDiag(loc=zeros, scale_diag=tf.ones_like(zeros))


@keras.saving.register_keras_serializable(package="kvae")
class MixtureOfGaussians(Prior):
    """A learnable mixture of diagonal Gaussians (as in the VampPrior / GMM-VAE literature).

    p(z) = sum_c pi_c N(z; mu_c, diag sigma_c^2), with logits, means and softplus scales
    trained with the model. The KL from q(z|x) has no closed form: kvae estimates it by
    Monte Carlo.

    Args:
        latent_dim: size of z.
        num_components: number of mixture components.
        init_spread: standard deviation of the random initial component means.
        seed: seed of the initial means (so a model rebuilds identically).
        trainable: set False for a fixed mixture.
    """

    def __init__(self, latent_dim, num_components=10, init_spread=1.0, seed=0, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.num_components = positive_int("num_components", num_components)
        self.init_spread = positive_float("init_spread", init_spread)
        self.seed = int(seed)
        c, d = self.num_components, self.latent_dim
        self.logits = self.add_weight(name="logits", shape=(c,), initializer="zeros")
        self.locs = self.add_weight(
            name="locs",
            shape=(c, d),
            initializer=keras.initializers.RandomNormal(stddev=self.init_spread, seed=self.seed),
        )
        self.raw_scales = self.add_weight(
            name="raw_scales",
            shape=(c, d),
            initializer=keras.initializers.Constant(0.5413248546129181),  # softplus^-1(1)
        )

    def distribution(self):
        scales = tf.math.softplus(tf.convert_to_tensor(self.raw_scales)) + 1e-4
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.convert_to_tensor(self.logits)),
            components_distribution=tfd.MultivariateNormalDiag(
                loc=tf.convert_to_tensor(self.locs), scale_diag=scales
            ),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_components": self.num_components,
            "init_spread": self.init_spread,
            "seed": self.seed,
        }
