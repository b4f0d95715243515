"""A VAE with two stochastic layers (Burda et al. 2016's 2-layer architecture) from two
ordinary components: ``posterior="hierarchical"`` and ``prior="hierarchical"``.

The code is z = [z1, z2] (``latent_dim = z1_dim + z2_dim``) and

    q(z|x) = q(z1|x) q(z2|z1)          (posterior="hierarchical")
    p(z)   = p(z2) p(z1|z2)            (prior="hierarchical")

with diagonal Gaussians whose parameters come from small tanh MLPs (q(z2|z1) inside the
posterior head, p(z1|z2) inside the prior). Both are TFP ``TransformedDistribution`` s of a
standard normal by a block-triangular map, so log q(z|x) and log p(z) are exact (one pass:
z1 then z2, or z2 then z1) and samples are reparameterised. kvae's ELBO is then exactly the
two-layer bound E_q[log p(x|z) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)] and
the IWAE weights are the joint ones; the KL is Monte Carlo (``kl="auto"``).

One difference from Burda et al.: the decoder reads the whole code [z1, z2], so the model
is p(x|z1, z2) p(z1|z2) p(z2); it contains Burda's p(x|z1) (a decoder that ignores z2).
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae._checks import positive_int
from kvae.errors import ConfigError
from kvae.heads.posteriors import PosteriorHead
from kvae.priors import Prior

tfd = tfp.distributions
tfb = tfp.bijectors

_MIN_SCALE = 1e-4


def _sizes(name, z1_dim, z2_dim, latent_dim):
    z1_dim = positive_int("z1_dim", z1_dim)
    z2_dim = positive_int("z2_dim", z2_dim)
    if z1_dim + z2_dim != latent_dim:
        raise ConfigError(
            f"Expected the {name}'s layers to chain into the code: z1_dim + z2_dim == latent_dim. "
            f"Received: z1_dim={z1_dim}, z2_dim={z2_dim}, latent_dim={latent_dim}. Set "
            f"latent_dim={z1_dim + z2_dim} or change z1_dim / z2_dim."
        )
    return z1_dim, z2_dim


def _layers(name, z1_dim, z2_dim, latent_dim, hidden):
    """The checked (z1_dim, z2_dim, hidden) of a hierarchical posterior or prior."""
    if z1_dim is None or z2_dim is None:
        raise ConfigError(
            "Expected z1_dim and z2_dim (the two layers' sizes, adding up to latent_dim) "
            f"for {name}='hierarchical'. Received: z1_dim={z1_dim}, z2_dim={z2_dim}."
        )
    z1_dim, z2_dim = _sizes(name, z1_dim, z2_dim, latent_dim)
    return z1_dim, z2_dim, tuple(positive_int("hidden", h) for h in hidden)


def _mlp(hidden, out, name, dtype):
    layers = [keras.layers.Dense(h, activation="tanh", dtype=dtype) for h in hidden]
    return keras.Sequential([*layers, keras.layers.Dense(out, dtype=dtype)], name=name)


def _gaussian(params):
    loc, raw = tf.split(params, 2, axis=-1)
    return loc, tf.math.softplus(raw) + _MIN_SCALE


class _Chain(tfb.Bijector):
    """(e_a, e_b) -> (a, b): a = loc_a + scale_a * e_a, b = m(a) + s(a) * e_b, where the
    first block is ``first`` dims of the code placed at ``first_slice``. Inverse in one pass."""

    def __init__(self, loc, scale, net, sizes, a_first, name="hierarchical_chain"):
        self._loc, self._scale, self._net = loc, scale, net
        self._sizes, self._a_first = sizes, a_first
        super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False, name=name)

    def _split(self, v):
        first, second = tf.split(v, self._sizes, axis=-1)
        return (first, second) if self._a_first else (second, first)

    def _join(self, a, b):
        return tf.concat([a, b] if self._a_first else [b, a], axis=-1)

    def _inner(self, a):
        lead = tf.shape(a)[:-1]
        flat = tf.reshape(a, [-1, a.shape[-1]])
        params = self._net(flat)
        params = tf.reshape(params, tf.concat([lead, tf.shape(params)[-1:]], axis=0))
        return _gaussian(params)

    def _forward(self, x):
        e_a, e_b = self._split(x)
        a = self._loc + self._scale * e_a
        m, s = self._inner(a)
        return self._join(a, m + s * e_b)

    def _inverse(self, y):
        a, b = self._split(y)
        m, s = self._inner(a)
        return self._join((a - self._loc) / self._scale, (b - m) / s)

    def log_prob_groups(self, y):
        """(log density of the first block, of the second given the first), in z's order
        (for the posterior (log q(z1|x), log q(z2|z1)), for the prior (log p(z1|z2),
        log p(z2))), for a standard normal base: they sum to ``log_prob(y)``."""
        a, b = self._split(y)
        m, s = self._inner(a)
        scale = tf.broadcast_to(self._scale, tf.shape(a))
        unit = tfd.Normal(tf.constant(0.0, a.dtype), tf.constant(1.0, a.dtype))
        log_a = tf.reduce_sum(unit.log_prob((a - self._loc) / scale) - tf.math.log(scale), -1)
        log_b = tf.reduce_sum(unit.log_prob((b - m) / s) - tf.math.log(s), -1)
        return (log_a, log_b) if self._a_first else (log_b, log_a)

    def _inverse_log_det_jacobian(self, y):
        a, _ = self._split(y)
        _, s = self._inner(a)
        scale = tf.broadcast_to(self._scale, tf.shape(a))
        return -tf.reduce_sum(tf.math.log(scale), -1) - tf.reduce_sum(tf.math.log(s), -1)


class _HierarchicalDistribution(tfd.TransformedDistribution):
    """Its ``mean()`` is the code of zero noise: (mu, m(mu)), the chain's mode-like point."""

    def _mean(self, **kwargs):
        return self.bijector.forward(tf.zeros_like(self.distribution.mean()))

    @property
    def latent_groups(self):
        """The sizes of the two layers in z's order, (z1_dim, z2_dim): the groups
        ``free_bits_mode="group"`` floors (``kvae.objectives.kl_per_group``)."""
        return tuple(self.bijector._sizes)

    def log_prob_groups(self, z):
        """The chain rule's two factors of ``log_prob(z)``, one per group of
        :attr:`latent_groups`."""
        return self.bijector.log_prob_groups(z)


@keras.saving.register_keras_serializable(package="kvae")
class HierarchicalPosterior(PosteriorHead):
    """q(z1, z2 | x) = q(z1|x) q(z2|z1), z = [z1, z2].

    Args:
        latent_dim: z1_dim + z2_dim.
        z1_dim, z2_dim: sizes of the two stochastic layers (Burda et al.: 100 and 50).
        hidden: tanh layers of q(z2|z1)'s network (Burda et al.: [100, 100]).
    """

    def __init__(self, latent_dim, z1_dim=None, z2_dim=None, hidden=(100, 100), **kwargs):
        self.z1_dim, self.z2_dim, self.hidden = _layers(
            "posterior", z1_dim, z2_dim, latent_dim, hidden
        )
        super().__init__(latent_dim, **kwargs)
        self.inner = _mlp(self.hidden, 2 * self.z2_dim, "q_z2_given_z1", self.dtype_policy)

    def params_size(self, latent_dim):
        return 2 * self.z1_dim

    def build(self, input_shape):
        super().build(input_shape)
        self.inner.build((None, self.z1_dim))
        self.built = True

    def distribution(self, params):
        loc, scale = _gaussian(params)
        zeros = tf.zeros(tf.concat([tf.shape(loc)[:-1], [self.latent_dim]], axis=0))
        base = tfd.MultivariateNormalDiag(zeros, tf.ones_like(zeros))
        chain = _Chain(loc, scale, self.inner, [self.z1_dim, self.z2_dim], a_first=True)
        return _HierarchicalDistribution(base, chain, name="HierarchicalPosterior")

    def get_config(self):
        return {
            **super().get_config(),
            "z1_dim": self.z1_dim,
            "z2_dim": self.z2_dim,
            "hidden": list(self.hidden),
        }


@keras.saving.register_keras_serializable(package="kvae")
class HierarchicalPrior(Prior):
    """p(z1, z2) = p(z2) p(z1|z2), p(z2) = N(0, I), z = [z1, z2].

    Args:
        latent_dim: z1_dim + z2_dim.
        z1_dim, z2_dim: sizes of the two stochastic layers (Burda et al.: 100 and 50).
        hidden: tanh layers of p(z1|z2)'s network (Burda et al.: [100, 100]).
    """

    def __init__(self, latent_dim, z1_dim=None, z2_dim=None, hidden=(100, 100), **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.z1_dim, self.z2_dim, self.hidden = _layers(
            "prior", z1_dim, z2_dim, self.latent_dim, hidden
        )
        self.inner = _mlp(self.hidden, 2 * self.z1_dim, "p_z1_given_z2", self.dtype_policy)
        self.inner.build((None, self.z2_dim))

    def bind_model(self, model):
        head = model.posterior_head
        sizes = (getattr(head, "z1_dim", None), getattr(head, "z2_dim", None))
        if sizes[0] is not None and sizes != (self.z1_dim, self.z2_dim):
            raise ConfigError(
                "Expected the hierarchical posterior and prior to split z the same way. "
                f"Received: posterior (z1_dim, z2_dim)={sizes}, prior "
                f"{(self.z1_dim, self.z2_dim)}."
            )

    def distribution(self):
        zeros = tf.zeros([self.latent_dim])
        base = tfd.MultivariateNormalDiag(zeros, tf.ones_like(zeros))
        # z2 = e2 (the first block built), then z1 = m(z2) + s(z2) e1.
        chain = _Chain(
            tf.zeros([self.z2_dim]),
            tf.ones([self.z2_dim]),
            self.inner,
            [self.z1_dim, self.z2_dim],
            a_first=False,
        )
        return _HierarchicalDistribution(base, chain, name="HierarchicalPrior")

    def get_config(self):
        return {
            **super().get_config(),
            "z1_dim": self.z1_dim,
            "z2_dim": self.z2_dim,
            "hidden": list(self.hidden),
        }
