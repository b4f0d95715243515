"""free_bits: a KL piece whose batch mean is below its floor gives no gradient (its value still
counts in the loss); above every floor the loss is the plain one. Three ways to cut the KL
into pieces (``free_bits_mode``): ``"total"`` (the whole code, floor free_bits * latent_dim,
the default), ``"dimension"`` (Kingma et al. 2016's lambda per latent dimension) and
``"group"`` (each layer of a hierarchical model). IWAE refuses free bits."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import kvae
from kvae import objectives
from kvae.errors import ConfigError
from kvae.heads.posteriors import DiagonalGaussian
from kvae.priors import StandardNormal

tfd = tfp.distributions

X = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")


def _one_step(**kwargs):
    """One SGD step on X (one batch) from the same initial weights and the same noise."""
    keras.utils.set_random_seed(0)
    kwargs = {"latent_dim": 2, "kl": "analytic", **kwargs}
    model = kvae.VAE(data_shape=(8, 8, 1), seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), steps_per_execution=1, jit_compile=False)
    history = model.fit(X, epochs=1, batch_size=32, shuffle=False, verbose=0)
    weights = np.concatenate([np.ravel(w) for w in model.trainable_weights])
    return weights, {k: v[0] for k, v in history.history.items()}


@pytest.mark.parametrize("mode", ["total", "dimension"])
def test_free_bits_stops_the_kl_gradient_but_not_its_value(mode):
    """A floor of 100 nats per unit is far above the KL of a fresh model (a few nats), so the
    step follows the reconstruction alone: the same weights as with beta=0, up to float32
    rounding of the same operations (atol 1e-6 on weights of order 0.1). Without free bits
    the KL's gradient moves the encoder: the weights differ by far more than that."""
    free, free_logs = _one_step(free_bits=100.0, free_bits_mode=mode)
    no_kl, _ = _one_step(beta=0.0)
    plain, plain_logs = _one_step()
    np.testing.assert_allclose(free, no_kl, atol=1e-6)
    assert np.max(np.abs(plain - no_kl)) > 1e-4
    # The value still counts: loss = reconstruction + KL, the same first-step numbers.
    np.testing.assert_allclose(
        free_logs["loss"], free_logs["reconstruction"] + free_logs["kl"], rtol=1e-5
    )
    np.testing.assert_allclose(free_logs["loss"], plain_logs["loss"], rtol=1e-5)


@pytest.mark.parametrize("mode", ["total", "dimension"])
def test_above_every_floor_the_step_is_the_plain_one(mode):
    """A floor of 1e-9 nats is below any dimension's KL: the step is the plain ELBO step
    (weights to float32 rounding), while beta=0 is far from it. A per-dimension KL that did
    not add up to the analytic KL, or a floor applied the wrong way round, moves them."""
    free, _ = _one_step(free_bits=1e-9, free_bits_mode=mode)
    plain, _ = _one_step()
    no_kl, _ = _one_step(beta=0.0)
    np.testing.assert_allclose(free, plain, atol=1e-6)
    assert np.max(np.abs(free - no_kl)) > 1e-4


def _gaussian(loc, scale):
    return tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)


def _standard(latent_dim):
    return _gaussian(tf.zeros([latent_dim]), tf.ones([latent_dim]))


def test_kl_per_dimension_is_the_closed_form_and_sums_to_the_analytic_kl():
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(5, 3)).astype("float32")
    sigma = rng.uniform(0.2, 2.0, size=(5, 3)).astype("float32")
    per_dim = objectives.kl_per_dimension(_gaussian(mu, sigma), _standard(3)).numpy()
    want = 0.5 * (mu**2 + sigma**2 - 1 - np.log(sigma**2))
    np.testing.assert_allclose(per_dim, want, rtol=1e-5, atol=1e-6)
    total = tfd.kl_divergence(_gaussian(mu, sigma), _standard(3)).numpy()
    np.testing.assert_allclose(per_dim.sum(-1), total, rtol=1e-5)


def _grouped(dist, sizes):
    """``dist`` (a diagonal Gaussian) split into groups of ``sizes`` coordinates, as a
    hierarchical model's q and p split into z1 and z2."""

    def log_prob_groups(z):
        per_dim = tfd.Normal(dist.mean(), dist.stddev()).log_prob(z)
        return tuple(tf.reduce_sum(g, -1) for g in tf.split(per_dim, list(sizes), axis=-1))

    dist.latent_groups = tuple(sizes)
    dist.log_prob_groups = log_prob_groups
    return dist


def _floored(mode, mu, free_bits, groups=None):
    """For q = N(mu, I) against p = N(0, I) (split into ``groups`` for "group"): the
    free-bits KL per example, the plain KL, and the gradients of their batch means with
    respect to mu. The KL is analytic, or Monte Carlo on 64 draws with groups."""
    mu = tf.Variable(mu)
    with tf.GradientTape(persistent=True) as tape:
        q, p = _gaussian(mu, tf.ones_like(mu)), _standard(mu.shape[-1])
        if groups:
            q, p = _grouped(q, groups), _grouped(p, groups)
        z = q.sample(64, seed=[1, 2])
        if groups:
            kl = tf.reduce_mean(q.log_prob(z) - p.log_prob(z), axis=0)
        else:
            kl = objectives.kl_divergence(q, p)
        pieces, sizes = objectives.kl_pieces(mode, q, p, kl, z)
        value = objectives.free_bits_kl(pieces, sizes, free_bits)
        loss, plain = tf.reduce_mean(value), tf.reduce_mean(kl)
    grads = [tape.gradient(t, mu).numpy() for t in (loss, plain)]
    return value.numpy(), kl.numpy(), *grads


def test_per_dimension_floors_each_dimension_on_its_own():
    """q = N(mu, I), p = N(0, I): dimension 0 holds 0.5 * 2^2 = 2 nats, dimension 1
    0.5 * 0.1^2 = 0.005. With lambda = 1.5 per dimension, dimension 1 is below its floor
    (its gradient is zero) and dimension 0 above (its gradient is the plain mu / B); the
    whole code's floor 3 nats is above the total 2.005, so "total" stops both."""
    batch = 4
    mu = np.tile(np.array([[2.0, 0.1]], "float32"), (batch, 1))
    value, kl, grad, plain = _floored("dimension", mu, 1.5)
    np.testing.assert_allclose(plain, mu / batch, rtol=1e-6)
    np.testing.assert_allclose(value, kl, rtol=1e-6)  # the value counts as it is
    np.testing.assert_allclose(grad[:, 0], plain[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(grad[:, 1], 0.0)
    np.testing.assert_array_equal(_floored("total", mu, 1.5)[2], 0.0)
    np.testing.assert_allclose(_floored("dimension", mu, 1e-9)[2], plain, rtol=1e-6)


def test_per_group_floors_each_group_and_adds_up_to_the_mc_kl():
    """Groups z1 = dims 0-1 and z2 = dim 2 of q = N(mu, I): z1 holds about
    2 * 0.5 * 2^2 = 4 nats, above its floor 2 * 1, and keeps its gradient; z2 about 0.005
    nats, below its floor 1, and gives none. The group KLs are Monte Carlo on the same z:
    they add up to mean_s [log q(z_s) - log p(z_s)], the value that counts."""
    batch = 4
    mu = np.tile(np.array([[2.0, -2.0, 0.1]], "float32"), (batch, 1))
    value, kl, grad, plain = _floored("group", mu, 1.0, groups=(2, 1))
    np.testing.assert_allclose(value, kl, rtol=1e-5)
    np.testing.assert_allclose(grad[:, :2], plain[:, :2], rtol=1e-5)
    assert np.all(np.abs(plain[:, 2]) > 0)
    np.testing.assert_array_equal(grad[:, 2], 0.0)
    q = _grouped(_gaussian(mu, tf.ones_like(mu)), (2, 1))
    pieces = objectives.kl_per_group(q, _grouped(_standard(3), (2, 1)), q.sample(8, seed=[3, 4]))
    assert pieces.shape == (batch, 2)


class GroupedPosterior(DiagonalGaussian):
    def distribution(self, params):
        return _grouped(super().distribution(params), (1, 1))


class GroupedPrior(StandardNormal):
    def distribution(self):
        return _grouped(super().distribution(), (1, 1))


def test_group_mode_trains_through_the_model():
    """A model whose q and p split z into groups (here one dimension each) trains with
    free_bits_mode="group": a floor far above the KL gives the beta=0 step, a floor below
    it the plain step (Monte Carlo KL on both sides, the same noise)."""

    def step(**kwargs):
        keras.utils.set_random_seed(0)  # the heads draw their weights when made
        parts = {"posterior": GroupedPosterior(2), "prior": GroupedPrior(2), "kl": "mc"}
        return _one_step(**parts, **kwargs)[0]

    np.testing.assert_allclose(
        step(free_bits=100.0, free_bits_mode="group"), step(beta=0.0), atol=1e-6
    )
    np.testing.assert_allclose(step(free_bits=1e-9, free_bits_mode="group"), step(), atol=1e-6)


def test_hierarchical_model_floors_z1_and_z2_separately():
    """The hierarchical q and p split into z1 and z2 (their chain-rule factors): group KLs
    add up to the Monte Carlo KL on the same z, and a group mode model trains."""
    model = kvae.VAE(
        data_shape=(8, 8, 1),
        latent_dim=3,
        posterior="hierarchical",
        prior="hierarchical",
        posterior_kwargs={"z1_dim": 2, "z2_dim": 1, "hidden": [8]},
        prior_kwargs={"z1_dim": 2, "z2_dim": 1, "hidden": [8]},
        free_bits=0.5,
        free_bits_mode="group",
        seed=0,
    )
    q, p = model.encode(X[:4]), model.prior.distribution()
    z = q.sample(16, seed=[5, 6])
    pieces = objectives.kl_per_group(q, p, z).numpy()
    mc = tf.reduce_mean(q.log_prob(z) - p.log_prob(z), axis=0).numpy()
    np.testing.assert_allclose(pieces.sum(-1), mc, rtol=1e-4, atol=1e-4)
    model.compile(steps_per_execution=1)
    model.fit(X, epochs=1, batch_size=16, verbose=0)


@pytest.mark.parametrize(
    "mode, kwargs",
    [
        ("dimension", {"posterior": "full-gaussian"}),
        ("dimension", {"prior": "mixture"}),
        ("group", {}),
    ],
)
def test_a_mode_the_model_cannot_split_into_is_refused_at_construction(mode, kwargs):
    """Per dimension needs q and p that factorise over z's dimensions (a full covariance
    couples them; a mixture prior has no per-dimension KL); per group needs q and p that
    split into groups. Refused when the model is made, naming the fallback."""
    with pytest.raises(ConfigError, match=f"free_bits_mode='{mode}'.*free_bits_mode='total'"):
        kvae.VAE(data_shape=(8, 8, 1), free_bits=0.5, free_bits_mode=mode, **kwargs)
    kvae.VAE(data_shape=(8, 8, 1), free_bits=0.0, free_bits_mode=mode, **kwargs)  # off: fine


def test_free_bits_is_refused_with_iwae_and_bad_modes():
    with pytest.raises(ConfigError, match="free_bits=0 with objective='iwae'"):
        kvae.VAE(data_shape=(8, 8, 1), objective="iwae", num_samples=4, free_bits=0.5)
    kvae.VAE(data_shape=(8, 8, 1), objective="iwae", num_samples=4, free_bits=0.0)
    with pytest.raises(ConfigError, match="free_bits_mode.*'total', 'dimension', 'group'"):
        kvae.VAE(data_shape=(8, 8, 1), free_bits=0.5, free_bits_mode="unit")


def test_the_mode_survives_save_and_reload(tmp_path):
    model = kvae.VAE(data_shape=(8, 8, 1), free_bits=0.25, free_bits_mode="dimension")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.free_bits, loaded.free_bits_mode) == (0.25, "dimension")
