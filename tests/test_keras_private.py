"""The Keras and TensorFlow internals kvae relies on (kvae/_keras_private.py), checked
against the installed release: each test fails with a message that names what Keras changed
and what in kvae depends on it."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kvae import _keras_private


# ----- run safety (kvae.checkpointing) ------------------------------------------------------
def _dense(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_backup_and_restore_restores_the_files_kvae_writes(tmp_path):
    """kvae writes the backup (atomically) and lets keras.callbacks.BackupAndRestore restore
    it: weights from BACKUP_WEIGHTS_FILE, the epoch from BACKUP_STATE_FILE's BACKUP_EPOCH_KEY
    (a state file with kvae's extra keys)."""
    saved = _dense(1)
    saved.save_weights(str(tmp_path / _keras_private.BACKUP_WEIGHTS_FILE))
    state = {_keras_private.BACKUP_EPOCH_KEY: 3, "format": "kvae-checkpoint", "step": 24}
    (tmp_path / _keras_private.BACKUP_STATE_FILE).write_text(json.dumps(state))
    found = {}

    class Look(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            found["weights"] = [w.numpy() for w in self.model.weights]

    what = "kvae's run-safety backup (kvae.checkpointing._Backup) is written for it to restore"
    where = "update the names in kvae/_keras_private.py, or restore the backup in kvae itself"
    model = _dense(2)
    restorer = keras.callbacks.BackupAndRestore(str(tmp_path), delete_checkpoint=False)
    x = np.ones((8, 4), "float32")
    try:
        history = model.fit(x, x[:, :2], epochs=5, verbose=0, callbacks=[restorer, Look()])
    except Exception as err:  # noqa: BLE001 - whatever Keras raises, say what it means
        pytest.fail(
            f"Keras changed keras.callbacks.BackupAndRestore: restoring a backup written as "
            f"{_keras_private.BACKUP_WEIGHTS_FILE!r} and {_keras_private.BACKUP_STATE_FILE!r} "
            f"(the epoch under {_keras_private.BACKUP_EPOCH_KEY!r}) raised "
            f"{type(err).__name__}: {err}. {what}: {where}."
        )
    assert history.epoch == [3, 4], (
        f"Keras changed keras.callbacks.BackupAndRestore: it no longer restores the epoch from "
        f"{_keras_private.BACKUP_STATE_FILE!r}'s {_keras_private.BACKUP_EPOCH_KEY!r} (the resumed "
        f"fit ran epochs {history.epoch}, not [3, 4]). {what}: {where}."
    )
    for got, want in zip(found["weights"], saved.weights, strict=True):
        assert np.array_equal(got, want.numpy()), (
            f"Keras changed keras.callbacks.BackupAndRestore: it no longer restores the weights "
            f"from {_keras_private.BACKUP_WEIGHTS_FILE!r}. {what}: {where}."
        )


# ----- the train function fit calls (kvae.training.fused) ----------------------------------
_FUSED = (
    "kvae relies on it for its fused XLA training loop (kvae/training/fused.py, installed by "
    "kvae._keras_private.set_iterator_train_function)"
)


class _ReadsItsOwnBatches(keras.Model):
    """A model whose train function takes ``steps_per_execution`` batches from the iterator
    itself and returns logs that count its calls, as kvae's fused loop does."""

    def __init__(self, calls):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.record = calls.append  # not the list: Keras would track a copy of it
        self.count = calls.__len__

    def call(self, x):
        return self.dense(x)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function

        def function(iterator):
            self.record(iterator)
            for _ in range(self.steps_per_execution):
                iterator.get_next()
            return {"calls": tf.constant(float(self.count()))}

        return _keras_private.set_iterator_train_function(self, function)


def test_fit_calls_the_train_function_with_its_iterator_once_per_call():
    calls, ends = [], []
    model = _ReadsItsOwnBatches(calls)
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    x = np.zeros((8, 3), np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(2).repeat()
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append((batch, float(logs["calls"])))
    )
    model.fit(data, epochs=2, steps_per_epoch=4, callbacks=[record], verbose=0, shuffle=False)
    assert len(calls) == 4, (
        f"Keras changed how often fit calls model.train_function: expected once per "
        f"steps_per_execution (2) steps, 4 calls for 2 epochs of 4 steps; got {len(calls)}. "
        f"{_FUSED}."
    )
    for iterator in calls:
        assert isinstance(iterator, tf.data.Iterator) and iterator.element_spec, (
            "Keras changed what fit passes to model.train_function: expected the epoch's "
            f"tf.data iterator (with element_spec and get_next); got {type(iterator)!r}. "
            f"{_FUSED}."
        )
    assert ends == [(1, 1.0), (3, 2.0), (1, 3.0), (3, 4.0)], (
        "Keras changed what fit does with the train function's result: expected its dict "
        f"as the logs of each call's last step; the callbacks saw {ends}. {_FUSED}."
    )


# ----- the layers inside a layer (kvae._compile_mode) --------------------------------------
class _Block(keras.layers.Layer):
    """A plain layer holding a list of layers and a model, as kvae's networks do."""

    def __init__(self):
        super().__init__()
        self.convs = [keras.layers.Conv2D(2, 3), keras.layers.Conv2D(2, 3)]
        self.inner = keras.Sequential([keras.layers.Dense(2)])


def test_nested_layers_reaches_layers_at_any_depth():
    block = _Block()
    outer = keras.Sequential([keras.layers.Flatten(), block])
    try:
        found = _keras_private.nested_layers(outer)
    except (AttributeError, TypeError) as err:
        pytest.fail(
            f"Keras changed Layer._flatten_layers(include_self, recursive) ({err}); kvae relies "
            "on it to find a convolution anywhere in a model for compile(jit_compile='auto') "
            "(kvae/_compile_mode.py)."
        )
    want = [block, *block.convs, block.inner, block.inner.layers[0], outer.layers[0]]
    missing = [layer.name for layer in want if not any(layer is f for f in found)]
    assert not missing and not any(f is outer for f in found), (
        f"Keras changed Layer._flatten_layers: expected every nested layer but not the layer "
        f"itself; missing {missing}, got {[f.name for f in found]}. kvae relies on it to find "
        "a convolution anywhere in a model for compile(jit_compile='auto') "
        "(kvae/_compile_mode.py)."
    )
