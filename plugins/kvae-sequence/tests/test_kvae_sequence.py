"""kvae-sequence against kvae's component contracts (kvae.testing), the way a plugin author
tests a plugin: one call per component, through the names its entry points declare."""

import inspect

import numpy as np
import pytest

import kvae
from kvae import registry, testing
from kvae.errors import ConfigError, DataError

LENGTH = 12
VOCAB = 16  # kvae_sequence.DEFAULT_VOCAB_SIZE: what kvae builds when no kwargs are given
SMALL_ENCODER = {"units": 8, "embed_dim": 4}
SMALL_DECODER = {"units": 8}


def _tokens(n, shape=(LENGTH,), seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n, *shape)).astype("float32")


@pytest.fixture
def token_data(monkeypatch):
    """Extra arguments that make kvae.testing use token data for the categorical likelihood.

    kvae.testing's own random data (k/256 in [0, 1)) suits image likelihoods, and the
    categorical head rightly refuses it. A kvae.testing whose checks take ``data=`` gets the
    tokens that way; an older one has its ``sample_data`` answer tokens for "categorical".
    """
    if "data" in inspect.signature(testing.check_decoder).parameters:
        return {"data": _tokens(16)}
    original = testing.sample_data

    def sample_data(data_shape, likelihood="bernoulli", n=8, seed=0):
        if likelihood == "categorical":
            return _tokens(n, tuple(data_shape), seed)
        return original(data_shape, likelihood, n=n, seed=seed)

    monkeypatch.setattr(testing, "sample_data", sample_data)
    return {}


def test_entry_points_are_registered():
    assert "gru" in registry.names("encoders")
    assert "gru" in registry.names("decoders")
    assert "categorical" in registry.names("likelihoods")
    assert "toy-sequences" in registry.names("datasets")
    assert registry.provider("likelihoods", "categorical")[0] == "kvae-sequence"


# -- contracts --------------------------------------------------------------------------------


def test_encoder_contract(token_data):
    testing.check_encoder(
        "gru",
        data_shape=(LENGTH,),
        kwargs=SMALL_ENCODER,
        likelihood="categorical",
        **token_data,
    )


def test_decoder_contract(token_data):
    testing.check_decoder(
        "gru",
        data_shape=(LENGTH,),
        kwargs=SMALL_DECODER,
        likelihoods=("categorical",),
        **token_data,
    )


def test_decoder_contract_on_a_real_valued_time_series():
    # (T, 1) series with a Gaussian likelihood: the decoder's (T, F) output is projected
    # step by step by kvae's own head.
    testing.check_decoder(
        "gru", data_shape=(LENGTH, 1), kwargs=SMALL_DECODER, likelihoods=("gaussian",)
    )


@pytest.mark.parametrize("data_shape", [(LENGTH,), (LENGTH, 1)])
def test_likelihood_contract(token_data, data_shape):
    # flat features (projected densely) and one feature row per step (projected per step)
    kwargs = {k: v for k, v in token_data.items() if k != "data"}
    if "data" in token_data:
        kwargs["data"] = _tokens(8, data_shape)
    testing.check_likelihood(
        "categorical", data_shape=data_shape, feature_shapes=((16,), (LENGTH, 5)), **kwargs
    )


# -- the categorical head ---------------------------------------------------------------------


def _head(data_shape=(LENGTH,), **kwargs):
    return registry.get("likelihoods", "categorical")(data_shape=data_shape, **kwargs)


def test_categorical_projects_per_step_features_position_by_position():
    head = _head()
    params = head(np.zeros((2, LENGTH, 5), "float32"))
    assert tuple(params.shape) == (2, LENGTH, VOCAB)
    assert tuple(head.projection.kernel.shape) == (5, VOCAB)  # shared over positions


def test_categorical_log_prob_is_the_sum_of_per_token_log_softmax():
    head = _head(vocab_size=5)
    logits = np.random.default_rng(1).standard_normal((3, LENGTH, 5)).astype("float32")
    x = _tokens(3) % 5
    got = np.asarray(head.distribution(logits).log_prob(head.prepare(x)))
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.take_along_axis(log_softmax, x.astype(int)[..., None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(head.mean(logits), logits.argmax(-1))


@pytest.mark.parametrize(
    ("bad", "what"),
    [(0.5, "integer tokens"), (-1.0, "integer tokens"), (16.0, "integer tokens")],
)
def test_categorical_refuses_data_that_are_not_tokens(bad, what):
    x = _tokens(4)
    x[2, 3] = bad
    with pytest.raises(DataError, match=what) as info:
        _head().check_data(x)
    assert "vocab_size=16" in str(info.value)
    _head().check_data(_tokens(4))  # tokens pass


def test_vae_refuses_non_token_data_before_training():
    model = kvae.VAE(
        encoder="gru",
        decoder="gru",
        likelihood="categorical",
        data_shape=(LENGTH,),
        latent_dim=2,
        encoder_kwargs=SMALL_ENCODER,
        decoder_kwargs=SMALL_DECODER,
    )
    with pytest.raises(DataError, match="integer tokens"):
        model.fit(_tokens(8) / VOCAB, epochs=1, verbose=0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data_shape": (28, 28, 1)}, "sequence shape"),
        ({"data_shape": (LENGTH, 2)}, "sequence shape"),
        ({"data_shape": (LENGTH,), "vocab_size": 1}, "vocab_size"),
        ({"data_shape": (LENGTH,), "units": 0}, "units"),
    ],
)
def test_bad_encoder_arguments_are_refused_clearly(kwargs, expected):
    with pytest.raises(ConfigError, match=expected):
        registry.get("encoders", "gru")(**kwargs)


# -- the data set -----------------------------------------------------------------------------


def test_toy_sequences_are_deterministic_tokens():
    (x_train, y_train), (x_test, y_test) = kvae.datasets.load(
        "toy-sequences", n_train=50, n_test=10
    )
    assert x_train.shape == (50, 16) and x_test.shape == (10, 16)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert set(np.unique(x_train)) <= set(range(VOCAB))
    assert set(np.unique(y_train)) <= {0, 1, 2, 3}
    (again, _), _ = kvae.datasets.load("toy-sequences", n_train=50, n_test=10)
    np.testing.assert_array_equal(x_train, again)


def test_toy_sequences_follow_their_patterns_without_noise():
    load = registry.get("datasets", "toy-sequences")
    (x, y), _ = load(n_train=200, n_test=1, noise=0.0, vocab_size=7, length=9)
    diffs = np.diff(x, axis=1) % 7
    np.testing.assert_array_equal(diffs[y == 0], 1)
    np.testing.assert_array_equal(diffs[y == 1], 6)
    np.testing.assert_array_equal(diffs[y == 2], 2)
    alternate = x[y == 3]
    np.testing.assert_array_equal(alternate[:, 2:], alternate[:, :-2])


@pytest.mark.parametrize(
    "kwargs", [{"n_train": 0}, {"length": 1}, {"vocab_size": 1}, {"noise": 1.0}, {"seed": -1}]
)
def test_toy_sequences_refuse_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        kvae.datasets.load("toy-sequences", **kwargs)
