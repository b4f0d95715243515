"""Property-based tests (hypothesis): random configs, shapes, dtypes and values thrown at
``kvae.VAE``, its fit/evaluate, the data loaders and the ``kvae train`` option parser. Each
case either works or raises one of kvae's own errors (a ``KvaeError``; for the command line,
exit code 1 or 2 and no traceback): never an exception from deep inside TensorFlow.

Most cases start from valid arguments and replace a few of them with random values, so both
deep paths (unusual but valid models and data) and each bad argument alone are reached.

Bounded: a fixed number of examples each (derandomized: the same cases on every run, so a
failure reproduces), no per-example deadline (the first call of a shape traces a graph), about
half a minute in all on 2 cores. Every case is small; a hang cannot be caught in-process.
"""

import os
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kvae
from kvae.errors import KvaeError

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=4),
    st.lists(st.integers(-1, 3), max_size=3),
)


def _mutate(draw, valid, bad, max_changes=2):
    """Valid arguments with up to ``max_changes`` of them replaced by bad values."""
    args = {key: draw(strategy) for key, strategy in valid.items()}
    for key in draw(st.lists(st.sampled_from(sorted(bad)), max_size=max_changes, unique=True)):
        args[key] = draw(bad[key])
    return args


# ----- the VAE constructor -------------------------------------------------------------------
VAE_VALID = {
    "latent_dim": st.integers(1, 4),
    "input_shape": st.one_of(
        st.tuples(st.integers(1, 12)),
        st.tuples(st.integers(4, 12), st.integers(4, 12), st.sampled_from([1, 3])),
        st.tuples(st.integers(1, 5), st.integers(1, 5)),
    ),
    "encoder": st.sampled_from(["mlp", "conv"]),
    "decoder": st.sampled_from(["mlp", "conv"]),
    "posterior": st.sampled_from(["gaussian", "full-gaussian"]),
    "likelihood": st.sampled_from(
        ["bernoulli", "continuous-bernoulli", "gaussian", "discretized-logistic"]
    ),
    "prior": st.sampled_from(["standard-normal", "mixture"]),
    "beta": st.floats(0, 4),
    "num_samples": st.integers(1, 3),
    "objective": st.just("elbo"),
    "kl": st.sampled_from(["auto", "analytic", "mc"]),
}
VAE_BAD = {
    "latent_dim": st.one_of(st.integers(-2, 0), junk),
    "input_shape": st.one_of(st.lists(st.integers(-1, 6), max_size=5).map(tuple), junk),
    "encoder": st.sampled_from(["nope", "", "MLP", None, 3, "conv:mlp"]),
    "decoder": st.sampled_from(["nope", "", None, 3.5]),
    "posterior": st.sampled_from(["bernoulli", "x", None]),
    "likelihood": st.sampled_from(["mlp", "normal", None]),
    "prior": st.sampled_from(["gaussian", "", None]),
    "beta": st.one_of(st.floats(-5, -1e-9), junk),
    "num_samples": st.one_of(st.integers(-2, 0), junk),
    "objective": st.sampled_from(["iwae", "ELBO", "", None, 1]),
    "kl": st.sampled_from(["exact", None, True]),
}


@FUZZ
@given(args=st.composite(lambda draw: _mutate(draw, VAE_VALID, VAE_BAD))())
def test_vae_constructor_works_or_raises_a_kvae_error(args):
    try:
        model = kvae.VAE(**args)
    except KvaeError as err:
        event(f"refused: {type(err).__name__}")
        return
    event("built")
    x = np.full((2, *model.data_shape), 0.5, np.float32)
    out = model(x)
    assert tuple(out.shape) == (2, *model.data_shape)


# ----- data given to fit and evaluate ----------------------------------------------------------
@pytest.fixture(scope="module")
def small_model():
    model = kvae.VAE(input_shape=(4, 4, 1), latent_dim=2, seed=0)
    model.compile(jit_compile=False, steps_per_execution=1)
    return model


good_shape = st.tuples(st.integers(1, 6), st.just(4), st.just(4), st.just(1))
shapes = st.one_of(
    good_shape,
    good_shape,
    st.tuples(st.integers(0, 5), st.just(4), st.just(4), st.just(1)),
    hnp.array_shapes(min_dims=0, max_dims=4, max_side=5),
)
dtypes = st.one_of(
    st.just(np.dtype(np.float32)),
    st.sampled_from(
        [np.float32, np.float64, np.float16, np.uint8, np.int8, np.int64, np.bool_]
    ).map(np.dtype),
    st.sampled_from([np.dtype("U2"), np.dtype("O"), np.dtype(np.complex64)]),
)


@st.composite
def any_data(draw):
    dtype = draw(dtypes)
    shape = draw(shapes)
    if dtype.kind == "U":
        return np.full(shape, "a", dtype)
    if dtype.kind == "O":
        return np.full(shape, None, dtype)
    if dtype.kind == "c":
        return np.full(shape, 0.5 + 0.5j, dtype)
    if dtype.kind == "f":
        elements = st.floats(-2, 2, width=dtype.itemsize * 8) | st.sampled_from(
            [np.nan, np.inf, -np.inf, 0.0, 1.0]
        )
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def valid_data(draw):
    """What a Bernoulli VAE of input shape (4, 4, 1) accepts: values in [0, 1]."""
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.uint8, np.int64]))
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        elements = st.floats(0, 1, width=dtype.itemsize * 8)
    else:
        elements = st.integers(0, 1)
    return draw(hnp.arrays(dtype, draw(good_shape), elements=elements))


data = st.one_of(valid_data(), any_data())


@FUZZ
@given(x=data, use_fit=st.booleans(), batch_size=st.sampled_from([1, 4, None]))
def test_fit_and_evaluate_work_or_raise_a_kvae_error(small_model, x, use_fit, batch_size):
    try:
        if use_fit:
            history = small_model.fit(x, epochs=1, batch_size=batch_size, verbose=0)
            assert np.isfinite(history.history["loss"][-1])
        else:
            scores = small_model.evaluate(x, batch_size=batch_size, verbose=0, return_dict=True)
            assert np.isfinite(scores["loss"])
        event("trained" if use_fit else "evaluated")
    except KvaeError as err:
        event(f"refused: {type(err).__name__}")


# ----- data loaders -----------------------------------------------------------------------------
@FUZZ
@given(name=st.text(string.ascii_letters + string.digits + "-_.:/ \\\x00é", max_size=12))
def test_load_by_any_name_works_or_raises_a_kvae_error(name, tmp_path, monkeypatch):
    from kvae import datasets

    if name in datasets.names():
        return  # a real data set: loading it is tested elsewhere (and mnist is large)
    monkeypatch.chdir(tmp_path)  # relative paths land in an empty folder
    try:
        datasets.load(name)
    except KvaeError:
        pass


@FUZZ
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.sampled_from([b"PK\x03\x04garbage", b"\x93NUMPY\x01\x00garbage", b"\x1f\x8b\x08"]),
    ),
    suffix=st.sampled_from([".npz", ".npy", ".pkl.gz", ""]),
)
def test_garbage_files_are_refused_with_a_kvae_error(content, suffix, tmp_path):
    from kvae import datasets

    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(content)
    with pytest.raises(KvaeError):
        datasets.load(str(path))


@FUZZ
@given(
    arrays=st.dictionaries(
        st.sampled_from(["x", "y", "x_train", "x_test", "y_train", "y_test", "other"]),
        hnp.arrays(
            st.sampled_from([np.float32, np.uint8, np.int64, np.bool_]).map(np.dtype),
            hnp.array_shapes(min_dims=0, max_dims=4, max_side=4),
        ),
        max_size=4,
    ),
    test_fraction=st.one_of(st.floats(-0.5, 1.5), st.just(0.1)),
)
def test_any_npz_content_loads_or_raises_a_kvae_error(arrays, test_fraction, tmp_path):
    from kvae import datasets

    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    try:
        (x_train, _), (x_test, _) = datasets.load(str(path), test_fraction=test_fraction)
    except KvaeError as err:
        event(f"refused: {type(err).__name__}")
        return
    event("loaded")
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32


@FUZZ
@given(
    x=data,
    batch_size=st.one_of(st.integers(1, 9), st.integers(-1, 9), junk),
    binarize=st.sampled_from([None, "static", "dynamic", "yes", 1]),
    seed=st.one_of(st.none(), st.integers(0, 2**40), st.integers(-1, 2**40), junk),
    shuffle=st.booleans(),
)
def test_make_dataset_works_or_raises_a_kvae_error(x, batch_size, binarize, seed, shuffle):
    from kvae.datasets import make_dataset

    try:
        dataset = make_dataset(x, batch_size, shuffle=shuffle, binarize=binarize, seed=seed)
    except KvaeError as err:
        event(f"refused: {type(err).__name__}")
        return
    event("made")
    for batch in dataset.take(2):
        assert batch.dtype.name == "float32"


# ----- the command line -------------------------------------------------------------------------
junk_values = st.one_of(
    st.integers(-3, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "none", "{}", '{"a": 1}', "[1]", "{bad", "nan", "-0", "1e999"]),
    st.text(string.printable, max_size=6),
)
CLI_VALID = {  # option -> what a user would type
    "--dataset": st.sampled_from(["digits", "mnist", "data.npz"]),
    "--dataset-kwargs": st.sampled_from(["{}", '{"test_fraction": 0.2}']),
    "--encoder": st.sampled_from(["mlp", "conv"]),
    "--encoder-kwargs": st.sampled_from(["{}", '{"hidden": [64]}']),
    "--decoder": st.sampled_from(["mlp", "conv"]),
    "--posterior": st.sampled_from(["gaussian", "full-gaussian"]),
    "--likelihood": st.sampled_from(["bernoulli", "gaussian"]),
    "--prior": st.sampled_from(["standard-normal", "mixture"]),
    "--latent-dim": st.integers(1, 64).map(str),
    "--beta": st.sampled_from(["0", "0.5", "1", "4"]),
    "--kl-warmup-epochs": st.integers(0, 5).map(str),
    "--kl": st.sampled_from(["auto", "analytic", "mc"]),
    "--objective": st.sampled_from(["elbo", "iwae"]),
    "--num-samples": st.integers(1, 8).map(str),
    "--epochs": st.integers(1, 100).map(str),
    "--batch-size": st.integers(1, 512).map(str),
    "--learning-rate": st.sampled_from(["1e-3", "0.01", "3e-4"]),
    "--optimizer": st.sampled_from(["adam", "adamw", "sgd", "rmsprop"]),
    "--clip-norm": st.sampled_from(["1", "5.0"]),
    "--seed": st.integers(0, 2**31).map(str),
    "--steps-per-execution": st.integers(1, 64).map(str),
    "--binarize": st.sampled_from(["none", "static", "dynamic"]),
    "--validation": st.sampled_from(["test", "none", "0.1"]),
    "--max-train-examples": st.integers(1, 10**5).map(str),
    "--image-every": st.integers(0, 5).map(str),
    "--strategy": st.sampled_from(["default", "mirrored", "multi-worker", "tpu"]),
    "--on-nan": st.sampled_from(["stop", "skip"]),
    "--free-bits": st.sampled_from(["0", "0.1", "1"]),
    "--checkpoint-every": st.integers(1, 5).map(str),
    "--progress": st.sampled_from(["bar", "epoch", "none"]),
    "--jit": st.sampled_from(["on", "off", "auto"]),
    "--precision": st.sampled_from(["float32", "bf16"]),
}
CLI_BAD_ONLY = ["--resume", "--config", "--bogus-option"]
FLAGS = ["--no-jit", "--projector", "--no-projector"]


@st.composite
def cli_arguments(draw):
    args = []
    for option in draw(st.lists(st.sampled_from(sorted(CLI_VALID)), max_size=6, unique=True)):
        args += [option, draw(CLI_VALID[option])]
    for option in draw(st.lists(st.sampled_from(sorted(CLI_VALID) + CLI_BAD_ONLY), max_size=2)):
        args += [option, draw(junk_values)]
    return args + draw(st.lists(st.sampled_from(FLAGS), max_size=2))


class _FakeResult:
    def summary(self):
        return "fake run"


@FUZZ
@given(options=cli_arguments())
def test_cli_train_options_parse_or_fail_cleanly(options, tmp_path, monkeypatch):
    """`kvae train` with random options. Training itself is replaced by a stub (it is tested
    elsewhere): what is checked is option parsing, the config built from the options, and
    their errors."""
    from click.testing import CliRunner

    import kvae.train
    from kvae.cli import main
    from kvae.config import TrainConfig

    calls = []

    def fake_train(config, run_dir=None, **kwargs):
        assert isinstance(config, TrainConfig)
        calls.append(config)
        return _FakeResult()

    monkeypatch.setattr(kvae.train, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    args = ["train", *options]
    result = CliRunner().invoke(main, args, prog_name="kvae")
    event(f"exit code {result.exit_code}")
    assert result.exit_code in (0, 1, 2), (args, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        result.exception,
    )
    assert "Traceback" not in result.output
    assert (result.exit_code == 0) == bool(calls), (args, result.output)
    assert not os.listdir(tmp_path)  # parsing writes nothing
