"""The VAE as a Keras user meets it: fit/evaluate/predict, encode/decode/sample, seeds,
XLA, mixed precision, bad input."""

import gc
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.errors import ConfigError, DataError, UnknownComponentError


def _binary(n, shape=(6, 6, 1), seed=0, p=0.3):
    rng = np.random.default_rng(seed)
    return (rng.random((n, *shape)) < p).astype("float32")


def small_vae(**kwargs):
    defaults = dict(
        data_shape=(6, 6, 1),
        latent_dim=2,
        encoder_kwargs={"hidden": [16]},
        decoder_kwargs={"hidden": [16]},
        seed=0,
    )
    defaults.update(kwargs)
    return kvae.VAE(**defaults)


def test_readme_contract_on_mnist_subset():
    """The issue's example, on 4,000 MNIST images: the test negative ELBO falls well below
    its starting value and every named method returns what it promises."""
    (x_train, _), (x_test, _) = kvae.datasets.load("mnist")
    x_train, x_test = x_train[:4000], x_test[:1000]
    keras.utils.set_random_seed(0)
    model = kvae.VAE(
        encoder="mlp", decoder="mlp", latent_dim=2, data_shape=(28, 28, 1), likelihood="bernoulli"
    )
    model.compile(optimizer="adam")
    before = model.evaluate(x_test, return_dict=True, verbose=0)
    model.fit(x_train, epochs=5, batch_size=128, verbose=0)
    after = model.evaluate(x_test, return_dict=True, verbose=0)
    assert set(after) == {"loss", "elbo", "reconstruction", "kl"}
    # Untrained: ~543 nats (784 * log 2 at logits 0).
    assert before["loss"] > 500
    # A decoder that ignores z can at best output the test set's own pixel means (the
    # constant that minimises the cross-entropy) and pays KL >= 0: its loss is at least the
    # pixel-marginal model's, 197.3 nats here. The model must use z: measured 185.8 after 5
    # epochs; 5 nats below the floor leaves room for seeds and platforms.
    m = np.clip(x_test.mean(axis=0), 1e-6, 1 - 1e-6)
    floor = -np.mean(np.sum(x_test * np.log(m) + (1 - x_test) * np.log(1 - m), axis=(1, 2, 3)))
    assert after["loss"] < floor - 5
    assert after["elbo"] == pytest.approx(-(after["reconstruction"] + after["kl"]), rel=1e-4)
    q = model.encode(x_test[:8])
    assert tuple(q.batch_shape) == (8,) and tuple(q.event_shape) == (2,)
    p = model.decode(q.sample(seed=(1, 2)))
    assert tuple(p.event_shape) == (28, 28, 1) and tuple(p.batch_shape) == (8,)
    x_new = model.sample(16)
    assert x_new.shape == (16, 28, 28, 1) and 0 <= x_new.min() and x_new.max() <= 1


def test_metrics_are_consistent_and_beta_weights_only_kl():
    x = _binary(256)
    model = small_vae(beta=0.0)
    model.compile(steps_per_execution=1)
    m = model.evaluate(x, batch_size=256, return_dict=True, verbose=0)
    assert m["loss"] == pytest.approx(m["reconstruction"], rel=1e-6)
    assert m["kl"] > 0
    model.beta.assign(2.0)
    m2 = model.evaluate(x, batch_size=256, return_dict=True, verbose=0)
    # Same seed state would be needed for identical samples; analytic KL is deterministic.
    assert m2["loss"] == pytest.approx(m2["reconstruction"] + 2.0 * m2["kl"], rel=1e-5)


def test_jit_and_eager_steps_agree():
    """One training step from the same weights gives the same analytic KL and the same
    loss up to Monte Carlo noise with and without XLA. (TF's stateless RNG picks another
    algorithm under XLA on CPU, so the latent noise differs; the tolerance is 5 standard
    errors of the difference of two independent one-sample batch means.)"""
    x = _binary(64)
    results = []
    for jit in (True, False):
        keras.utils.set_random_seed(3)
        model = small_vae(seed=3)
        w0 = [w.copy() for w in model.get_weights()]
        model.compile(jit_compile=jit, steps_per_execution=1)
        history = model.fit(x, epochs=1, batch_size=64, verbose=0, shuffle=False).history
        results.append((history, model.get_weights()))
    (h_jit, w_jit), (h_eager, w_eager) = results
    np.testing.assert_allclose(h_jit["kl"], h_eager["kl"], rtol=1e-5)
    # Spread of the batch-mean loss over seeds, at the initial weights.
    keras.utils.set_random_seed(3)
    probe = small_vae(seed=3)
    losses = [
        float(np.mean(probe.compute_terms(tf.constant(x), tf.constant([s, 0]))["loss"]))
        for s in range(30)
    ]
    tol = 5 * np.sqrt(2) * np.std(losses)
    assert abs(h_jit["loss"][0] - h_eager["loss"][0]) < tol
    # Adam's first update is about +-lr per weight; over all weights it must point the same
    # way nearly always (parameters whose gradient is noise-dominated may flip).
    same = np.concatenate(
        [
            (np.sign(a - w) == np.sign(b - w)).ravel()
            for a, b, w in zip(w_jit, w_eager, w0, strict=True)
        ]
    )
    assert same.mean() > 0.9


def test_jit_is_really_on_by_default():
    model = small_vae()
    model.compile()
    assert model.jit_compile is True
    assert model.steps_per_execution > 1


def test_two_seeded_runs_are_identical_and_seeds_matter():
    x = _binary(512)

    def run(seed):
        keras.utils.set_random_seed(seed)
        model = small_vae(seed=None)
        model.compile()
        return model.fit(x, epochs=2, batch_size=64, verbose=0).history["loss"]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_fit_accepts_tf_data_and_callbacks():
    x = _binary(512)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(64).prefetch(2)
    model = small_vae()
    model.compile()
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=0)
    seen = []
    logger = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(logs["elbo"]))
    model.fit(ds, epochs=2, callbacks=[stopper, logger], verbose=0)
    assert len(seen) >= 1 and all(math.isfinite(v) for v in seen)


def _z_blind_decoder(bias=0.0):
    """A network that ignores its input (its output is a learned constant): as the decoder,
    with the analytic KL, the loss has no Monte Carlo noise."""

    class Blind(keras.layers.Layer):
        def call(self, z):
            return keras.ops.zeros_like(z[..., :1])

    dense = keras.layers.Dense(36, bias_initializer=keras.initializers.Constant(bias))
    return keras.Sequential([keras.layers.Flatten(), Blind(), dense])


def test_fit_epoch_loss_is_the_mean_over_examples_padding_excluded():
    """100 examples in batches of 32: the last batch is padded with 28 weight-0 rows. With a
    learning rate of 0 and no sampling noise, the epoch's loss must be the plain mean of the
    100 per-example losses; counting the padding rows (or averaging batch means) gives
    another number, since the examples' losses differ."""
    x = _binary(100, p=0.3)
    x[:50] = _binary(50, p=0.8, seed=1)  # two kinds of example: very different losses
    model = small_vae(decoder=_z_blind_decoder(bias=2.0), kl="analytic", decoder_kwargs=None)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    history = model.fit(x, batch_size=32, epochs=2, verbose=0)
    per_example = model.compute_terms(tf.constant(x), seed=tf.constant([0, 0]))["loss"].numpy()
    for loss in history.history["loss"]:
        assert loss == pytest.approx(per_example.mean(), rel=1e-5)
    # The losses differ (by about 2 nats per pixel that differs: the logits are 2), so 28
    # padding rows counted with weight 1 would move the mean far beyond rel=1e-5.
    assert per_example.std() > 1.0


@pytest.mark.parametrize(
    "steps, wanted, chosen",
    [
        (469, 32, 67),  # MNIST at batch 128: 469 = 7 * 67, the only divisor in [16, 128]
        (1000, 32, 40),  # divisors 20, 25, 40, 50, ...: 40 is nearest by ratio
        (100, 32, 25),  # a short epoch: the nearest divisor >= 16
        (10, 32, 10),  # shorter than wanted / 2: the whole epoch in one call
        (7919, 32, None),  # a prime: no divisor near, each epoch a fresh pass
        (12, 1, 1),
    ],
)
def test_steps_per_call_divides_the_epoch(steps, wanted, chosen):
    from kvae.training import steps_per_call

    assert steps_per_call(steps, wanted) == chosen


def test_fit_moves_steps_per_execution_to_a_divisor_and_keeps_one_iterator():
    x = _binary(100)
    model = small_vae()
    model.compile(steps_per_execution=32)
    model.fit(x, batch_size=32, epochs=2, verbose=0)  # 4 steps per epoch
    assert model.steps_per_execution == 4
    model.compile(steps_per_execution=3)
    model.fit(x, batch_size=10, epochs=1, verbose=0)  # 10 steps: divisors near 3 -> 2
    assert model.steps_per_execution == 2


@pytest.mark.parametrize("jit", [True, False], ids=["fused-xla", "keras-loop"])
def test_fit_on_arrays_leaves_no_dataset_or_iterator_behind(jit):
    """With the cycle collector off, nothing that fit made to feed its steps outlives it: no
    reference cycle holds the copy of the data they read. (fit used to call gc.collect()
    after every call for such cycles: 0.2-0.5 s per fit in a long-running process.)"""
    x = _binary(100)
    model = small_vae()
    model.compile(jit_compile=jit, steps_per_execution=2)

    def alive():
        return sum(isinstance(o, (tf.data.Dataset, tf.data.Iterator)) for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        before = alive()
        model.fit(x, batch_size=32, epochs=2, validation_data=(x[:40],), verbose=0)
        left = alive() - before
    finally:
        gc.enable()
    assert model._train_function_fused == (2 if jit else None)  # the path named in the id
    assert left == 0


@pytest.mark.parametrize(
    "n, batch_size, wanted, per_call",
    [
        (290, 30, 5, 5),  # 10 steps per epoch, the last padded; 5 steps per call
        # 67 steps (the last padded): the only divisor near 32 is 67 itself, as for all of
        # MNIST at batch 128 (469 = 7 x 67). More than 32 batches per call: tf.data refuses
        # a 33rd get_next on one iterator in a function traced without AutoGraph.
        (265, 4, 32, 67),
    ],
)
def test_fused_steps_train_as_keras_own_loop(monkeypatch, n, batch_size, wanted, per_call):
    """fit on arrays runs its steps per call in one XLA loop (kvae.training.fused). It
    must train exactly as Keras' multi-step loop: the same batches in the same order (the
    last one padded with weight-0 rows), one optimizer step each, the same logs. Both paths
    run the same XLA step on the same seeds, so they agree to float32 round-off."""
    from kvae.training import steps as training_steps

    x = _binary(n)

    def run():
        keras.utils.set_random_seed(0)
        model = small_vae()
        model.compile(steps_per_execution=wanted)
        history = model.fit(x, batch_size=batch_size, epochs=2, verbose=0).history
        return model, history

    fused, h_fused = run()
    monkeypatch.setattr(training_steps, "fusable", lambda *args: False)
    plain, h_plain = run()
    assert fused._train_function_fused == per_call and plain._train_function_fused is None
    # A loop that ran too few or too many steps, or one step per call, moves this count.
    steps = -(-n // batch_size)
    assert int(fused.optimizer.iterations) == int(plain.optimizer.iterations) == 2 * steps
    for key in ("loss", "reconstruction", "kl"):
        np.testing.assert_allclose(h_fused[key], h_plain[key], rtol=1e-5, err_msg=key)
    # Feeding one batch to every step of a call, or the batches out of order, changes the
    # weights far beyond round-off.
    for a, b in zip(fused.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fit_binarize_feeds_bernoulli_draws():
    """With an encoder and a decoder that both ignore their input, a Gaussian likelihood's
    loss is c + sum over pixels of f(pixel), f quadratic. Grey pixels of 0.5 score f(0.5);
    their Bernoulli(0.5) draws score f(0) or f(1) with equal chance, on average
    (f(0) + f(1)) / 2, which is above f(0.5) by the curvature: a binarised fit must land
    there, a fit on the raw greys at f(0.5)."""
    n, pixels = 64, 36
    x = np.full((n, 6, 6, 1), 0.5, np.float32)
    model = small_vae(
        encoder=_z_blind_decoder(),
        decoder=_z_blind_decoder(),
        encoder_kwargs=None,
        decoder_kwargs=None,
        likelihood="gaussian",
        kl="analytic",
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0))

    def loss_of(value):
        batch = tf.fill((1, 6, 6, 1), value)
        return float(model.compute_terms(batch, seed=tf.constant([0, 0]))["loss"][0])

    grey, zeros, ones = loss_of(0.5), loss_of(0.0), loss_of(1.0)
    binary = (zeros + ones) / 2
    # Standard error of the epoch's mean loss: each of the n * pixels draws adds f(0) or f(1)
    # with probability 1/2, a spread of |f(1) - f(0)| / 2 per draw, summed over a row's
    # pixels and averaged over n rows: |ones - zeros| / pixels / 2 * sqrt(pixels / n).
    se = abs(ones - zeros) / pixels / 2 * math.sqrt(pixels / n)
    assert binary - grey > 10 * se  # the two outcomes are far apart
    raw = model.fit(x, batch_size=32, epochs=1, verbose=0).history["loss"][0]
    assert raw == pytest.approx(grey, rel=1e-5)
    for mode in ("static", "dynamic"):
        got = model.fit(x, batch_size=32, epochs=1, verbose=0, binarize=mode).history["loss"][0]
        assert abs(got - binary) < 5 * se, (mode, got, binary, grey, se)
    # validation_split (issue 22): the held-out examples are binarised too.
    for mode in ("static", "dynamic"):
        logs = model.fit(
            x, batch_size=16, epochs=1, verbose=0, binarize=mode, validation_split=0.5
        ).history
        half = 5 * se * math.sqrt(2)  # each half holds n / 2 examples
        assert abs(logs["loss"][0] - binary) < half, (mode, logs)
        assert abs(logs["val_loss"][0] - binary) < half, (mode, logs)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(8)
    with pytest.raises(ConfigError, match="`binarize` only where kvae feeds the arrays"):
        model.fit(ds, epochs=1, verbose=0, binarize="static")
    with pytest.raises(ConfigError, match="binarise the arrays first"):
        model.fit(x, epochs=1, verbose=0, binarize="static", class_weight={0: 1.0})
    # Keras' rule: the last fraction is held out (before shuffling).
    halves = np.concatenate([x[: n // 2], np.zeros_like(x[n // 2 :])])
    logs = model.fit(halves, batch_size=16, epochs=1, verbose=0, validation_split=0.5).history
    assert logs["loss"][0] == pytest.approx(grey, rel=1e-5)
    assert logs["val_loss"][0] == pytest.approx(zeros, rel=1e-5)


def test_unconditional_fit_refuses_labels_instead_of_ignoring_them():
    """fit(x, labels) on an unconditional VAE trained on x alone and left the array path
    (issue 22): refused now, before any step, with what to do. fit(x, x), the autoencoder
    habit, still works; so does evaluate(x)."""
    x, labels = _binary(32), np.arange(32) % 3
    model = small_vae()
    model.compile(steps_per_execution=1)
    for call in (model.fit, model.evaluate):
        with pytest.raises(DataError, match=r"no `y` for an unconditional VAE.*condition="):
            call(x, labels, verbose=0)
    assert int(model.optimizer.iterations) == 0
    model.fit(x, x, batch_size=16, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2


def test_iwae_training_loss_is_the_importance_weighted_bound():
    """The IWAE objective's loss, recomputed in numpy from the same K = 8 draws of z:
    -(logsumexp_k log w_k - log K), log w = log p(x|z) + log p(z) - log q(z|x). Forgetting
    the - log K (2.08 nats) or averaging the log weights (the ELBO) is far outside 1e-4."""
    from scipy.special import logsumexp

    x = _binary(16)
    model = small_vae(objective="iwae", num_samples=8)
    seed = tf.constant([3, 4])
    loss = model.compute_terms(tf.constant(x), seed, training=True)["loss"].numpy()
    q = model.encode(x)
    z = q.sample(8, seed=seed)  # the draws iwae_bound makes with this seed
    mu, sd = (np.asarray(v, np.float64) for v in (q.mean(), q.stddev()))
    zz = np.asarray(z, np.float64)  # [K, B, L]
    log_q = np.sum(-0.5 * ((zz - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi), -1)
    log_pz = np.sum(-0.5 * zz**2 - 0.5 * np.log(2 * np.pi), -1)
    logits = np.asarray(model.decoder_params(z), np.float64)[..., 0]  # [K, B, 6, 6, 1]
    xs = x[None].astype(np.float64)
    log_px = np.sum(xs * logits - np.logaddexp(0, logits), axis=(2, 3, 4))
    log_w = log_px + log_pz - log_q
    bound = logsumexp(log_w, axis=0) - np.log(8)
    np.testing.assert_allclose(-loss, bound, rtol=1e-4, atol=1e-4)


def test_iwae_objective_bound_is_tighter_than_elbo():
    x = _binary(512)
    model = small_vae(objective="iwae", num_samples=8)
    model.compile()
    model.fit(x, epochs=1, batch_size=64, verbose=0)
    m = model.evaluate(x, batch_size=512, return_dict=True, verbose=0)
    # loss = -IWAE_8 <= -ELBO on average over 512 examples (Burda et al., Theorem 1).
    assert m["loss"] <= -m["elbo"] + 1e-3


def test_mixed_precision_keeps_distribution_parameters_float32():
    x = _binary(128)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_vae()
        model.compile()
        history = model.fit(x, epochs=1, batch_size=64, verbose=0)
        q = model.encode(x[:4])
        assert q.dtype == tf.float32
        assert model.decode(q.mean()).dtype == tf.float32
        assert model.encoder.dense_layers[0].compute_dtype == "float16"
        assert np.isfinite(history.history["loss"][-1])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_linear_vae_log_likelihood_matches_ppca_closed_form():
    """A linear decoder with a Gaussian likelihood is probabilistic PCA: p(x) =
    N(b, W W^T + s^2 I) exactly. The IWAE estimate is a lower bound that approaches it."""
    d, latent = 5, 2
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, d)).astype("float32") @ rng.standard_normal((d, d)).astype(
        "float32"
    )
    keras.utils.set_random_seed(0)
    model = kvae.VAE(
        encoder="mlp",
        decoder="mlp",
        data_shape=(d,),
        latent_dim=latent,
        encoder_kwargs={"hidden": []},
        decoder_kwargs={"hidden": []},
        likelihood="gaussian",
        likelihood_kwargs={"scale": "scalar"},
        seed=0,
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.fit(x, epochs=30, batch_size=50, verbose=0)
    w, b = model.likelihood_head.projection.get_weights()  # w: (latent, d)
    s2 = float(model.likelihood_head.sigma().numpy()) ** 2
    cov = w.T @ w + s2 * np.eye(d)
    diff = x - b
    _, logdet = np.linalg.slogdet(cov)
    exact = -0.5 * (
        d * np.log(2 * np.pi) + logdet + np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff)
    )
    elbo = model.log_likelihood(x, num_samples=1, seed=1)
    iw = model.log_likelihood(x, num_samples=2000, seed=2)
    # Per-example estimates are noisy; compare means over 200 examples. The K=1 mean has an
    # MC standard error ~ std/sqrt(200); the gap ELBO < log p(x) is the average KL to the
    # true posterior, which an amortised linear encoder does not close exactly.
    assert elbo.mean() < exact.mean() + 3 * elbo.std() / np.sqrt(len(x))
    assert iw.mean() <= exact.mean() + 0.01
    assert exact.mean() - iw.mean() < 0.05 * abs(exact.mean() - elbo.mean()) + 0.02
    assert iw.mean() > elbo.mean()


def test_a_conv_decoder_fits_an_odd_image_size():
    """7x7 used to be refused ("divisible"): the conv decoder now starts from ceil(7 / 4)
    and crops its output back to the data's size."""
    model = kvae.VAE(data_shape=(7, 7, 1), encoder="mlp", decoder="conv", latent_dim=2)
    p = model.decode(np.zeros((3, 2), np.float32))
    assert tuple(p.event_shape) == (7, 7, 1) and tuple(p.batch_shape) == (3,)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"latent_dim": 0}, ConfigError, "latent_dim"),
        ({"encoder": "mpl"}, UnknownComponentError, "mlp"),
        ({"likelihood": "bernouli"}, UnknownComponentError, "bernoulli"),
        ({"encoder": "conv", "decoder_kwargs": None}, ConfigError, "Unrecognized keyword"),
        ({"objective": "vi"}, ConfigError, "objective"),
        ({"beta": -1}, ConfigError, "beta"),
        ({"num_samples": 0}, ConfigError, "num_samples"),
        ({"encoder_kwargs": {"hidden": "big"}}, ConfigError, "hidden"),
    ],
)
def test_bad_construction_raises_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        small_vae(**kwargs)


def test_decoder_that_cannot_feed_the_head():
    class Broken(keras.layers.Layer):
        def __init__(self, data_shape=None, **kw):
            super().__init__(**kw)

        def call(self, z):
            return keras.ops.reshape(z, (2, -1))  # loses the batch axis

    with pytest.raises(ConfigError, match="decoder"):
        small_vae(decoder=Broken())


@pytest.mark.parametrize(
    "x, match",
    [
        (np.full((8, 6, 6, 1), 2.0, "float32"), r"values in \[0.0, 1.0\]"),
        (np.full((8, 6, 6, 1), np.nan, "float32"), "NaN"),
        (np.zeros((8, 36), "float32"), "reshape"),
        (np.zeros((8, 5, 5, 1), "float32"), r"shape \(n, 6, 6, 1\)"),
    ],
)
def test_bad_data_is_refused_before_training(x, match):
    model = small_vae()
    model.compile()
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(DataError, match=match):
        model.fit(x, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))


def test_loss_argument_is_refused():
    with pytest.raises(ConfigError, match="loss"):
        small_vae().compile(loss="mse")


def test_old_shape_keywords_still_work_with_a_deprecation_warning():
    """The shape of one example is `data_shape` everywhere; VAE(input_shape=...), a head's
    event_shape=... and a plugin head whose constructor still takes `event_shape` keep
    working, each with a DeprecationWarning."""
    from kvae.heads.likelihoods import Bernoulli, Gaussian

    with pytest.warns(DeprecationWarning, match="input_shape"):
        model = kvae.VAE(input_shape=(6, 6, 1), latent_dim=2)
    assert model.data_shape == (6, 6, 1) and model.get_config()["data_shape"] == [6, 6, 1]
    with pytest.warns(DeprecationWarning, match="event_shape"):
        head = Gaussian(event_shape=(3,), scale="scalar")
    assert head.data_shape == (3,) and head.get_config()["data_shape"] == [3]

    class OldHead(Bernoulli):
        def __init__(self, event_shape, **kwargs):
            super().__init__(event_shape, **kwargs)

    kvae.registry.register("likelihoods", "old-head-for-test")(OldHead)
    try:
        with pytest.warns(DeprecationWarning, match="takes `event_shape`"):
            model = small_vae(likelihood="old-head-for-test")
        assert model.likelihood_head.data_shape == (6, 6, 1)
    finally:
        kvae.registry.unregister("likelihoods", "old-head-for-test")
    # A model saved with the old key loads, silently.
    config = dict(small_vae().get_config())
    config["input_shape"] = config.pop("data_shape")
    assert kvae.VAE.from_config(config).data_shape == (6, 6, 1)


def _exact_linear_gaussian_vae(seed=0):
    """A linear VAE whose weights are set to a known linear-Gaussian model, p(z) = N(0, I),
    p(x|z) = N(W z + b, s^2 I), with W's rows orthogonal, and whose encoder is set to the
    exact posterior: precision P = I + W W^T / s^2 (diagonal here), mean
    P^-1 W (x - b) / s^2. Returns the model and a function x -> exact log p(x)."""
    d, latent, s = 5, 2, 0.7
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    w = (basis[:, :latent] * np.array([2.0, 0.5])).T  # (latent, d), orthogonal rows
    b = rng.standard_normal(d)
    precision = 1 + np.sum(w**2, axis=1) / s**2  # the diagonal of P
    model = kvae.VAE(
        data_shape=(d,),
        latent_dim=latent,
        encoder_kwargs={"hidden": []},
        decoder_kwargs={"hidden": []},
        posterior_kwargs={"scale": "exp"},
        likelihood="gaussian",
        likelihood_kwargs={"scale": "fixed", "init_scale": s},
        seed=seed,
    )
    gain = w.T / precision / s**2  # (d, latent): x -> posterior mean
    kernel = np.concatenate([gain, np.zeros((d, latent))], axis=1)
    bias = np.concatenate([-b @ gain, -np.log(precision)])  # log-variances = -log P_ii
    model.posterior_head.projection.set_weights([kernel, bias])
    model.likelihood_head.projection.set_weights([w, b])
    cov = w.T @ w + s**2 * np.eye(d)
    inv, (_, logdet) = np.linalg.inv(cov), np.linalg.slogdet(cov)

    def log_px(x):
        diff = x - b
        quad = np.einsum("nd,de,ne->n", diff, inv, diff)
        return -0.5 * (d * np.log(2 * np.pi) + logdet + quad)

    return model, log_px


def test_log_likelihood_equals_log_px_with_the_exact_posterior():
    """With q(z|x) the exact posterior every importance weight equals p(x), so the estimate
    is log p(x) for any K and any draw: two-sided, per example, to float32 rounding."""
    model, log_px = _exact_linear_gaussian_vae()
    x = np.random.default_rng(1).standard_normal((40, 5)).astype("float32") * 2
    exact = log_px(x.astype(np.float64))
    for k in (1, 7):
        got = model.log_likelihood(x, num_samples=k, seed=3)
        np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-4)


def test_log_likelihood_does_not_depend_on_chunk_size():
    """Chunks only split each example's K samples. With the exact posterior every chunking
    must give log p(x) exactly (a chunk combined without its share of - log K would not);
    on a trained-free small VAE, chunk sizes 1 and K draw different samples, so the two
    estimates agree within the Monte Carlo noise of their per-example differences."""
    model, log_px = _exact_linear_gaussian_vae()
    x = np.random.default_rng(2).standard_normal((30, 5)).astype("float32")
    for chunk in (1, 3, 10):
        got = model.log_likelihood(x, num_samples=10, batch_size=8, chunk_size=chunk, seed=4)
        np.testing.assert_allclose(got, log_px(x.astype(np.float64)), rtol=1e-4, atol=1e-4)
    model, xb = small_vae(), _binary(64)
    a = model.log_likelihood(xb, num_samples=10, chunk_size=1, seed=5)
    b = model.log_likelihood(xb, num_samples=10, chunk_size=10, seed=6)
    diff = a - b
    # Mean of 64 independent differences: 5 standard errors, from their own spread.
    assert abs(diff.mean()) < 5 * diff.std(ddof=1) / np.sqrt(len(diff)) + 1e-6


def _steps_shown(text):
    """The (current, target) pairs a Keras progress bar printed."""
    return [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+)", text)]


def test_evaluate_progress_never_counts_past_the_last_step(capsys):
    """fit moved steps_per_execution to 67 on MNIST; Keras then reported each compiled call as
    67 steps, the last one too: 67/313 ... 335/313."""
    model = small_vae()
    model.compile(jit_compile=False, steps_per_execution=67)
    x = _binary(313, seed=4)
    state = model.seed_generator.state.numpy()
    expected = model.evaluate(x, batch_size=1, verbose=0, return_dict=True)
    capsys.readouterr()
    model.seed_generator.state.assign(state)  # the same latent draws again
    got = model.evaluate(x, batch_size=1, verbose=1, return_dict=True)
    shown = _steps_shown(capsys.readouterr().out)
    assert shown and all(target == 313 for _, target in shown)
    assert max(current for current, _ in shown) == 313  # the last update, and never beyond
    for key in expected:  # the bar changes what is shown, not what is computed
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, err_msg=key)
    # the same for predict; and a ready CallbackList is used as given
    model.predict(x, batch_size=1, verbose=1)
    assert max(c for c, _ in _steps_shown(capsys.readouterr().out)) == 313


def test_log_likelihood_progress_bar(capsys):
    model = small_vae()
    x = _binary(50, seed=5)
    quiet = model.log_likelihood(x, num_samples=8, batch_size=10, chunk_size=3, seed=1)
    assert capsys.readouterr().out == ""  # verbose=0: silent
    loud = model.log_likelihood(x, num_samples=8, batch_size=10, chunk_size=3, seed=1, verbose=2)
    out = capsys.readouterr().out
    np.testing.assert_array_equal(loud, quiet)  # progress does not change the estimate
    assert _steps_shown(out) == [(5, 5)]  # verbose=2: one line, 5 batches of 10
    # "auto" is quiet when stdout is not a terminal (pytest's capture is not)
    model.log_likelihood(x[:10], num_samples=2, batch_size=10, verbose="auto")
    assert capsys.readouterr().out == ""
    with pytest.raises(ConfigError, match="verbose"):
        model.log_likelihood(x, num_samples=2, verbose="loud")


def test_a_stopped_epoch_shows_the_steps_it_ran(capsys):
    """Ctrl-C or a NaN stop ends an epoch early: its bar must not read 469/469."""

    class StopAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 >= 3:
                self.model.stop_training = True

    model = small_vae()
    model.compile(jit_compile=False, steps_per_execution=1)
    x = _binary(64, seed=6)
    model.fit(x, batch_size=8, epochs=2, verbose=2, callbacks=[StopAt()], shuffle=False)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "/8" in ln]
    assert len(lines) == 1 and lines[0].startswith("3/8"), lines  # one epoch line: 3 of 8
    model.fit(x, batch_size=8, epochs=1, verbose=2)  # a complete epoch still reads 8/8
    assert [ln[:3] for ln in capsys.readouterr().out.splitlines() if "/8" in ln] == ["8/8"]
