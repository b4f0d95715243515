"""Saving and loading: exact restore, also in a fresh process, and clear errors."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kvae
from kvae.errors import ModelFileError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rng = np.random.default_rng(0)
    model = kvae.VAE(
        data_shape=(8, 8, 1),
        latent_dim=3,
        encoder="conv",
        decoder="conv",
        encoder_kwargs={"filters": [4, 8]},
        decoder_kwargs={"filters": [8, 4]},
        posterior="full-gaussian",
        prior="mixture",
        prior_kwargs={"num_components": 3},
        likelihood="continuous-bernoulli",
        beta=0.5,
        seed=0,
    )
    x = (rng.random((256, 8, 8, 1)) < 0.3).astype("float32")
    model.compile()
    model.fit(x, epochs=1, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("saved") / "vae.keras"
    model.save(path)
    return model, x, path


def test_round_trip_restores_everything(trained):
    model, x, path = trained
    loaded = kvae.load_model(path)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(loaded.prior.get_weights()[1], model.prior.get_weights()[1])
    assert float(loaded.beta.numpy()) == 0.5
    # The optimizer state came back: training continues from where it was.
    assert loaded.optimizer is not None and int(loaded.optimizer.iterations.numpy()) == 4
    loaded.fit(x, epochs=1, batch_size=64, verbose=0)


def test_keras_load_model_after_import_kvae(trained):
    model, x, path = trained
    loaded = keras.models.load_model(path)
    assert type(loaded) is kvae.VAE


def test_fresh_process_gives_identical_outputs(trained, tmp_path):
    model, x, path = trained
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, kvae
        m = kvae.load_model({str(path)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "y.npy")!r}, m.predict(x, verbose=0))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300, env=env)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0))


def test_truncated_file(trained, tmp_path):
    _, _, path = trained
    data = path.read_bytes()
    bad = tmp_path / "bad.keras"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a zip archive|damaged"):
        kvae.load_model(bad)


def test_foreign_and_missing_files(tmp_path):
    foreign = tmp_path / "model.keras"
    foreign.write_text("hello")
    with pytest.raises(ModelFileError, match="not a zip archive"):
        kvae.load_model(foreign)
    import zipfile

    other = tmp_path / "other.keras"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("readme.txt", "not a model")
    with pytest.raises(ModelFileError, match="config.json"):
        kvae.load_model(other)
    with pytest.raises(ModelFileError, match="no such file"):
        kvae.load_model(tmp_path / "nope.keras")
    with pytest.raises(ModelFileError, match="folder"):
        kvae.load_model(tmp_path)
