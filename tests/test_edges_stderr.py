"""``LogLikelihood.summary``'s Monte Carlo error is the error of the mean (issue 22, item 6)."""

import keras
import numpy as np

import kvae
from kvae.evaluation import LogLikelihood
from kvae.evaluation.iwae import iwae_log_likelihood


def test_mean_mc_stderr_is_the_known_formula():
    se = np.array([0.3, 0.4, 1.2, 0.0])
    ll = LogLikelihood(np.array([-1.0, -2.0, -3.0, -4.0]), se, "iwae")
    m = ll.summary()
    # Independent errors: Var(mean) = sum se_i^2 / n^2.
    assert np.isclose(m["log_likelihood_mean_mc_stderr"], np.sqrt(0.09 + 0.16 + 1.44) / 4)
    assert np.isclose(m["log_likelihood_example_mc_stderr_rms"], np.sqrt((0.09 + 0.16 + 1.44) / 4))
    assert "log_likelihood_mc_stderr" not in m  # the old, misleading name is gone


def test_mean_mc_stderr_matches_the_spread_of_the_mean_over_seeds():
    # The mean of n IWAE estimates, recomputed with R seeds on the same examples, spreads by
    # the Monte Carlo error of the mean; the per-example RMS is sqrt(n) = 6.3 times larger.
    keras.utils.set_random_seed(0)
    model = kvae.VAE(
        data_shape=(3,),
        latent_dim=1,
        encoder_kwargs={"hidden": []},
        decoder_kwargs={"hidden": []},
        likelihood="gaussian",
        seed=0,
    )
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((200, 3)) @ rng.standard_normal((3, 3))).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.fit(data, epochs=10, batch_size=50, verbose=0)  # q near p(z|x): light-tailed weights
    x = data[:40]
    runs = [iwae_log_likelihood(model, x, num_samples=50, batch_size=40, seed=s) for s in range(20)]
    spread = np.std([r.mean() for r in runs], ddof=1)
    claimed = np.mean([r.mean_mc_stderr() for r in runs])
    # The sample std of R = 20 values has relative standard error 1 / sqrt(2 (R - 1)) = 0.16;
    # 3 of those (plus the delta method's own bias at K = 50) bound the ratio.
    assert 0.5 < spread / claimed < 1.6, (spread, claimed)
