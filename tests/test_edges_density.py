"""kvae.testing checks that a posterior's and a prior's density integrates to one
(issue 22): a plugin flow with a flipped log-determinant fails, proper densities of any
shape pass."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import testing
from kvae.heads.posteriors import PosteriorHead
from kvae.priors import Prior

tfd = tfp.distributions
tfb = tfp.bijectors


class _ScaleShift(tfb.Bijector):
    """z = loc + scale * eps, written out as a plugin author would; ``flip`` plants the
    bug: the forward log|det J| with the wrong sign, so log_prob adds sum log scale."""

    def __init__(self, loc, scale, flip):
        self._loc, self._scale, self._flip = loc, scale, flip
        super().__init__(forward_min_event_ndims=1, is_constant_jacobian=True, name="scale_shift")

    def _forward(self, x):
        return self._loc + self._scale * x

    def _inverse(self, y):
        return (y - self._loc) / self._scale

    def _forward_log_det_jacobian(self, x):
        log_det = tf.reduce_sum(tf.math.log(self._scale), axis=-1)
        return -log_det if self._flip else log_det


@keras.saving.register_keras_serializable(package="kvae_edges_test")
class ScaleFlowPosterior(PosteriorHead):
    """A one-layer affine flow q(z|x) on a standard normal, the plugin under test."""

    def __init__(self, latent_dim, flip=False, **kwargs):
        self.flip = bool(flip)
        super().__init__(latent_dim, **kwargs)

    @staticmethod
    def params_size(latent_dim):
        return 2 * latent_dim

    def distribution(self, params):
        loc, raw = tf.split(params, 2, axis=-1)
        base = tfd.MultivariateNormalDiag(tf.zeros_like(loc), tf.ones_like(loc))
        # Scales from 0.2 to 2.2: the flipped sign is off by prod(scale^2), never ~1.
        scale = 0.2 + 2.0 * tf.sigmoid(raw)
        return tfd.TransformedDistribution(base, _ScaleShift(loc, scale, self.flip))

    def get_config(self):
        return {**super().get_config(), "flip": self.flip}


@keras.saving.register_keras_serializable(package="kvae_edges_test")
class FlippedScaleFlowPosterior(ScaleFlowPosterior):
    def __init__(self, latent_dim, flip=True, **kwargs):
        super().__init__(latent_dim, flip=flip, **kwargs)


def test_a_correct_plugin_flow_posterior_passes():
    testing.check_posterior(ScaleFlowPosterior, latent_dim=3)


def test_a_plugin_flow_with_a_flipped_log_det_sign_fails_with_a_clear_message():
    with pytest.raises(
        AssertionError,
        match=r"posterior 'FlippedScaleFlowPosterior': q\(z\|x\)'s density must integrate to 1; "
        r"importance sampling found .* \+- .*log\|det J\|",
    ):
        testing.check_posterior(FlippedScaleFlowPosterior, latent_dim=3)


@keras.saving.register_keras_serializable(package="kvae_edges_test")
class TwoBumpLaplacePrior(Prior):
    """A proper prior of a shape no Gaussian has (the proposal's): two narrow Laplace bumps
    far apart along the first axis, 70% of the mass in one, Laplace tails along the other."""

    def distribution(self):
        d = self.latent_dim
        loc = np.zeros((2, d), np.float32)
        loc[:, 0] = [-3.0, 3.0]
        scale = np.full((2, d), 0.5, np.float32)
        scale[:, 0] = 0.3
        return tfd.MixtureSameFamily(
            tfd.Categorical(probs=[0.3, 0.7]),
            tfd.Independent(tfd.Laplace(loc, scale), reinterpreted_batch_ndims=1),
        )


def test_a_proper_prior_of_another_shape_passes():
    testing.check_prior(TwoBumpLaplacePrior, latent_dim=2)


class _SamplesDisagree:
    """A normalised density N(0, 1.5^2 I) whose sampler draws N(0, I): its density is
    proper, so the normalisation check (which trusts samples only to place its proposal)
    accepts it."""

    def __init__(self, d):
        self._p = tfd.MultivariateNormalDiag(tf.zeros(d), 1.5 * tf.ones(d))
        self._s = tfd.MultivariateNormalDiag(tf.zeros(d), tf.ones(d))

    def sample(self, n, seed):
        return self._s.sample(n, seed=seed)

    def log_prob(self, z):
        return self._p.log_prob(z)


def test_a_proper_density_whose_samples_have_another_shape_integrates_to_one():
    from kvae.testing import _check_integrates_to_one

    _check_integrates_to_one("prior 'x'", _SamplesDisagree(2), "p(z)")
    # ... and the same density scaled by 1.1 (log_prob + log 1.1) is refused: 10% is
    # many standard errors.
    wrong = _SamplesDisagree(2)
    wrong.log_prob = lambda z: _SamplesDisagree(2)._p.log_prob(z) + np.log(1.1)
    with pytest.raises(
        AssertionError, match=r"must integrate to 1; importance sampling found 1\.1"
    ):
        _check_integrates_to_one("prior 'x'", wrong, "p(z)")
