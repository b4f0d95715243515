"""Every built-in component passes kvae.testing's contract checks, as a plugin's would."""

import pytest

from kvae import registry, testing


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_encoders(name):
    testing.check_encoder(name, data_shape=(8, 8, 1), posteriors=("gaussian", "full-gaussian"))


@pytest.mark.parametrize(
    "name, likelihoods",
    [
        ("mlp", ("bernoulli", "continuous-bernoulli", "gaussian", "discretized-logistic")),
        # The heads read flat and spatial features alike (test_likelihoods_flat_and_spatial_
        # features); the conv decoder trains with one bounded and one real-valued head.
        ("conv", ("bernoulli", "gaussian")),
    ],
)
def test_decoders(name, likelihoods):
    testing.check_decoder(name, data_shape=(8, 8, 1), likelihoods=likelihoods)


@pytest.mark.parametrize("name", ["gaussian", "full-gaussian", "iaf"])
def test_posteriors(name):
    testing.check_posterior(name, latent_dim=3)


def test_hierarchical_posterior_and_prior():
    split = {"z1_dim": 2, "z2_dim": 1, "hidden": [8]}
    testing.check_posterior("hierarchical", latent_dim=3, kwargs=split)
    testing.check_prior("hierarchical", latent_dim=3, kwargs=split)


@pytest.mark.parametrize(
    "name", ["bernoulli", "continuous-bernoulli", "gaussian", "discretized-logistic"]
)
def test_likelihoods_flat_and_spatial_features(name):
    testing.check_likelihood(name, data_shape=(4, 4, 1), feature_shapes=((16,), (4, 4, 8)))


@pytest.mark.parametrize(
    "kwargs", [{"scale": "fixed", "init_scale": 0.5}, {"scale": "scalar"}, {"scale": "per_dim"}]
)
def test_gaussian_scales(kwargs):
    layer = testing.check_likelihood("gaussian", data_shape=(3,), kwargs=kwargs)
    # Dense kernel and bias, plus the learned scale unless it is fixed.
    assert len(layer.trainable_weights) == (2 if kwargs["scale"] == "fixed" else 3)


@pytest.mark.parametrize("name", ["standard-normal", "mixture", "vamp"])
def test_priors(name):
    testing.check_prior(name, latent_dim=2)


def test_encoders_with_flow_posterior():
    testing.check_encoder("conv", data_shape=(8, 8, 1), posteriors=("iaf",))


def test_every_builtin_is_covered():
    """A new built-in must be added to the checks above."""
    # The table encoder and the mixed likelihood need a table's schema: tests/test_tables.py
    # runs kvae.testing's checks on them (values against each column family's TFP law).
    covered = {
        "encoders": {"mlp", "conv", "table"},
        "decoders": {"mlp", "conv"},
        "posteriors": {"gaussian", "full-gaussian", "iaf", "hierarchical"},
        "likelihoods": {
            "bernoulli",
            "continuous-bernoulli",
            "gaussian",
            "discretized-logistic",
            "mixed",
        },
        "priors": {"standard-normal", "mixture", "vamp", "hierarchical"},
    }
    for group, names in covered.items():
        builtin = {e.name for e in registry.entries(group) if e.dist == "kvae"}
        assert builtin == names, group


def test_check_reports_a_broken_component():
    import keras

    class NoWeights(keras.layers.Layer):
        def __init__(self, data_shape, **kwargs):
            super().__init__(**kwargs)

        def call(self, x):
            return keras.ops.reshape(x, (keras.ops.shape(x)[0], -1))

    with pytest.raises(AssertionError, match="no trainable weights"):
        testing.check_encoder(NoWeights, data_shape=(4, 4, 1))

    class PoolsTheBatch(keras.layers.Layer):
        """A decoder that sums over the batch: one output row for any number of codes."""

        def __init__(self, data_shape, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(16)

        def call(self, z):
            return keras.ops.sum(self.dense(z), axis=0, keepdims=True)

    with pytest.raises(AssertionError, match=r"decoder 'PoolsTheBatch': output batch axis"):
        testing.check_decoder(PoolsTheBatch, data_shape=(4, 4, 1))
    with pytest.raises(AssertionError, match=r"decoder 'NoWeights': has no trainable weights"):
        testing.check_decoder(NoWeights, data_shape=(4, 4, 1))


def test_check_likelihood_catches_an_unnormalised_head_and_a_wrong_log_prob():
    """The value checks can fail: a Bernoulli whose log-probabilities are all 0.05 nats too
    high (its two probabilities sum to e^0.05 = 1.05 per pixel), and a built-in head checked
    against a reference that is off by 0.5 nats per example."""
    from kvae.heads import likelihoods as lk

    class Inflated(lk._LogitBernoulli):
        def _log_prob(self, event):
            return super()._log_prob(event) + 0.05

    class InflatedHead(lk.Bernoulli):
        def distribution(self, params):
            return self._independent(Inflated(logits=params[..., 0], dtype=params.dtype))

    with pytest.raises(AssertionError, match=r"probabilities over its 2 support values.*1\.05"):
        testing.check_likelihood(InflatedHead, data_shape=(3,))

    def off_by_half(layer, params, x):
        return testing._bernoulli_reference(layer, params, x) - 0.5

    with pytest.raises(AssertionError, match="differs from the family's formula"):
        testing.check_likelihood("bernoulli", data_shape=(3,), reference=off_by_half)


def test_flat_log_prob_equals_tfps_independent_sum():
    """The likelihoods' log_prob sums the per-pixel terms on the data dimensions flattened
    (a speed change): it must equal TFP's own Independent sum, for samples [S, B, ...] of
    parameters against data [B, ...], for a learned per-pixel scale, and for data that
    broadcasts along a data dimension (which takes TFP's path). A flattening that mixed up
    pixels, examples or samples would change the sums by whole nats."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    from kvae.heads import likelihoods as lk

    tfd = tfp.distributions
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(3, 2, 4, 5, 1)), tf.float32)
    x = tf.constant(rng.random((2, 4, 5, 1)) < 0.5, tf.float32)
    loc = tf.constant(rng.normal(size=(3, 2, 4, 5, 1)), tf.float32)
    scale = tf.constant(rng.random((4, 5, 1)) + 0.5, tf.float32)
    cases = [
        (lk._LogitBernoulli(logits=logits), tfd.Bernoulli(logits=logits), x),
        (tfd.Normal(loc, scale), tfd.Normal(loc, scale), x),
        (tfd.Normal(loc, 2.0), tfd.Normal(loc, 2.0), x),
        (lk._LogitBernoulli(logits=logits), tfd.Bernoulli(logits=logits), x[:, :1]),
    ]
    for ours, theirs, data in cases:
        got = lk._Independent(ours, reinterpreted_batch_ndims=3).log_prob(data)
        want = tfd.Independent(theirs, reinterpreted_batch_ndims=3).log_prob(data)
        assert got.shape == (3, 2)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-4)
    # Per example, the flat sum is the sum over that example's own pixels.
    one = lk._Independent(lk._LogitBernoulli(logits=logits[1, 0]), 3).log_prob(x[0])
    got = lk._Independent(lk._LogitBernoulli(logits=logits), 3).log_prob(x)
    np.testing.assert_allclose(got.numpy()[1, 0], one.numpy(), rtol=1e-6)


def test_conv_default_keeps_the_keras_example_shape_and_old_configs_reload():
    """The default conv nets are layer for layer those before image sizes and batch norm
    came in, and a config saved then (without the new keys) rebuilds the same nets."""
    import numpy as np

    from kvae.networks.conv import ConvDecoder, ConvEncoder

    encoder, decoder = ConvEncoder((28, 28, 1)), ConvDecoder((28, 28, 1))
    encoder(np.zeros((2, 28, 28, 1), "float32"))
    decoder(np.zeros((2, 2), "float32"))
    assert [tuple(w.shape) for w in encoder.weights] == [
        (3, 3, 1, 32), (32,), (3, 3, 32, 64), (64,), (7 * 7 * 64, 16), (16,)
    ]  # fmt: skip
    assert [tuple(w.shape) for w in decoder.weights] == [
        (2, 7 * 7 * 64), (7 * 7 * 64,), (3, 3, 64, 64), (64,), (3, 3, 32, 64), (32,)
    ]  # fmt: skip
    for layer, new_keys in (
        (encoder, ("normalization",)),
        (decoder, ("normalization", "base_filters")),
    ):
        old = {k: v for k, v in layer.get_config().items() if k not in new_keys}
        assert type(layer).from_config(old).get_config() == layer.get_config()


def test_conv_filters_from_the_image_size_and_bad_settings():
    import pytest

    from kvae.errors import ConfigError
    from kvae.networks.conv import ConvDecoder, ConvEncoder, auto_filters

    assert auto_filters(64, 64) == (32, 64, 128, 256)
    assert auto_filters(28, 28) == (32, 64, 128)
    assert auto_filters(3, 5) == (32,)
    assert ConvDecoder((64, 64, 3), filters="auto").filters == (256, 128, 64, 32)
    with pytest.raises(ConfigError, match="normalization"):
        ConvEncoder((8, 8, 1), normalization="layer")
    with pytest.raises(ConfigError, match="activation"):
        ConvDecoder((8, 8, 1), activation="relux")
    with pytest.raises(ConfigError, match="'auto'"):
        ConvEncoder((8, 8, 1), filters="wide")
