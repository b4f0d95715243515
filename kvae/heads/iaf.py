"""Inverse autoregressive flow posterior (Kingma et al. 2016): ``posterior="iaf"``.

q(z|x) is a diagonal Gaussian z_0 = mu + sigma * eps followed by T IAF steps

    [m_t, s_t] = MADE_t(z_{t-1}, h),   g_t = sigmoid(s_t),   z_t = g_t * z_{t-1} + (1 - g_t) * m_t

whose autoregressive networks also read a context vector h computed from the encoder's
features; the order of the dimensions is reversed between steps. Each step's Jacobian is
triangular with diagonal g_t, so

    log q(z_T|x) = log N(z_0; mu, sigma^2) - sum_t sum_i log g_{t,i}.

The distribution is a TFP ``TransformedDistribution``. Scoring its own samples costs no
inverse: each step keeps the log-determinant it computed on the way forward (and TFP's
bijector cache maps z_T back to z_0), so ``q.log_prob(q.sample())`` runs each network once.
Scoring any other z inverts each step exactly by D fixed-point passes. TFP has no analytic
KL for a flow, so ``kl="auto"`` falls back to Monte Carlo.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae._checks import positive_int
from kvae.errors import ConfigError
from kvae.heads.made import MADE
from kvae.heads.posteriors import DiagonalGaussian

tfd = tfp.distributions
tfb = tfp.bijectors

# Initial bias of s, so each gate g = sigmoid(s) starts near 0.88 and a fresh flow is close
# to the identity (Kingma et al. 2016's "forget gate bias").
GATE_BIAS = 2.0


class IAFStep(tfb.Bijector):
    """One IAF step with a fixed context: z -> g * z + (1 - g) * m, [m, s] = made(z, h)."""

    def __init__(self, made, context, name="iaf_step"):
        self._made = made
        self._context = context
        self._fldj = {}
        super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False, name=name)

    def _gate(self, z):
        """[m, s] for z, whose batch axes broadcast against the context's (sample axes in
        front, or a mixture's component axis, as the VampPrior scores z)."""
        context = self._context
        if context is not None:
            lead = tf.broadcast_dynamic_shape(tf.shape(z)[:-1], tf.shape(context)[:-1])
            z = tf.broadcast_to(z, tf.concat([lead, tf.shape(z)[-1:]], axis=0))
            context = tf.broadcast_to(context, tf.concat([lead, tf.shape(context)[-1:]], axis=0))
        return self._made(z, context)

    def _forward(self, x):
        m, s = self._gate(x)
        gate = tf.sigmoid(s)
        # Kept for the log-density of this very sample: no second network pass.
        self._fldj[x.ref()] = tf.reduce_sum(tf.math.log_sigmoid(s), axis=-1)
        return gate * x + (1.0 - gate) * m

    def _inverse(self, y):
        # Output i depends on x_<i only: after k passes the first k entries are exact.
        if self._context is not None:
            lead = tf.broadcast_dynamic_shape(tf.shape(y)[:-1], tf.shape(self._context)[:-1])
            y = tf.broadcast_to(y, tf.concat([lead, tf.shape(y)[-1:]], axis=0))
        x = y
        for _ in range(self._made.dim):
            m, s = self._gate(x)
            gate = tf.sigmoid(s)
            x = (y - (1.0 - gate) * m) / gate
        return x

    def _forward_log_det_jacobian(self, x):
        cached = self._fldj.get(x.ref())
        if cached is not None:
            return cached
        _, s = self._gate(x)
        return tf.reduce_sum(tf.math.log_sigmoid(s), axis=-1)


class IAFDistribution(tfd.TransformedDistribution):
    """The flow's TransformedDistribution, whose ``mean()`` is the flow's image of the base
    mean, f(mu): the point kvae uses as the code of x (reconstructions, plots). E[z] itself
    has no closed form for a non-affine flow (TFP raises for it)."""

    def _mean(self, **kwargs):
        return self.bijector.forward(self.distribution.mean())


@keras.saving.register_keras_serializable(package="kvae")
class IAFPosterior(DiagonalGaussian):
    """q(z|x): a diagonal Gaussian then ``num_steps`` inverse autoregressive flow steps.

    Args:
        latent_dim: size of z.
        num_steps: T >= 0, the number of IAF steps (0: exactly ``"gaussian"``).
        hidden_units: sizes of each step's masked hidden layers.
        context_dim: size of the context h that the encoder's features give every step
            (0: no context).
        scale, min_scale: the base Gaussian's scale, as in ``"gaussian"``.
    """

    def __init__(self, latent_dim, num_steps=2, hidden_units=(64, 64), context_dim=16, **kwargs):
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ConfigError(
                f"Expected `num_steps` (T, the number of IAF steps) to be an integer >= 0. "
                f"Received: num_steps={num_steps!r}. Use 0 for a plain diagonal Gaussian."
            )
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ConfigError(
                f"Expected `context_dim` to be an integer >= 0. Received: context_dim={context_dim!r}"
            )
        if isinstance(hidden_units, int):
            hidden_units = (hidden_units,)
        self.num_steps = num_steps
        self.context_dim = context_dim
        self.hidden_units = tuple(positive_int("hidden_units", u) for u in hidden_units)
        super().__init__(latent_dim, **kwargs)
        self.steps = [
            MADE(
                self.latent_dim,
                self.hidden_units,
                context_dim=self.context_dim,
                num_outputs=2,
                output_bias=[0.0, GATE_BIAS],
                dtype=self.dtype_policy,
                name=f"step_{t}",
            )
            for t in range(self.num_steps)
        ]

    def params_size(self, latent_dim):
        return 2 * latent_dim + self.context_dim

    def build(self, input_shape):
        super().build(input_shape)
        for made in self.steps:
            made.build((None, self.latent_dim), (None, self.context_dim))
        self.built = True

    def split(self, params):
        """(loc, scale, context) from the head's parameters."""
        gaussian = params[..., : 2 * self.latent_dim]
        context = params[..., 2 * self.latent_dim :] if self.context_dim else None
        loc, scale = self.loc_and_scale(gaussian)
        return loc, scale, context

    def bijector(self, context):
        """The flow z_0 -> z_T for this context: steps with reversals between them."""
        reverse = tfb.Permute(permutation=list(range(self.latent_dim))[::-1])
        chain = []
        for t, made in enumerate(self.steps):
            if t:
                chain.append(reverse)
            chain.append(IAFStep(made, context, name=f"iaf_step_{t}"))
        return tfb.Chain(chain[::-1])  # Chain applies its last bijector first

    def distribution(self, params):
        loc, scale, context = self.split(params)
        base = tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)
        if not self.steps:
            return base
        return IAFDistribution(base, self.bijector(context), name="IAF")

    def get_config(self):
        return {
            **super().get_config(),
            "num_steps": self.num_steps,
            "hidden_units": list(self.hidden_units),
            "context_dim": self.context_dim,
        }
