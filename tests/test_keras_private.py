"""The Keras and TensorFlow internals kvae relies on (kvae/_keras_private.py), checked
against the installed release: each test fails with a message that names what Keras changed
and what in kvae depends on it."""

import json

import keras
import numpy as np
import pytest

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
