"""Bad numbers: NaN/inf data is refused before training; a loss that turns NaN or inf during
training stops it with a message naming the bad term and the step, and the last good
checkpoint stays loadable."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.checkpointing import training_callbacks
from kvae.errors import ConfigError, DataError, TrainingError

N, BATCH = 128, 16  # 8 steps per epoch
X = np.random.default_rng(0).random((N, 8, 8, 1)).astype("float32")


@keras.saving.register_keras_serializable(package="kvae_tests")
class Fuse(keras.layers.Layer):
    """Multiplies its input by a non-trainable ``fuse`` (1.0); a test blows it to inf."""

    def build(self, input_shape):
        self.fuse = self.add_weight(shape=(), initializer="ones", trainable=False, name="fuse")

    def call(self, x):
        return x * self.fuse


class BlowFuse(keras.callbacks.Callback):
    """At the start of epoch ``epoch`` (0-based) set every Fuse of the model to inf."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            for layer in _all_layers(self.model):
                if isinstance(layer, Fuse):
                    layer.fuse.assign(np.inf)


def _all_layers(layer):
    """``layer`` and every layer inside it, through the public ``layers`` lists."""
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _all_layers(inner)


def _model(where=None, optimizer="adam"):
    kwargs = dict(data_shape=(8, 8, 1), latent_dim=2, seed=0)
    if where == "decoder":
        kwargs["decoder"] = keras.Sequential([keras.layers.Dense(16, activation="tanh"), Fuse()])
    elif where == "encoder":
        kwargs["encoder"] = keras.Sequential(
            [keras.layers.Flatten(), keras.layers.Dense(16, activation="tanh"), Fuse()]
        )
    model = kvae.VAE(**kwargs)
    model.compile(optimizer=optimizer, steps_per_execution=1)
    return model


def _state(path):
    with open(path) as f:
        return json.load(f)


# ----- bad data never reaches a step --------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data_is_refused_before_training(tmp_path, bad):
    x = X.copy()
    x[5, 3, 3, 0] = bad
    model = _model()
    with pytest.raises(DataError, match="1 NaN or infinite values"):
        model.fit(x, epochs=1, batch_size=BATCH, verbose=0, callbacks=training_callbacks(tmp_path))
    assert int(model.optimizer.iterations.numpy()) == 0 and not os.listdir(tmp_path)
    with pytest.raises(DataError, match="finite"):
        model.evaluate(x, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(BATCH)
    with pytest.raises(DataError, match="finite"):
        model.fit(dataset, epochs=1, verbose=0)


def test_out_of_range_data_for_bernoulli_is_refused():
    with pytest.raises(DataError, match=r"divide by 256"):
        _model().fit(X * 255, epochs=1, batch_size=BATCH, verbose=0)


# ----- a loss that goes bad during training ---------------------------------------------------
def test_nan_in_the_reconstruction_stops_with_term_and_step(tmp_path):
    model = _model("decoder")
    with pytest.raises(TrainingError) as info:
        model.fit(
            X,
            epochs=4,
            batch_size=BATCH,
            verbose=0,
            callbacks=[*training_callbacks(tmp_path, backup_seconds=0), BlowFuse(1)],
        )
    message = str(info.value)
    # The first step of epoch 2 is step 9 (8 steps per epoch, one step per compiled call).
    assert "epoch 2/4, training step 9 (batch 1 of the epoch)" in message
    assert "the reconstruction term (-log p(x|z)) went bad" in message
    assert "kl=" in message and "stayed finite" in message
    assert "learning rate too high" in message and "[0, 1]" in message  # usual causes
    checkpoint = tmp_path / "checkpoints" / "last.keras"
    assert str(checkpoint) in message and "after epoch 1, step 8" in message
    assert int(model.optimizer.iterations.numpy()) == 9  # stopped at once: no step after it
    _assert_last_good(tmp_path, epoch=1, step=8)


def test_nan_in_the_encoder_names_the_kl_term(tmp_path):
    model = _model("encoder")
    with pytest.raises(TrainingError, match=r"the KL term \(KL\(q\(z\|x\) \|\| p\(z\)\)\)") as info:
        model.fit(
            X,
            epochs=3,
            batch_size=BATCH,
            verbose=0,
            callbacks=[*training_callbacks(tmp_path), BlowFuse(2)],
        )
    assert "epoch 3/3, training step 17" in str(info.value)
    assert "posterior scale" in str(info.value)
    _assert_last_good(tmp_path, epoch=2, step=16)


def _assert_last_good(run_dir, epoch, step):
    """The checkpoint and the backup hold the last good state, and load."""
    state = _state(run_dir / "checkpoints" / "state.json")
    assert (state["epoch"], state["step"]) == (epoch, step)
    loaded = kvae.load_model(run_dir / "checkpoints" / "last.keras")
    assert all(np.all(np.isfinite(w)) for w in loaded.get_weights())
    assert loaded.evaluate(X, verbose=0, return_dict=True)["loss"] < np.inf
    backup = _state(run_dir / "backup" / "training_metadata.json")
    assert backup["step"] <= step
    assert not (run_dir / "history.csv").read_text().count("nan")


def test_a_learning_rate_far_too_high_stops_training(tmp_path):
    model = _model(optimizer=keras.optimizers.SGD(learning_rate=1e5))
    with pytest.raises(TrainingError, match="learning rate too high") as info:
        model.fit(X, epochs=5, batch_size=BATCH, verbose=0, callbacks=training_callbacks(tmp_path))
    assert "Training stopped at epoch 1/5" in str(info.value)
    assert not (tmp_path / "checkpoints").exists()  # nothing was saved from bad weights


def test_nan_through_the_command_line(tmp_path):
    """`kvae train` with a learning rate far too high: exit code 1, the message, no traceback."""
    from click.testing import CliRunner

    from kvae.cli import main

    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--dataset",
            "digits",
            "--max-train-examples",
            "256",
            "--max-test-examples",
            "64",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--optimizer",
            "sgd",
            "--learning-rate",
            "1e5",
            "--validation",
            "none",
            "--image-every",
            "0",
            "--no-projector",
            "--progress",
            "none",
            "--steps-per-execution",
            "1",
            "--run-dir",
            str(run),
        ],  # fmt: skip
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a traceback
    assert "Training stopped at epoch 1/3" in result.output
    assert "learning rate too high" in result.output
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed", info
    assert (
        info["reason"].startswith("Training stopped at epoch 1/3")
        and "learning rate" in info["reason"]
    )
    assert info["resume"] == f"kvae train --resume {run}"


# ----- on_nan="skip" ----------------------------------------------------------------------
def test_skip_needs_a_model_that_can_skip(tmp_path):
    """on_nan='skip' needs a training step that can drop a step (kvae.VAE's
    skip_nonfinite); with any other Keras model the callbacks refuse before training."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(ConfigError, match="on_nan='skip'"):
        model.fit(
            np.zeros((8, 3), "float32"),
            np.zeros((8, 1), "float32"),
            epochs=1,
            verbose=0,
            callbacks=training_callbacks(tmp_path, {"on_nan": "skip"}),
        )
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))


def test_skip_drops_bad_steps_then_gives_up(tmp_path):
    model = _model("decoder")
    with pytest.raises(TrainingError, match="were skipped") as info:
        model.fit(
            X,
            epochs=3,
            batch_size=8,  # 16 steps per epoch: more than the 10 skips it tolerates
            verbose=0,
            callbacks=[*training_callbacks(tmp_path, {"on_nan": "skip"}), BlowFuse(1)],
        )
    assert "on_nan='skip'" in str(info.value) and "epoch 2/3" in str(info.value)
    # Skipped steps applied no gradient: the weights stayed finite, and so did the metrics.
    assert all(np.all(np.isfinite(w)) for w in model.get_weights() if np.size(w) > 1)
    assert "nan" not in (tmp_path / "history.csv").read_text()


class RepairFuse(keras.callbacks.Callback):
    """In epoch ``epoch`` (0-based), after batch ``batch``, set every Fuse back to 1."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self._current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._current == self.epoch and batch == self.batch:
            for layer in _all_layers(self.model):
                if isinstance(layer, Fuse):
                    layer.fuse.assign(1.0)


def test_skip_recovers_and_the_run_finishes(tmp_path, capsys):
    """Epoch 2's first 3 steps (one step per call) see an infinite decoder: they are
    skipped (fewer than the 10 it tolerates), then the fuse is mended and training goes on
    to the end: exactly 3 steps skipped, finite metrics in every epoch, a checkpoint of the
    last epoch."""
    model = _model("decoder")
    history = model.fit(
        X,
        epochs=3,
        batch_size=8,  # 16 steps per epoch
        verbose=0,
        callbacks=[
            *training_callbacks(tmp_path, {"on_nan": "skip"}),
            BlowFuse(1),
            RepairFuse(1, 2),
        ],
    )
    assert history.epoch == [0, 1, 2]
    assert int(model.skipped_steps.result().numpy()) == 3
    assert "skipped 3 training step(s)" in capsys.readouterr().err
    assert all(np.isfinite(v) for values in history.history.values() for v in values)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    state = _state(tmp_path / "checkpoints" / "state.json")
    assert state["epoch"] == 3 and state["step"] == 3 * 16
    with open(tmp_path / "history.csv") as f:
        rows = f.read().split()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"] and "nan" not in f"{rows}"


class Snapshot(keras.callbacks.Callback):
    """Weights and optimizer state at the end of epoch ``epoch - 1`` and after batch
    ``batch`` of epoch ``epoch`` (0-based)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self._current, self.before, self.after = epoch, batch, 0, 0, 0

    def _take(self):
        variables = self.model.trainable_weights + self.model.optimizer.variables
        return [np.array(v) for v in variables]

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch - 1:
            self.before = self._take()

    def on_train_batch_end(self, batch, logs=None):
        if self._current == self.epoch and batch == self.batch:
            self.after = self._take()


def test_a_skipped_step_moves_nothing(tmp_path):
    """A skipped step must not be a zero-gradient step: with Adam that still moves every
    weight by its momentum. Three skipped steps leave the weights, Adam's moments and the
    iteration count exactly as they were after the last good step."""
    model = _model("decoder")
    snap = Snapshot(1, 2)
    model.fit(
        X,
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[
            *training_callbacks(tmp_path, {"on_nan": "skip"}),
            BlowFuse(1),
            snap,  # before RepairFuse: it sees batch 2 while the fuse is still blown
            RepairFuse(1, 2),
        ],
    )
    assert int(model.skipped_steps.result().numpy()) == 3
    assert len(snap.before) == len(snap.after) > 0
    for before, after in zip(snap.before, snap.after, strict=True):
        np.testing.assert_array_equal(before, after)
