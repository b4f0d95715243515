"""Model families beyond the mean-field VAE: the IAF posterior (``posterior="iaf"``) and the
VampPrior (``prior="vamp"``), checked against independent computations."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import kvae
from kvae import objectives
from kvae.errors import ConfigError, DataError
from kvae.heads.iaf import IAFPosterior
from kvae.heads.made import MADE
from kvae.heads.posteriors import DiagonalGaussian

tfd = tfp.distributions
HERE = os.path.dirname(os.path.abspath(__file__))


def _features(n=5, dim=10, seed=0):
    return tf.constant(np.random.default_rng(seed).standard_normal((n, dim)), tf.float32)


def _perturb(layer, seed=0, scale=0.3):
    """Move every weight away from its initial value, so that no gate starts near 1 and no
    network output is ~0 (a check on a freshly initialised flow would be nearly the identity)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([w + scale * rng.standard_normal(w.shape) for w in layer.get_weights()])


# ----------------------------------------------------------------------------- MADE
def test_made_is_strictly_autoregressive():
    """d output_i / d z_j is zero for j >= i and non-zero somewhere below the diagonal."""
    made = MADE(4, hidden_units=(8, 8), context_dim=3)
    z = tf.constant(np.random.default_rng(1).standard_normal((2, 4)), tf.float32)
    h = tf.constant(np.random.default_rng(2).standard_normal((2, 3)), tf.float32)
    made(z, h)
    _perturb(made)
    for k in range(2):
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = made(z, h)[k]
        jac = tape.batch_jacobian(out, z).numpy()  # [B, out, in]
        assert np.all(jac[:, np.triu_indices(4)[0], np.triu_indices(4)[1]] == 0)
        assert np.abs(jac[:, np.tril_indices(4, -1)[0], np.tril_indices(4, -1)[1]]).max() > 1e-3
    # The context reaches every output, the first one included.
    with tf.GradientTape() as tape:
        tape.watch(h)
        out = made(z, h)[0]
    assert np.abs(tape.batch_jacobian(out, h).numpy()[:, 0]).max() > 1e-3


# ----------------------------------------------------------------------------- IAF
def _iaf(num_steps=3, latent_dim=4, context_dim=5):
    head = IAFPosterior(
        latent_dim, num_steps=num_steps, hidden_units=(16,), context_dim=context_dim
    )
    head(_features())  # build
    _perturb(head)
    return head, head(_features())


def _forward_by_hand(head, params, eps):
    """z_T and sum_t log|det dz_t/dz_{t-1}|, computed from the layers directly (no TFP)."""
    loc, scale, context = head.split(params)
    z = loc + scale * eps
    z0, log_det = z, tf.zeros(z.shape[:-1])
    for t, made in enumerate(head.steps):
        if t:
            z = z[..., ::-1]  # order reversal between steps
        m, s = made(z, context)
        gate = 1.0 / (1.0 + tf.exp(-s))
        z = gate * z + (1.0 - gate) * m
        log_det += tf.reduce_sum(tf.math.log(gate), axis=-1)
    return z0, z, log_det


def test_iaf_log_prob_is_base_density_minus_summed_log_dets():
    head, params = _iaf()
    eps = tf.constant(np.random.default_rng(3).standard_normal((5, 4)), tf.float32)
    z0, z, log_det = _forward_by_hand(head, params, eps)
    loc, scale, _ = head.split(params)
    expected = tfd.MultivariateNormalDiag(loc, scale).log_prob(z0) - log_det
    q = head.distribution(params)
    # A fresh z (not one of q's own samples): TFP must invert the flow to score it.
    got = q.log_prob(tf.constant(z.numpy()))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(log_det.numpy()).min() > 0.05  # the flow is far from volume-preserving


def test_iaf_scores_its_own_samples_with_one_pass_per_step():
    head, params = _iaf()
    calls = []
    for made in head.steps:
        original = made.call
        made.call = lambda z, c=None, _f=original: calls.append(1) or _f(z, c)
    q = head.distribution(params)
    z = q.sample(6, seed=tf.constant([4, 5]))
    log_q = q.log_prob(z)
    assert len(calls) == len(head.steps)  # forward only: no inverse, no recomputed log-det
    # And the cached value is the exact density: the inverse path gives the same number.
    np.testing.assert_allclose(log_q, q.log_prob(tf.identity(z)), rtol=1e-4, atol=1e-4)
    assert len(calls) > len(head.steps)


def test_iaf_with_no_steps_is_exactly_the_diagonal_gaussian():
    iaf = IAFPosterior(3, num_steps=0, context_dim=0)
    gauss = DiagonalGaussian(3)
    f = _features()
    iaf(f), gauss(f)
    gauss.set_weights(iaf.get_weights())
    q_iaf, q_gauss = iaf.distribution(iaf(f)), gauss.distribution(gauss(f))
    assert type(q_iaf) is type(q_gauss)
    # A fresh tensor: each distribution scores it the same way (TFP would answer for its own
    # samples from its bijector cache, one float32 rounding away).
    z = tf.constant(q_gauss.sample(4, seed=tf.constant([1, 1])).numpy())
    np.testing.assert_array_equal(q_iaf.log_prob(z), q_gauss.log_prob(z))
    # So the KL stays analytic.
    prior = tfd.MultivariateNormalDiag(tf.zeros(3), tf.ones(3))
    np.testing.assert_array_equal(
        objectives.kl_divergence(q_iaf, prior, method="analytic"),
        objectives.kl_divergence(q_gauss, prior, method="analytic"),
    )


def test_iaf_kl_falls_back_to_monte_carlo():
    head, params = _iaf()
    q = head.distribution(params)
    prior = tfd.MultivariateNormalDiag(tf.zeros(4), tf.ones(4))
    z = q.sample(3, seed=tf.constant([7, 8]))
    got = objectives.kl_divergence(q, prior, z=z, method="auto")
    want = tf.reduce_mean(q.log_prob(tf.identity(z)) - prior.log_prob(z), axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="kl='mc'"):
        objectives.kl_divergence(q, prior, method="analytic")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_steps": -1}, "num_steps"),
        ({"num_steps": 1.5}, "num_steps"),
        ({"context_dim": -2}, "context_dim"),
        ({"hidden_units": [0]}, "hidden_units"),
    ],
)
def test_iaf_bad_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        kvae.VAE(data_shape=(4,), likelihood="gaussian", posterior="iaf", posterior_kwargs=kwargs)


# ----------------------------------------------------------------------------- VampPrior
def _vamp_model(posterior="gaussian", k=4):
    model = kvae.VAE(
        data_shape=(6, 6, 1),
        latent_dim=3,
        posterior=posterior,
        prior="vamp",
        prior_kwargs={"num_components": k, "seed": 3},
        seed=0,
    )
    _perturb(model.prior, seed=1, scale=2.0)  # pseudo-inputs spread over (0, 1)
    return model


@pytest.mark.parametrize("posterior", ["gaussian", "iaf"])
def test_vamp_log_density_is_a_brute_force_logsumexp(posterior):
    model = _vamp_model(posterior)
    u = model.prior.pseudo_inputs().numpy()
    z = tf.constant(np.random.default_rng(4).standard_normal((7, 3)) * 1.5, tf.float32)
    # One component at a time, each a separate encoder call on one pseudo-input.
    per_component = np.stack(
        [model.encode(u[k : k + 1]).log_prob(z[:, None, :]).numpy()[:, 0] for k in range(4)]
    )
    expected = np.logaddexp.reduce(per_component.astype("float64"), axis=0) - np.log(4)
    got = model.prior_distribution().log_prob(z).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert np.ptp(per_component, axis=0).max() > 0.1  # the components differ


def test_vamp_pseudo_inputs_stay_in_the_data_range_and_learn():
    model = _vamp_model(k=3)
    before = model.prior.pseudo_inputs().numpy()
    x = (np.random.default_rng(5).random((32, 6, 6, 1)) < 0.5).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(0.1), steps_per_execution=1)
    model.fit(x, batch_size=16, epochs=2, verbose=0)
    u = model.prior.pseudo_inputs().numpy()
    assert np.abs(u - before).max() > 1e-3  # gradients reach the pseudo-inputs
    assert u.min() >= 0.0 and u.max() <= 1.0
    # However far training pushes the free parameters, u stays inside [0, 1].
    raw = model.prior.pseudo_inputs_raw
    raw.assign(np.where(np.arange(raw.shape[1])[None, :, None, None] % 2, 1e4, -1e4) + 0 * raw)
    u = model.prior.pseudo_inputs().numpy()
    assert u.min() == 0.0 and u.max() == 1.0


def test_vamp_init_from_data_copies_training_examples():
    model = kvae.VAE(
        data_shape=(6, 6, 1),
        latent_dim=2,
        prior="vamp",
        prior_kwargs={"num_components": 5, "init": "data", "seed": 2},
    )
    x = np.random.default_rng(6).uniform(0.01, 0.99, (20, 6, 6, 1)).astype("float32")
    model.prior.init_from_data(x)
    u = model.prior.pseudo_inputs().numpy()
    rows = np.random.default_rng(2).choice(20, 5, replace=False)
    np.testing.assert_allclose(u, x[rows], atol=1e-5)
    with pytest.raises(DataError, match="pseudo-inputs"):
        model.prior.init_from_data(x[:, :5])


def test_vamp_unbounded_data_is_not_squashed():
    model = kvae.VAE(
        data_shape=(4,),
        latent_dim=2,
        likelihood="gaussian",
        prior="vamp",
        prior_kwargs={"num_components": 50},
    )
    u = model.prior.pseudo_inputs().numpy()
    assert u.min() < -1.0 and u.max() > 1.0  # standard-normal scale, not a (0, 1) sigmoid


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_components": 0}, "num_components"),
        ({"num_components": "3"}, "num_components"),
        ({"data_range": [1, 0]}, "data_range"),
        ({"init": "kmeans"}, "init"),
    ],
)
def test_vamp_bad_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        kvae.VAE(data_shape=(4,), likelihood="gaussian", prior="vamp", prior_kwargs=kwargs)


def test_vamp_without_a_model_says_how_to_use_it():
    from kvae.vamp import VampPrior

    with pytest.raises(ConfigError, match="prior='vamp'"):
        VampPrior(2).distribution()


# ----------------------------------------------------------------------------- hierarchical
_SPLIT = {"z1_dim": 3, "z2_dim": 2, "hidden": [8]}


def _hvae():
    model = kvae.VAE(
        data_shape=(6, 6, 1),
        latent_dim=5,
        posterior="hierarchical",
        posterior_kwargs=_SPLIT,
        prior="hierarchical",
        prior_kwargs=_SPLIT,
        seed=0,
    )
    _perturb(model.posterior_head.inner, seed=2)
    _perturb(model.prior.inner, seed=3)
    return model


def test_hierarchical_log_densities_are_the_two_layer_factors():
    """log q(z|x) = log q(z1|x) + log q(z2|z1) and log p(z) = log p(z2) + log p(z1|z2),
    each factor computed here from the networks; so the ELBO is the two-layer bound and the
    IWAE weights are the joint ones."""
    model = _hvae()
    x = (np.random.default_rng(0).random((4, 6, 6, 1)) < 0.5).astype("float32")
    q = model.encode(x)
    z = q.sample(3, seed=tf.constant([1, 2]))
    z1, z2 = z[..., :3], z[..., 3:]

    def gaussian(params):
        loc, raw = tf.split(params, 2, axis=-1)
        return tfd.MultivariateNormalDiag(loc, tf.math.softplus(raw) + 1e-4)

    params = model.posterior_head(model.encoder(x))
    inner_q = model.posterior_head.inner(tf.reshape(z1, [-1, 3]))
    log_q = gaussian(params).log_prob(z1) + gaussian(tf.reshape(inner_q, [3, 4, 4])).log_prob(z2)
    np.testing.assert_allclose(q.log_prob(tf.identity(z)), log_q, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q.log_prob(z), log_q, rtol=1e-5, atol=1e-5)
    inner_p = model.prior.inner(tf.reshape(z2, [-1, 2]))
    log_p = tfd.MultivariateNormalDiag(tf.zeros(2), tf.ones(2)).log_prob(z2) + gaussian(
        tf.reshape(inner_p, [3, 4, 6])
    ).log_prob(z1)
    np.testing.assert_allclose(model.prior_distribution().log_prob(z), log_p, rtol=1e-5, atol=1e-5)
    # Ancestral samples of the prior: z2 ~ N(0, I) (mean 0, sd 1 over 4000 draws: the mean's
    # standard error is 1/sqrt(4000) = 0.016, so |mean| < 0.08 is a 5-sigma bound).
    zp = model.prior_distribution().sample(4000, seed=tf.constant([5, 6])).numpy()
    assert np.all(np.abs(zp[:, 3:].mean(axis=0)) < 0.08)
    assert np.all(np.abs(zp[:, 3:].std(axis=0) - 1) < 0.08)


@pytest.mark.parametrize(
    "posterior_kwargs, prior_kwargs, match",
    [
        ({"z1_dim": 3, "z2_dim": 3}, _SPLIT, "chain"),
        (_SPLIT, {"z1_dim": 4, "z2_dim": 1}, "split z the same way"),
        ({"z1_dim": 3}, _SPLIT, "z1_dim and z2_dim"),
    ],
)
def test_hierarchical_sizes_must_chain(posterior_kwargs, prior_kwargs, match):
    with pytest.raises(ConfigError, match=match):
        kvae.VAE(
            data_shape=(4,),
            likelihood="gaussian",
            latent_dim=5,
            posterior="hierarchical",
            posterior_kwargs=posterior_kwargs,
            prior="hierarchical",
            prior_kwargs=prior_kwargs,
        )


# ----------------------------------------------------------------------------- all
_FAMILIES = {
    "iaf+vamp": dict(
        latent_dim=3,
        posterior="iaf",
        posterior_kwargs={"num_steps": 2, "hidden_units": [16], "context_dim": 4},
        prior="vamp",
        prior_kwargs={"num_components": 5},
    ),
    "hierarchical": dict(
        latent_dim=5,
        posterior="hierarchical",
        posterior_kwargs=_SPLIT,
        prior="hierarchical",
        prior_kwargs=_SPLIT,
    ),
}


@pytest.mark.slow
def test_families_reload_in_a_fresh_process_and_train_mirrored(tmp_path):
    """One fresh process with two logical CPUs (tests/families_worker.py, both families in
    turn): each .keras file reloads to identical outputs, and the same architecture trains
    under MirroredStrategy with per-replica XLA."""
    from sklearn.datasets import load_digits

    x = (load_digits().data[:256] / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    np.save(tmp_path / "x.npy", x)
    models, cases = {}, []
    for family, kwargs in sorted(_FAMILIES.items()):
        model = kvae.VAE(data_shape=(8, 8, 1), likelihood="continuous-bernoulli", seed=0, **kwargs)
        model.compile()
        model.fit(x, batch_size=64, epochs=1, verbose=0)
        model.save(tmp_path / f"{family}.keras")
        models[family] = model
        out = tmp_path / f"{family}.json"
        cases.append({"model": str(tmp_path / f"{family}.keras"), "x": str(tmp_path / "x.npy")})
        cases[-1]["out"] = str(out)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    worker = [sys.executable, os.path.join(HERE, "families_worker.py"), tmp_path / "cases.json"]
    subprocess.run(worker, check=True, timeout=600, env=env)
    for family, model in models.items():
        out = json.loads((tmp_path / f"{family}.json").read_text())
        z = np.linspace(-2, 2, 4 * model.latent_dim, dtype="float32").reshape(4, -1)
        np.testing.assert_allclose(
            out["recon"], model.predict(x[:8], verbose=0), rtol=1e-5, atol=1e-6, err_msg=family
        )
        np.testing.assert_allclose(
            out["prior_log_prob"],
            model.prior_distribution().log_prob(z),
            rtol=1e-5,
            atol=1e-5,
            err_msg=family,
        )
        assert out["replicas"] == 2 and out["replica_jit"], family
        assert np.all(np.isfinite(out["loss"])) and out["loss"][-1] < out["loss"][0], family


def test_cli_trains_iaf_with_a_data_initialised_vamp_prior(tmp_path):
    from click.testing import CliRunner

    from kvae.cli import main

    run = tmp_path / "run"
    args = ["train", "-d", "digits", "--max-train-examples", "128", "--max-test-examples", "50"]
    args += ["-e", "1", "-b", "64", "-z", "2", "--progress", "none", "--run-dir", str(run)]
    args += ["--posterior", "iaf", "--posterior-kwargs", '{"num_steps": 1, "hidden_units": [8]}']
    args += ["--prior", "vamp", "--prior-kwargs", '{"num_components": 4, "init": "data"}']
    result = CliRunner().invoke(main, args, prog_name="kvae")
    assert result.exit_code == 0, result.output
    model = kvae.load_model(run / "model.keras")
    assert model.get_config()["posterior_kwargs"]["num_steps"] == 1
    with open(run / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["kl_per_dim"] is None and "not Gaussian" in metrics["kl_per_dim_method"]
    # A bad option is one line and a non-zero exit, before any run directory is made.
    bad = [str(tmp_path / "bad") if a == str(run) else a for a in args]
    bad[bad.index('{"num_components": 4, "init": "data"}')] = '{"num_components": 0}'
    result = CliRunner().invoke(main, bad, prog_name="kvae")
    assert result.exit_code != 0 and "num_components" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "bad").exists()
